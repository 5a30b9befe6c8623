"""The harness's proxy does what the fault tests rely on: forward, refuse while down, forward again."""

from __future__ import annotations

import socket
import threading

import pytest
from fault_harness import TcpProxy


def test_harness_proxy_refuses_and_drops_then_accepts_again():
    """The proxy really does what the tests rely on: forward, refuse while down, forward again."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(
                target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(1024), b"")]
            ).start()

    threading.Thread(target=echo, daemon=True).start()
    proxy = TcpProxy(*server.getsockname()).start()
    try:
        live = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        live.sendall(b"ping")
        assert live.recv(4) == b"ping"
        proxy.down()
        assert live.recv(4) == b"", "a live connection must be dropped"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.up()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        again.sendall(b"pong")
        assert again.recv(4) == b"pong"
        again.close()
        live.close()
    finally:
        proxy.close()
        server.close()
