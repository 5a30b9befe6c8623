"""HTTPS alert webhooks against a real TLS receiver on loopback, with a self-signed certificate
made for the test by the ``openssl`` command.

Verification is always on: the receiver's self-signed certificate is refused, and the firing
says why and what to set; named in the operator's RUNWRIGHT_WEBHOOK_CA_BUNDLE it is trusted,
its host name still checked. The receiver's name resolves (through egress's resolver) to
127.0.0.1, allowed by RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE as a receiver on the operator's network.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.exceptions import Retry

from webapp.alerts import egress
from webapp.alerts.models import AlertFiring, AlertKind, AlertRule
from webapp.runs.models import RunStatus
from workers.alerts import notify_alert

HOST = "hooks.internal.test"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """(cert.pem, key.pem): self-signed, for HOST only."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={HOST}"]
        + ["-addext", f"subjectAltName=DNS:{HOST}"],
        check=True,
        capture_output=True,
    )
    return cert, key


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        Receiver.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a client that refused our certificate ends its handshake: expected here


@pytest.fixture
def tls_port(certificate, monkeypatch, settings) -> Iterator[int]:
    cert, key = certificate
    Receiver.bodies = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = QuietServer(("127.0.0.1", 0), Receiver)
    # Handshakes happen in each request's thread (a refused client must not stall the server).
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real = socket.getaddrinfo

    def internal_dns(host, port, *args, **kwargs):
        if host != HOST:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(egress, "getaddrinfo", internal_dns)
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_CA_BUNDLE = ""
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def firing_to(project, make_run, url: str) -> AlertFiring:
    rule = AlertRule.objects.create(project=project, kind=AlertKind.FAILED, webhook_url=url)
    return AlertFiring.objects.create(
        rule=rule, run=make_run(status=RunStatus.FAILED), message="the run failed"
    )


def test_a_self_signed_receiver_is_refused_and_the_firing_says_what_to_set(project, make_run, tls_port):
    firing = firing_to(project, make_run, f"https://{HOST}:{tls_port}/hook")
    with pytest.raises(Retry):  # the task's body, run here: a worker would try again later
        notify_alert(firing.id)
    firing.refresh_from_db()
    assert firing.notified_at is None and Receiver.bodies == []
    assert f"the TLS certificate of {HOST} is not trusted" in firing.notify_error
    assert "self-signed" in firing.notify_error or "self signed" in firing.notify_error
    assert "RUNWRIGHT_WEBHOOK_CA_BUNDLE" in firing.notify_error


def test_the_operators_ca_bundle_lets_it_in(project, make_run, tls_port, certificate, settings):
    settings.WEBHOOK_CA_BUNDLE = str(certificate[0])
    firing = firing_to(project, make_run, f"https://{HOST}:{tls_port}/hook")
    notify_alert(firing.id)
    firing.refresh_from_db()
    assert firing.notified_at is not None and firing.notify_error == ""
    [body] = Receiver.bodies
    assert "the run failed" in json.loads(body)["text"]


def test_with_the_bundle_the_host_name_is_still_checked(tls_port, certificate, settings):
    settings.WEBHOOK_CA_BUNDLE = str(certificate[0])
    # The same receiver by its address: the certificate names HOST only.
    with pytest.raises(egress.WebhookFailed, match="not trusted.*(mismatch|match)"):
        egress.post_json(f"https://127.0.0.1:{tls_port}/hook", b"{}")
    assert Receiver.bodies == []


def test_a_bundle_that_cannot_be_read_is_a_clear_failure(tls_port, tmp_path, settings):
    settings.WEBHOOK_CA_BUNDLE = str(tmp_path / "missing.pem")
    with pytest.raises(
        egress.WebhookFailed, match=r"RUNWRIGHT_WEBHOOK_CA_BUNDLE \(.*missing.pem\) could not be loaded"
    ):
        egress.post_json(f"https://{HOST}:{tls_port}/hook", b"{}")
