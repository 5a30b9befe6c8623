"""Django settings, read from the environment only (see webapp.env and DESIGN.md).

Unset variables give the embedded default: SQLite and a filesystem Celery
broker under ``RUNWRIGHT_DATA_DIR``, live streams by polling the database.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from webapp.env import (
    database_from_url,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_path,
    env_proxy_ssl_header,
    env_str,
)
from webapp.production import EMBEDDED_SECRET_KEY, refuse_unsafe_production

BASE_DIR = Path(__file__).resolve().parent.parent
if "pytest" in sys.modules and not env_str("RUNWRIGHT_DATA_DIR"):
    # pytest-django reads these settings before any conftest runs: give each test
    # session its own data directory (test database, run dirs, broker folders) so
    # sessions never share state or write into ./data. Subprocesses inherit it.
    os.environ["RUNWRIGHT_DATA_DIR"] = tempfile.mkdtemp(prefix="runwright-test-")
DATA_DIR = env_path("RUNWRIGHT_DATA_DIR", BASE_DIR / "data")
RUNS_DIR = DATA_DIR / "runs"

# "production" (what docker-compose.yml sets) refuses unsafe settings at start-up, below;
# unset is the embedded default, which runs with no setup at all.
PRODUCTION = env_choice("RUNWRIGHT_ENV", ("embedded", "production"), "embedded") == "production"
DEBUG = env_bool("RUNWRIGHT_DEBUG", False)
SECRET_KEY = env_str("RUNWRIGHT_SECRET_KEY") or EMBEDDED_SECRET_KEY
# The embedded default answers to any name (a laptop's host name or address); production lists its own.
ALLOWED_HOSTS = env_list("RUNWRIGHT_ALLOWED_HOSTS", "" if PRODUCTION else "*")
CSRF_TRUSTED_ORIGINS = env_list("RUNWRIGHT_CSRF_TRUSTED_ORIGINS")

# --- HTTPS and browser protections ------------------------------------------
# Production serves over HTTPS (a TLS proxy in front of uvicorn), so cookies never travel in clear.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("RUNWRIGHT_SECURE_COOKIES", PRODUCTION)
# Behind a TLS proxy: the header it sets to say the client spoke HTTPS (X-Forwarded-Proto).
# The proxy must overwrite a client's own copy of that header.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("RUNWRIGHT_SECURE_PROXY_SSL_HEADER")
SECURE_SSL_REDIRECT = env_bool("RUNWRIGHT_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("RUNWRIGHT_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0)
# includeSubDomains covers only names under the dashboard's own host, and preload has no
# effect until an operator submits the domain to the browsers' list.
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    refuse_unsafe_production(
        secret_key=SECRET_KEY,
        allowed_hosts=ALLOWED_HOSTS,
        debug=DEBUG,
        secure_cookies=SESSION_COOKIE_SECURE,
    )

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "webapp.accounts",
    "webapp.audit",
    "webapp.projects",
    "webapp.runs",
    "webapp.metrics",
    "webapp.api",
    "webapp.evals",
    "webapp.demo",
    "webapp.annotations",
    "webapp.alerts",
    "webapp.home",
    "webapp.fleet",
    "webapp.sweeps",
    "webapp.samples",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the body (CSRF reads POST): an oversized one is a 413 unread.
    "webapp.body_limit.BodyLimitMiddleware",
    "webapp.query_text.QueryTextMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env_str("RUNWRIGHT_DATABASE_URL"), DATA_DIR / "runwright.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes throttles password guessing: it must see every authenticate() first. API
# tokens do not go through authenticate() (webapp/api/auth.py), so they are unaffected.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("RUNWRIGHT_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("RUNWRIGHT_LOGIN_COOLOFF_MINUTES", 15))
# Username and address together: a guesser is stopped without letting anyone lock a
# colleague out from elsewhere. The address is the client's as uvicorn reports it
# (FORWARDED_ALLOW_IPS tells it which proxy's X-Forwarded-For to trust).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "webapp.accounts.lockout.locked_out"
AXES_ENABLE_ADMIN = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "projects:list"
LOGOUT_REDIRECT_URL = "login"
# Self-service sign-up: only through a team admin's invite link unless the operator opens it.
OPEN_SIGNUP = env_bool("RUNWRIGHT_OPEN_SIGNUP", False)
# Alert webhooks may go to loopback/private/link-local addresses only when the operator says so
# (a receiver on the same network); otherwise public addresses only (webapp.alerts.egress).
WEBHOOK_ALLOW_PRIVATE = env_bool("RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE", False)
# A PEM file of certificate authorities an HTTPS webhook receiver may also be signed by (an
# internal CA, or a receiver's own self-signed certificate), trusted beside the system's; the
# certificate and its host name are verified either way. Read by the worker when it sends.
WEBHOOK_CA_BUNDLE = env_str("RUNWRIGHT_WEBHOOK_CA_BUNDLE")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
# Only for `collectstatic` in deployments that serve files from a web server;
# otherwise WhiteNoise serves straight from the finders.
STATIC_ROOT = env_str("RUNWRIGHT_STATIC_ROOT") or None
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the finders so the embedded default needs no collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- services -------------------------------------------------------------
REDIS_URL = env_str("RUNWRIGHT_REDIS_URL")
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = env_str("RUNWRIGHT_BROKER_URL") or REDIS_URL or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Exchange bindings; kombu's default is ./control in the working directory.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's filesystem transport expects its folders to exist.
    for folder in ("queue", "processed", "control"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# How often the supervisor refreshes a run's heartbeat, and after how long
# without one the periodic sweep marks the run lost.
HEARTBEAT_SECONDS = env_int("RUNWRIGHT_HEARTBEAT_SECONDS", 5)
LOST_AFTER_SECONDS = env_int("RUNWRIGHT_LOST_AFTER_SECONDS", 60)
# Queued runs and eval jobs older than this are re-sent to the broker by beat (a lost
# message must not leave them queued forever; claiming is idempotent).
REQUEUE_AFTER_SECONDS = env_int("RUNWRIGHT_REQUEUE_AFTER_SECONDS", 180)

# The fleet (webapp.fleet, workers.fleet, workers.scheduler): workers register their host and
# beat; launches go through the scheduler, which sends each run to the queue of the host it chose.
FLEET_ENABLED = env_bool("RUNWRIGHT_FLEET", False)
FLEET_HEARTBEAT_SECONDS = env_int("RUNWRIGHT_FLEET_HEARTBEAT_SECONDS", 15)
# A host silent for this long takes no new runs; runs placed there but not started go elsewhere.
FLEET_HOST_LOST_SECONDS = env_int("RUNWRIGHT_FLEET_HOST_LOST_SECONDS", 60)
# The queue the scheduler's task goes to (empty: the default queue).
SCHEDULER_QUEUE = env_str("RUNWRIGHT_SCHEDULER_QUEUE")

# How this worker pool starts a run: "local" (subprocesses on this host) or "slurm" (an sbatch
# job per attempt, workers.slurm; run dirs on the cluster's shared filesystem). The SLURM_*
# values are the operator's defaults for a run's empty launcher.* fields.
LAUNCHER = env_choice("RUNWRIGHT_LAUNCHER", ("local", "slurm"), "local")
SLURM_PARTITION = env_str("RUNWRIGHT_SLURM_PARTITION")
SLURM_ACCOUNT = env_str("RUNWRIGHT_SLURM_ACCOUNT")
SLURM_QOS = env_str("RUNWRIGHT_SLURM_QOS")
SLURM_TIME_LIMIT_MIN = env_int("RUNWRIGHT_SLURM_TIME_LIMIT_MIN", 0)  # 0: the partition's own
# torchrun's c10d store on the first node; 0: a port free there when the job starts (jobs that
# share a node never meet at one store).
SLURM_RDZV_PORT = env_int("RUNWRIGHT_SLURM_RDZV_PORT", 0)

# --- limits on what one user may submit -------------------------------------
# Dataset roots an operator exposes to run configs submitted through the web/API.
DATASET_DIRS = [Path(p).expanduser() for p in env_str("RUNWRIGHT_DATASET_DIRS").split(os.pathsep) if p] or [
    DATA_DIR / "datasets"
]
# Hugging Face model folders a config or eval job may start from.
MODELS_DIR = DATA_DIR / "models"
# CPU ranks one run may ask for on a worker with no GPU (a run asking for more is a 400).
MAX_CPU_PROCESSES = env_int("RUNWRIGHT_MAX_CPU_PROCESSES", os.cpu_count() or 1)
# Request bodies over this size are refused before they are read whole (uploads have their own limits).
MAX_BODY_MB = env_int("RUNWRIGHT_MAX_BODY_MB", 64)
# Django's own check on request.body agrees with the middleware's (file parts of uploads are not counted).
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_MB * 1024 * 1024
# An uploaded task folder's first documents are rendered in a child process with these limits,
# so an endless or huge template is refused at upload instead of hanging a worker.
EVAL_TASK_PREVIEW_SECONDS = env_int("RUNWRIGHT_EVAL_TASK_PREVIEW_SECONDS", 30)
EVAL_TASK_PREVIEW_MEMORY_MB = env_int("RUNWRIGHT_EVAL_TASK_PREVIEW_MEMORY_MB", 2048)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("RUNWRIGHT_LOG_LEVEL", "INFO")},
}
