"""The web process never loads torch: the evals app reads tasks and results without the engine's scorer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_evals_web_modules_do_not_import_torch():
    code = (
        "import django, sys; django.setup();"
        "import webapp.evals.views, webapp.evals.exports, webapp.evals.templatetags.evals, workers.eval_jobs;"
        "from webapp.evals.sources import available_tasks; available_tasks(1);"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
