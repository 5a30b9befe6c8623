"""The SDK against a live server: uvicorn on the test database, reached through a TCP proxy that can go down.

``make install`` installs sdk/ into the virtualenv; the path below also lets the suite
run from a checkout where it was not (the SDK is the standard library only).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from faults.fault_harness import TcpProxy
from sdk_support import SDK  # noqa: F401 - puts sdk/ on the path first
from service_processes import web_server

from webapp.accounts.services import create_api_token


@pytest.fixture
def server(transactional_db, tmp_path) -> Iterator[str]:
    with web_server(tmp_path / "web.log") as base:
        yield base


@pytest.fixture
def proxy(server) -> Iterator[TcpProxy]:
    parts = urlsplit(server)
    front = TcpProxy(parts.hostname, parts.port).start()
    try:
        yield front
    finally:
        front.close()


@pytest.fixture
def token(alice, transactional_db) -> str:
    return create_api_token(alice)
