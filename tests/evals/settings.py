"""The project's settings plus the evals app, until the lead wires it into webapp/settings.py.

Run this suite with ``--ds tests.evals.settings``; a Celery worker started by a
test gets the same module through DJANGO_SETTINGS_MODULE.
"""

import os
import tempfile

# pytest-django reads this module before tests/conftest.py runs: give the suite its own data directory.
os.environ.setdefault("RUNWRIGHT_DATA_DIR", tempfile.mkdtemp(prefix="runwright-evals-test-"))

from webapp.settings import *  # noqa: E402, F403

if "webapp.evals" not in INSTALLED_APPS:  # noqa: F405
    INSTALLED_APPS = [*INSTALLED_APPS, "webapp.evals"]  # noqa: F405
ROOT_URLCONF = "tests.evals.urls"
# Small, fast evaluator runs in tests.
EVAL_BOOTSTRAP_ITERS = 100
# Creating Alice, Bob and Charlie for every test should not cost seconds of PBKDF2.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
