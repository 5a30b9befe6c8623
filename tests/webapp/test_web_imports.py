"""The web process must never load torch (DESIGN.md): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys, django
django.setup()
import webapp.asgi, webapp.urls, webapp.api.views, webapp.runs.views, webapp.runs.stream, webapp.projects.views
from django.urls import get_resolver
get_resolver().url_patterns  # imports every view module the URLconf names
heavy = sorted(m for m in ("torch", "accelerate", "transformers") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def test_web_modules_do_not_import_torch(tmp_path):
    env = {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "RUNWRIGHT_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.strip() == "HEAVY:", out
