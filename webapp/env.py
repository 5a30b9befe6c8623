"""Typed readers for the environment: the only place settings come from.

A bad value raises ``ImproperlyConfigured`` naming the variable and what it
accepts, so a typo in a deployment fails at start-up, not at the first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_int(name: str, default: int) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name).lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no), got {raw!r}")


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env_str(name).lower()
    if not raw:
        return default
    if raw not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated list, blanks dropped: ``a.example.com, b.example.com``."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """Django's ``SECURE_PROXY_SSL_HEADER`` from ``Header-Name`` or ``Header-Name=value`` (value: https).

    ``X-Forwarded-Proto`` becomes ``("HTTP_X_FORWARDED_PROTO", "https")``: a request is
    taken as HTTPS when the TLS proxy in front says so.
    """
    raw = env_str(name)
    if not raw:
        return None
    header, _, value = raw.partition("=")
    header, value = header.strip(), value.strip() or "https"
    if not header or not all(c.isalnum() or c in "-_" for c in header):
        raise ImproperlyConfigured(
            f"{name} must be a header name such as X-Forwarded-Proto (optionally =https), got {raw!r}"
        )
    return "HTTP_" + header.upper().replace("-", "_"), value


def env_path(name: str, default: Path) -> Path:
    raw = env_str(name)
    return Path(raw).expanduser().resolve() if raw else default.resolve()


def database_from_url(url: str, sqlite_default: Path) -> dict:
    """Django DATABASES["default"] from ``postgresql://user:pass@host:port/name`` or ``sqlite:///path``."""
    if not url:
        return _sqlite(sqlite_default)
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        name = parts.path.lstrip("/")
        if not name:
            raise ImproperlyConfigured("RUNWRIGHT_DATABASE_URL needs a database name: postgresql://host/NAME")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(name),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        return _sqlite(Path(parts.path))
    raise ImproperlyConfigured(
        f"RUNWRIGHT_DATABASE_URL must start with postgresql:// or sqlite:///, got {parts.scheme!r}"
    )


def _sqlite(path: Path) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # The web server, worker and beat write concurrently: WAL lets readers
        # proceed during a write, IMMEDIATE avoids lock-upgrade deadlocks.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not :memory:, so that worker subprocesses in tests see the test database.
        "TEST": {"NAME": str(path.with_name(path.stem + "-test.sqlite3"))},
    }
