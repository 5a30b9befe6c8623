"""RUNWRIGHT_ENV=production refuses unsafe settings; the compose deployment keeps its secrets in .env.

The settings are read once per process, so each case runs ``manage.py`` in a subprocess
with exactly the environment an operator would give it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_choice, env_list, env_proxy_ssl_header
from webapp.production import EMBEDDED_SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("web", "worker", "beat")


def _manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``manage.py ARGS`` with only the given RUNWRIGHT_* variables (none inherited from this session)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWRIGHT_", "DJANGO_SETTINGS"))}
    clean.update(RUNWRIGHT_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _production(**overrides: str) -> dict[str, str]:
    """A correct production environment, as docker-compose.yml and a filled-in .env give it."""
    env = {
        "RUNWRIGHT_ENV": "production",
        "RUNWRIGHT_SECRET_KEY": secrets.token_urlsafe(50),
        "RUNWRIGHT_ALLOWED_HOSTS": "runwright.example.com",
        "RUNWRIGHT_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_check_deploy_is_clean_in_a_correct_production_environment(tmp_path):
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **_production())
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


def test_the_embedded_default_needs_no_setup(tmp_path):
    result = _manage(tmp_path, "check")
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({"RUNWRIGHT_SECRET_KEY": ""}, "RUNWRIGHT_SECRET_KEY is not set"),
        ({"RUNWRIGHT_SECRET_KEY": EMBEDDED_SECRET_KEY}, "RUNWRIGHT_SECRET_KEY is not set"),
        ({"RUNWRIGHT_SECRET_KEY": "s3cr3t-but-short"}, "RUNWRIGHT_SECRET_KEY is too weak"),
        ({"RUNWRIGHT_SECRET_KEY": "ab" * 40}, "RUNWRIGHT_SECRET_KEY is too weak"),
        ({"RUNWRIGHT_SECRET_KEY": "change-me-" + "x7Q" * 20}, "RUNWRIGHT_SECRET_KEY is still a placeholder"),
        ({"RUNWRIGHT_ALLOWED_HOSTS": "*"}, "RUNWRIGHT_ALLOWED_HOSTS must list"),
        ({"RUNWRIGHT_ALLOWED_HOSTS": "runwright.example.com,*"}, "RUNWRIGHT_ALLOWED_HOSTS must list"),
        ({"RUNWRIGHT_ALLOWED_HOSTS": ""}, "RUNWRIGHT_ALLOWED_HOSTS must list"),
        ({"RUNWRIGHT_SECURE_COOKIES": "false"}, "RUNWRIGHT_SECURE_COOKIES is off"),
        ({"RUNWRIGHT_DEBUG": "true"}, "RUNWRIGHT_DEBUG is on"),
        ({"RUNWRIGHT_ENV": "prod"}, "RUNWRIGHT_ENV must be one of embedded, production"),
        (
            {"RUNWRIGHT_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"},
            "RUNWRIGHT_SECURE_PROXY_SSL_HEADER",
        ),
    ],
)
def test_production_refuses_to_start_with_unsafe_settings(tmp_path, overrides, says):
    result = _manage(tmp_path, "check", **_production(**overrides))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and says in result.stderr, result.stderr[-2000:]


def test_every_problem_is_reported_at_once(tmp_path):
    env = _production(RUNWRIGHT_SECRET_KEY="", RUNWRIGHT_ALLOWED_HOSTS="*", RUNWRIGHT_SECURE_COOKIES="0")
    result = _manage(tmp_path, "check", **env)
    assert result.returncode != 0
    for variable in ("RUNWRIGHT_SECRET_KEY", "RUNWRIGHT_ALLOWED_HOSTS", "RUNWRIGHT_SECURE_COOKIES"):
        assert f"- {variable}" in result.stderr


PROBE = """
import json
from django.test import Client
c = Client()
plain = c.get("/login/", HTTP_HOST="runwright.example.com")
proxied = c.get("/login/", HTTP_HOST="runwright.example.com", HTTP_X_FORWARDED_PROTO="https")
cookie = proxied.cookies.get("csrftoken")
print(json.dumps({
    "plain": [plain.status_code, plain.headers.get("Location", "")],
    "proxied": proxied.status_code,
    "headers": {k: proxied.headers.get(k, "") for k in
                ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")},
    "csrf_cookie_secure": bool(cookie and cookie["secure"]),
}))
"""


def test_production_pages_are_https_only_behind_the_proxy(tmp_path):
    result = _manage(tmp_path, "shell", "-c", PROBE, **_production())
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Plain HTTP is sent to HTTPS; what the TLS proxy vouches for is served, with HSTS and friends.
    assert seen["plain"] == [301, "https://runwright.example.com/login/"]
    assert seen["proxied"] == 200
    assert seen["headers"]["Strict-Transport-Security"].startswith("max-age=31536000")
    assert seen["headers"]["X-Content-Type-Options"] == "nosniff"
    assert seen["headers"]["X-Frame-Options"] == "DENY"
    assert seen["headers"]["Referrer-Policy"] == "same-origin"
    assert seen["csrf_cookie_secure"] is True


def test_env_helpers_parse_the_security_variables(monkeypatch):
    monkeypatch.setenv("RW_TEST_HEADER", "X-Forwarded-Proto")
    assert env_proxy_ssl_header("RW_TEST_HEADER") == ("HTTP_X_FORWARDED_PROTO", "https")
    monkeypatch.setenv("RW_TEST_HEADER", "X-Scheme=on")
    assert env_proxy_ssl_header("RW_TEST_HEADER") == ("HTTP_X_SCHEME", "on")
    monkeypatch.setenv("RW_TEST_HEADER", "bad header")
    with pytest.raises(ImproperlyConfigured, match="RW_TEST_HEADER must be a header name"):
        env_proxy_ssl_header("RW_TEST_HEADER")
    monkeypatch.setenv("RW_TEST_LIST", " a.example.com, ,b.example.com ")
    assert env_list("RW_TEST_LIST") == ["a.example.com", "b.example.com"]
    monkeypatch.setenv("RW_TEST_CHOICE", "Production")
    assert env_choice("RW_TEST_CHOICE", ("embedded", "production"), "embedded") == "production"


# --- the compose deployment ----------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _filled_env_file() -> str:
    """.env.example with every empty value filled the way its comments say."""
    values = {
        "RUNWRIGHT_SECRET_KEY": secrets.token_urlsafe(50),
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "REDIS_PASSWORD": secrets.token_hex(24),
    }
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and line == f"{name}=" else line)
    return "\n".join(lines) + "\n"


def test_compose_file_holds_no_secret_and_reads_them_from_env_file():
    compose = _compose()
    text = (ROOT / "docker-compose.yml").read_text()
    assert "RUNWRIGHT_SECRET_KEY" not in text  # comes only from .env
    # Credentials inside URLs are references, never literals.
    for user_info in re.findall(r"://([^/@\s]*)@", text):
        assert ":" not in user_info or user_info.split(":", 1)[1].startswith("${"), user_info
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_AUTH", key):
                assert str(value).startswith("${"), f"{name}: {key} is written in the compose file"
    for name in APP_SERVICES:
        service = compose["services"][name]
        env_file = service["env_file"]
        assert ".env" in ([env_file] if isinstance(env_file, str) else env_file), name
        assert service["environment"]["RUNWRIGHT_ENV"] == "production", name
        assert service.get("user") not in ("root", "0", "0:0"), name


def test_every_variable_the_compose_file_requires_is_in_env_example():
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = _env_example()
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD"} <= required
    assert required | {"RUNWRIGHT_SECRET_KEY", "RUNWRIGHT_ALLOWED_HOSTS"} <= set(example)
    # Placeholders stay empty, so nobody ships a password copied from the example.
    for name in required | {"RUNWRIGHT_SECRET_KEY"}:
        assert example[name] == "", name
    assert "*" not in example["RUNWRIGHT_ALLOWED_HOSTS"]
    for ignore_file in (".gitignore", ".dockerignore"):
        entries = {line.strip().lstrip("/") for line in (ROOT / ignore_file).read_text().splitlines()}
        assert ".env" in entries, ignore_file


def test_containers_run_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
    # The data directory belongs to that user before the volume is mounted on it.
    assert re.search(rf"chown {users[-1]}(:\S+)? /data", dockerfile)
    assert dockerfile.index("chown") < dockerfile.index("VOLUME")


def test_redis_keeps_its_data():
    redis = _compose()["services"]["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file_only_once_env_is_filled_in(tmp_path):
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWRIGHT_", "POSTGRES_", "REDIS_"))}

    def config(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker-compose", "config", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    unfilled = config("--quiet")
    assert unfilled.returncode != 0 and "PASSWORD in .env" in unfilled.stderr

    (tmp_path / ".env").write_text(_filled_env_file())
    filled = config()
    assert filled.returncode == 0, filled.stderr
    web = yaml.safe_load(filled.stdout)["services"]["web"]
    assert web["environment"]["RUNWRIGHT_ENV"] == "production"
    assert len(web["environment"]["RUNWRIGHT_SECRET_KEY"]) >= 50


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_the_web_container_environment_passes_check_deploy(tmp_path):
    """What compose hands the web container, from a filled-in .env.example, is a clean production setup."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text(_filled_env_file())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWRIGHT_", "POSTGRES_", "REDIS_"))}
    rendered = subprocess.run(
        ["docker-compose", "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    web_env = {
        k: str(v) for k, v in yaml.safe_load(rendered.stdout)["services"]["web"]["environment"].items()
    }
    web_env.pop("RUNWRIGHT_DATA_DIR")  # /data is the container's; _manage gives a temporary one
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **web_env)
    assert result.returncode == 0, result.stderr + result.stdout
