"""Alert webhooks go to public addresses only: refused when saved and again, after resolving the
name, when sent (connecting to the address checked, so DNS rebinding cannot move it); no
redirects; the operator's RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE=1 lets a receiver on the network in.
Receivers are real HTTP servers on loopback."""

from __future__ import annotations

import http.server
import ipaddress
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from webapp.alerts import egress
from webapp.alerts.models import AlertFiring, AlertKind, AlertRule
from webapp.alerts.services import clean_webhook_url, create_rule
from webapp.input_errors import InputError
from webapp.runs.models import RunStatus
from workers.alerts import notify_alert

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.8.9.10:6379/", "loopback"),
    ("http://[::1]:5432/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://localhost:6379/", "loopback"),  # a name, resolved by the system's resolver
    ("http://2130706433/", "loopback"),  # 127.0.0.1 written as one number
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.9/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.251/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://100.64.0.1/", "not a public address"),  # carrier-grade NAT
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_each_refused_address_class_is_a_field_error_when_saved(url, reason):
    with pytest.raises(InputError) as caught:
        clean_webhook_url(url)
    assert reason in caught.value.errors["webhook_url"]
    assert "RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE" in caught.value.errors["webhook_url"]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_each_refused_address_class_is_refused_again_when_sent(url, reason):
    with pytest.raises(egress.WebhookRefused, match=reason):
        egress.post_json(url, b"{}")


def test_public_addresses_pass_and_the_operator_may_allow_private_ones(settings):
    assert clean_webhook_url("https://93.184.216.34/hooks/x") == "https://93.184.216.34/hooks/x"
    assert clean_webhook_url("https://[2606:4700::1111]/x") == "https://[2606:4700::1111]/x"
    assert egress.address_refusal(ipaddress.ip_address("8.8.8.8")) is None
    settings.WEBHOOK_ALLOW_PRIVATE = True
    assert clean_webhook_url("http://127.0.0.1:9000/hook") == "http://127.0.0.1:9000/hook"
    assert clean_webhook_url("http://169.254.169.254/") == "http://169.254.169.254/"


def test_the_setting_is_read_from_the_environment():
    code = "import django; django.setup(); from django.conf import settings; print(settings.WEBHOOK_ALLOW_PRIVATE)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings"}
    read = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE": value},
            capture_output=True,
            text=True,
            check=False,
        )
        for value in ("1", "", "maybe")
    ]
    assert [r.stdout.strip() for r in read[:2]] == ["True", "False"]
    assert (
        read[2].returncode != 0 and "RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE must be true or false" in read[2].stderr
    )


def test_the_page_refuses_a_rule_whose_webhook_is_internal(client_for, alice, project):
    response = client_for(alice).post(
        f"/projects/{project.id}/alerts", {"kind": "failed", "webhook_url": "http://[::1]:6379/"}
    )
    assert response.status_code == 400 and "loopback" in response.content.decode()
    assert not AlertRule.objects.exists()


# --- sending: real receivers on loopback ---------------------------------------------------


class Hook(http.server.BaseHTTPRequestHandler):
    calls: list[dict] = []
    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"ok")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.calls.append({"path": self.path, "host": self.headers["Host"], "body": body})
        status, headers, payload = Hook.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hook_port() -> Iterator[int]:
    Hook.calls, Hook.answer = [], (200, {}, b"ok")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class FlippingDNS:
    """A resolver whose answer for one name changes: public first, then this machine."""

    def __init__(self, name: str, answers: list[str]) -> None:
        self.name, self.answers, self.asked = name, answers, 0
        self.real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        address = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]


def test_dns_rebinding_to_a_private_address_at_send_time_is_refused(monkeypatch, hook_port):
    dns = FlippingDNS("hooks.rebind.test", ["93.184.216.34", "127.0.0.1"])
    monkeypatch.setattr(egress, "getaddrinfo", dns)
    url = f"http://hooks.rebind.test:{hook_port}/hook"
    assert clean_webhook_url(url) == url  # public when saved
    with pytest.raises(egress.WebhookRefused, match=r"hooks.rebind.test \(127.0.0.1\) is a loopback"):
        egress.post_json(url, b"{}")
    assert Hook.calls == []


def test_a_name_with_any_private_address_among_its_answers_is_refused(monkeypatch):
    real = socket.getaddrinfo

    def both(host, port, *args, **kwargs):
        if host != "mixed.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in ("93.184.216.34", "10.0.0.7")]

    monkeypatch.setattr(egress, "getaddrinfo", both)
    with pytest.raises(InputError, match="private"):
        clean_webhook_url("https://mixed.test/x")


def test_the_send_connects_to_the_address_it_checked(monkeypatch, settings, hook_port):
    # Allowed private, the name resolves once to loopback (the receiver); a second lookup
    # would answer a closed address. The POST arrives: it went to the first, checked answer.
    settings.WEBHOOK_ALLOW_PRIVATE = True
    dns = FlippingDNS("hooks.pinned.test", ["127.0.0.1", "192.0.2.1"])
    monkeypatch.setattr(egress, "getaddrinfo", dns)
    assert egress.post_json(f"http://hooks.pinned.test:{hook_port}/in?x=1", b'{"text": "hi"}') == 200
    assert dns.asked == 1
    [call] = Hook.calls
    assert call == {"path": "/in?x=1", "host": f"hooks.pinned.test:{hook_port}", "body": b'{"text": "hi"}'}


def test_redirects_are_not_followed(settings, hook_port):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    Hook.answer = (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    with pytest.raises(egress.WebhookRefused, match="redirect"):
        egress.post_json(f"http://127.0.0.1:{hook_port}/hook", b"{}")
    assert [c["path"] for c in Hook.calls] == ["/hook"]


def test_a_large_answer_is_not_read_and_an_error_status_fails(settings, hook_port):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    Hook.answer = (200, {}, b"x" * 5_000_000)
    assert egress.post_json(f"http://127.0.0.1:{hook_port}/", b"{}") == 200
    Hook.answer = (500, {}, b"down")
    with pytest.raises(egress.WebhookFailed, match="HTTP 500"):
        egress.post_json(f"http://127.0.0.1:{hook_port}/", b"{}")


def test_the_task_records_a_refused_webhook_and_sends_nothing(project, make_run, alice, hook_port):
    # A rule saved while its name was public (or before this check existed) now points inside.
    rule = AlertRule.objects.create(
        project=project, kind=AlertKind.FAILED, webhook_url=f"http://localhost:{hook_port}/hook"
    )
    firing = AlertFiring.objects.create(
        rule=rule, run=make_run(status=RunStatus.FAILED), message="the run failed"
    )
    notify_alert(firing.id)  # the task's body, run here: a refusal is final, never retried
    firing.refresh_from_db()
    assert firing.notified_at is None and "webhook refused" in firing.notify_error
    assert "loopback" in firing.notify_error and Hook.calls == []
    with pytest.raises(InputError):
        create_rule(user=alice, project=project, kind="failed", webhook_url=rule.webhook_url)
