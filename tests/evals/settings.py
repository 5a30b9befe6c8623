"""The project's settings plus the evals app, until the lead wires it into webapp/settings.py.

Run this suite with ``--ds tests.evals.settings``; a Celery worker started by a
test gets the same module through DJANGO_SETTINGS_MODULE.
"""

from webapp.settings import *  # noqa: F403

if "webapp.evals" not in INSTALLED_APPS:  # noqa: F405
    INSTALLED_APPS = [*INSTALLED_APPS, "webapp.evals"]  # noqa: F405
ROOT_URLCONF = "tests.evals.urls"
# Small, fast evaluator runs in tests.
EVAL_BOOTSTRAP_ITERS = 100
