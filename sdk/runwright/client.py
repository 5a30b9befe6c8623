"""The few calls the SDK makes to a Runwright server's API, over one kept-alive HTTP connection."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

TIMEOUT_SECONDS = 10.0


class Unreachable(Exception):
    """No answer (refused, reset, timed out) or a 5xx/429: worth trying again later."""


class Refused(Exception):
    """The server answered and said no (4xx): trying the same request again will not help."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body
        detail = body.get("errors") or body.get("error") or body
        super().__init__(f"HTTP {status}: {detail}")


class Client:
    def __init__(self, url: str, token: str, timeout: float = TIMEOUT_SECONDS):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"RUNWRIGHT_URL must look like http://host:8000, got {url!r}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> dict[str, Any]:
        """``method path`` under ``/api/v1`` with ``body`` (or ``raw`` JSON bytes); the JSON answer,
        or ``Unreachable`` / ``Refused``."""
        payload = (
            raw
            if raw is not None
            else json.dumps(body, allow_nan=False).encode()
            if body is not None
            else b""
        )
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request(method, f"{self.prefix}/api/v1/{path}", body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server closed while idle: once more on a new one.
                if not (reused and attempt == 1):
                    raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": raw[:200].decode(errors="replace")}
        if not isinstance(data, dict):
            data = {"data": data}
        if response.status >= 500 or response.status == 429:
            self.close()
            raise Unreachable(f"HTTP {response.status}")
        if response.status >= 400:
            raise Refused(response.status, data)
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    # --- the calls ---------------------------------------------------------------------

    def project_id(self, project: str | int, team: int | None = None) -> int:
        """The id of the project named ``project`` among the token's, created when there is none."""
        if isinstance(project, int):
            return project
        cursor = ""
        while True:  # the list is paged: follow next_cursor to its end
            page = self.call("GET", f"projects?limit=200&cursor={quote(cursor)}")
            for found in page.get("projects", []):
                if found.get("name") == project and (team is None or found.get("team", {}).get("id") == team):
                    return int(found["id"])
            cursor = page.get("next_cursor") or ""
            if not cursor:
                break
        body: dict[str, Any] = {"name": project}
        if team is not None:
            body["team"] = team
        return int(self.call("POST", "projects", body)["id"])

    def create_run(
        self, project_id: int, name: str, config: dict[str, Any], tags: list[str]
    ) -> dict[str, Any]:
        body = {"source": "external", "name": name, "config": config, "tags": tags}
        return self.call("POST", f"projects/{project_id}/runs", body)

    def send_events(self, run_id: int, events: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call("POST", f"runs/{run_id}/events", {"events": events})

    def send_event_lines(self, run_id: int, lines: list[bytes]) -> dict[str, Any]:
        """Lines of ``events.jsonl`` sent as they are (each one a JSON object): no parse, no re-encode."""
        return self.call("POST", f"runs/{run_id}/events", raw=b'{"events": [' + b",".join(lines) + b"]}")

    def heartbeat(self, run_id: int) -> dict[str, Any]:
        return self.call("POST", f"runs/{run_id}/heartbeat")
