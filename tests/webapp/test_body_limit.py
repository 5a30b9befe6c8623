"""Bodies over RUNWRIGHT_MAX_BODY_MB are a 413 before they are read, declared or streamed."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from django.conf import settings as django_settings
from django.core.asgi import get_asgi_application
from django.test import RequestFactory

from webapp.body_limit import BodyLimitASGI, BodyLimitMiddleware
from webapp.projects.models import Project

MB = 1024 * 1024


@pytest.fixture
def one_mb_limit(settings):
    settings.MAX_BODY_MB = 1
    return settings


class Unreadable(io.RawIOBase):
    """A request stream that fails the test if anything reads it."""

    def read(self, *args):  # noqa: ARG002
        raise AssertionError("the body was read")

    readline = readinto = read


def test_django_upload_limit_agrees_with_body_limit():
    assert django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE == django_settings.MAX_BODY_MB * MB
    assert "webapp.body_limit.BodyLimitMiddleware" in django_settings.MIDDLEWARE
    # Before CSRF, which reads request.POST.
    order = django_settings.MIDDLEWARE
    assert order.index("webapp.body_limit.BodyLimitMiddleware") < order.index(
        "django.middleware.csrf.CsrfViewMiddleware"
    )


def test_declared_length_over_limit_is_413_without_reading(one_mb_limit):
    request = RequestFactory().post("/api/v1/projects", b"{}", content_type="application/json")
    request.META["CONTENT_LENGTH"] = str(2 * MB)
    request._stream = Unreadable()
    response = BodyLimitMiddleware(lambda r: pytest.fail("the view ran"))(request)
    assert response.status_code == 413
    assert "RUNWRIGHT_MAX_BODY_MB" in json.loads(response.content)["errors"]["body"]


def test_api_body_over_limit_is_413_and_nothing_created(api, alice, team, one_mb_limit):
    body = json.dumps({"name": "big", "description": "x" * (2 * MB)}).encode()
    response = api(alice, "POST", "/api/v1/projects", raw=body)
    assert response.status_code == 413
    assert "larger than 1 MB" in response.json()["errors"]["body"]
    assert not Project.objects.exists()
    # Just under the limit is read and handled as usual.
    small = json.dumps({"name": "small", "description": "x" * (MB // 2)}).encode()
    assert api(alice, "POST", "/api/v1/projects", raw=small).status_code == 201


def test_web_form_over_limit_is_413_page(client_for, alice, one_mb_limit):
    response = client_for(alice).post("/projects/", {"name": "big", "description": "x" * (2 * MB)})
    assert response.status_code == 413
    assert b"Request too large" in response.content and b"Traceback" not in response.content
    assert not Project.objects.exists()


@pytest.mark.parametrize("length", ["abc", "-5", "١٢", "1" * 40])
def test_content_length_that_is_not_a_number_is_400(length):
    request = RequestFactory().post("/api/v1/projects", b"{}", content_type="application/json")
    request.META["CONTENT_LENGTH"] = length
    response = BodyLimitMiddleware(lambda r: pytest.fail("the view ran"))(request)
    assert response.status_code == 400
    assert "Content-Length" in json.loads(response.content)["errors"]["body"]


# --- the ASGI wrapper: chunked bodies declare no length -------------------------------


def _call_asgi(path: str, chunks, headers=()) -> tuple[list[dict], int]:
    """Drive the wrapped ASGI app; returns the messages it sent and how many chunks it read."""
    sent: list[dict] = []
    read = 0

    async def receive():
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        await asyncio.sleep(3600)  # a client that has sent everything waits for the answer

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    app = BodyLimitASGI(get_asgi_application())
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    return sent, read


def test_streamed_body_is_cut_off_at_the_limit(one_mb_limit):
    chunk = b"x" * (256 * 1024)
    sent, read = _call_asgi("/api/v1/projects", [chunk] * 400)  # 100 MB if it were all read
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert read == 5  # 1 MB is four chunks: the fifth passes the limit, and reading stops there
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert "larger than 1 MB" in body["errors"]["body"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_declared_length_is_refused_before_the_first_chunk(one_mb_limit):
    sent, read = _call_asgi("/runs/1/cancel", [b"x"], headers=[(b"content-length", str(5 * MB).encode())])
    assert sent[0]["status"] == 413 and read == 0
    assert b"Request too large" in sent[1]["body"]


def test_streamed_body_under_the_limit_reaches_django(one_mb_limit):
    # No token: Django's API answers 401, which shows the body went through whole.
    sent, read = _call_asgi("/api/v1/projects", [b'{"name":', b' "x"}'])
    assert read == 2
    assert sent[0]["status"] == 401
