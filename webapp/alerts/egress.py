"""Where an alert's webhook may go, and the one way it is sent.

A webhook URL is user input: left alone it would let any member make the worker POST to
loopback, the private network (Redis, PostgreSQL, other services), link-local cloud
metadata (169.254.169.254) and the like. So a webhook host must be a public address:

- when the rule is saved (``check_url``): an IP literal is checked, and a name is resolved
  and every address it gives checked (a name that does not resolve yet is let through; the
  send checks again);
- when the alert is sent (``post_json``): the name is resolved once, every address is
  checked, and the connection is made to that checked address (the TLS certificate is
  still verified against the name), so a DNS answer that changes between the check and
  the connection (rebinding) cannot move it. Redirects are not followed, timeouts are
  short and at most ``BODY_CAP`` bytes of the answer are read.

The operator may allow private addresses (a receiver on the same network) with
``RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE=1`` (``settings.WEBHOOK_ALLOW_PRIVATE``).

HTTPS receivers are always verified: the certificate chain against the system's authorities
and the host name of the URL. A receiver signed by an internal CA (or with a self-signed
certificate) is trusted when the operator names that CA's PEM file in
``RUNWRIGHT_WEBHOOK_CA_BUNDLE`` (``settings.WEBHOOK_CA_BUNDLE``), added to the system's.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

from django.conf import settings

TIMEOUT_SECONDS = 5.0
BODY_CAP = 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Looked up through this name (not socket.getaddrinfo directly) so that a test can play a
# DNS server whose answer changes between the check at save time and the send.
getaddrinfo = socket.getaddrinfo


class WebhookRefused(ValueError):
    """The URL may not be used (a refused address, or a host that does not resolve at send time)."""


class WebhookFailed(OSError):
    """The receiver could not be reached or did not answer 2xx."""


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not receive a webhook (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address (e.g. cloud metadata)"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private-network address"),
    )
    for attribute, reason in checks:
        if getattr(address, attribute):
            return reason
    if not address.is_global:
        return "not a public address"
    return None


def _allow_private() -> bool:
    return bool(getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False))


def _refuse(host: str, address: IPAddress, reason: str) -> WebhookRefused:
    shown = host if host == str(address) else f"{host} ({address})"
    return WebhookRefused(
        f"{shown} is {reason}; webhooks go to public addresses only "
        "(the operator may allow private ones with RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE=1)"
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone (%eth0) is not part of it
    except ValueError:
        return None


def resolve_checked(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, all checked; raises WebhookRefused if any is refused.

    All of them, not the first: a name giving one public and one private address is refused.
    """
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise WebhookRefused(f"{host} does not resolve: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))
        if not addresses:
            raise WebhookRefused(f"{host} does not resolve")
    if not _allow_private():
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                raise _refuse(host, address, reason)
    return addresses


def check_url(url: str) -> None:
    """At save time: refuse a URL whose host is, or resolves to, a refused address.

    A name that does not resolve now is let through (a receiver not yet in DNS): the send
    resolves and checks it again.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        resolve_checked(host, port)
    except WebhookRefused as exc:
        if _literal(host) is not None or "does not resolve" not in str(exc):
            raise


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to one already checked address, whatever the host name resolves to now."""

    def __init__(self, host: str, port: int, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._address), self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_context() -> ssl.SSLContext:
    """Verification on (chain and host name): the system's authorities and the operator's bundle."""
    context = ssl.create_default_context()
    bundle = getattr(settings, "WEBHOOK_CA_BUNDLE", "")
    if bundle:
        try:
            context.load_verify_locations(cafile=bundle)
        except (OSError, ssl.SSLError) as exc:
            raise WebhookFailed(f"RUNWRIGHT_WEBHOOK_CA_BUNDLE ({bundle}) could not be loaded: {exc}") from exc
    return context


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    def __init__(self, host: str, port: int, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, address, timeout)
        self._context = tls_context()

    def connect(self) -> None:
        super().connect()
        try:
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            raise WebhookFailed(
                f"the TLS certificate of {self.host} is not trusted ({exc.verify_message}); a receiver "
                "signed by your own CA needs its certificate in RUNWRIGHT_WEBHOOK_CA_BUNDLE"
            ) from exc


def post_json(url: str, body: bytes) -> int:
    """POST ``body`` (JSON) to ``url`` through a checked address; returns the 2xx status.

    Raises WebhookRefused (do not retry) or WebhookFailed (the receiver may come back).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookRefused("not an http(s) URL with a host")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    address = resolve_checked(host, port)[0]
    kind = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
    connection = kind(host, port, address, TIMEOUT_SECONDS)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            "POST",
            target,
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": "Runwright", "Connection": "close"},
        )
        response = connection.getresponse()
        response.read(BODY_CAP)  # no more than this of whatever it answers
        status = response.status
    except WebhookFailed:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise WebhookFailed(f"{host}: {exc}") from exc
    finally:
        connection.close()
    if 300 <= status < 400:
        raise WebhookRefused(f"{host} answered a redirect ({status}); redirects are not followed")
    if not 200 <= status < 300:
        raise WebhookFailed(f"{host} answered HTTP {status}")
    return status
