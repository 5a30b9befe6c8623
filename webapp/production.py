"""What a production deployment refuses to run with, checked once as the settings load.

With ``RUNWRIGHT_ENV=production`` (what docker-compose.yml sets) the web server, the
workers and beat all import the settings, so each of them refuses to start rather than
serve a team with a guessable secret key (sessions and password-reset links could be
forged), any Host header, or session cookies sent over plain HTTP. Every problem is
reported at once, each with the variable to set and how.
"""

from __future__ import annotations

from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

# The key of the embedded default: public (it is in this file), so never good for production.
EMBEDDED_SECRET_KEY = "runwright-embedded-insecure-key-set-RUNWRIGHT_SECRET_KEY"
MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
# Text people copy from examples and forget to replace.
_PLACEHOLDERS = ("change-me", "changeme", "replace-me", "placeholder", "your-secret")


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` is unfit for production, or None. The thresholds are Django's own (check W009)."""
    fix = f"generate one with `{MAKE_A_KEY}` and put it in .env"
    if not key or key == EMBEDDED_SECRET_KEY:
        return f"RUNWRIGHT_SECRET_KEY is not set (the embedded key is public): {fix}"
    if any(p in key.lower() for p in _PLACEHOLDERS) or key.startswith(SECRET_KEY_INSECURE_PREFIX):
        return f"RUNWRIGHT_SECRET_KEY is still a placeholder: {fix}"
    if len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        return (
            f"RUNWRIGHT_SECRET_KEY is too weak ({len(key)} characters, {len(set(key))} distinct; "
            f"at least {SECRET_KEY_MIN_LENGTH} and {SECRET_KEY_MIN_UNIQUE_CHARACTERS} needed): {fix}"
        )
    return None


def production_problems(
    *, secret_key: str, allowed_hosts: list[str], debug: bool, secure_cookies: bool
) -> list[str]:
    """Each reason the given settings are unsafe for a shared server, naming the variable and the fix."""
    problems = []
    key_problem = secret_key_problem(secret_key)
    if key_problem:
        problems.append(key_problem)
    if not allowed_hosts or "*" in allowed_hosts:
        problems.append(
            "RUNWRIGHT_ALLOWED_HOSTS must list the host names the server answers to "
            "(e.g. runwright.example.com), not '*' or nothing: any Host header would be trusted "
            "in links and redirects"
        )
    if debug:
        problems.append("RUNWRIGHT_DEBUG is on: debug pages show settings and tracebacks to anyone; unset it")
    if not secure_cookies:
        problems.append(
            "RUNWRIGHT_SECURE_COOKIES is off: session and CSRF cookies would travel over plain HTTP; "
            "serve Runwright over HTTPS (a TLS proxy in front) and unset it"
        )
    return problems


def refuse_unsafe_production(
    *, secret_key: str, allowed_hosts: list[str], debug: bool, secure_cookies: bool
) -> None:
    """Raise ``ImproperlyConfigured`` listing every problem, or return when there is none."""
    problems = production_problems(
        secret_key=secret_key, allowed_hosts=allowed_hosts, debug=debug, secure_cookies=secure_cookies
    )
    if problems:
        raise ImproperlyConfigured(
            "RUNWRIGHT_ENV=production refuses to start:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\n(.env.example lists every variable; unset RUNWRIGHT_ENV for the embedded default.)"
        )
