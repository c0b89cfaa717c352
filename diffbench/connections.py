"""Keep-alive HTTP/1.1 connections to one engine server, through the standard library's client.

The measured requests go through `http.client` directly: on one server, a bare urllib3 POST (on top
of http.client) costs 0.3 ms more per request and a bare httpx one 0.9 ms more (`benchmarks/overhead.py`);
that is what puts diffbench ahead of sglang's aiohttp client. Connections send without Nagle's delay
(http.client sets TCP_NODELAY) and are reused while the server keeps them open.
"""

from __future__ import annotations

import http.client
import json
import queue
import select
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    """An answer, read to its last byte; header names in lower case."""

    status: int
    data: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.data)


def _closed_by_server(sock: socket.socket) -> bool:
    """An idle connection with something to read has been closed (or answered out of turn): not reusable."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class Http:
    """Connections to one server, shared by its requests and threads; a request is never retried.

    Each thread takes an idle connection or opens one, and gives it back once the answer is read.
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an engine server's URL is http://host:port, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

    def request(self, method: str, path: str, timeout_s: float, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        """Send one request and read its answer; `timeout_s` bounds connecting and each wait for the server.

        Raises `ConnectionRefusedError`, `TimeoutError`, other `OSError`s and `http.client.HTTPException`s.
        """
        connection = self._take(timeout_s)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            data = answer.read()
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._idle.put(connection)
        return Response(answer.status, data, {name.lower(): value for name, value in answer.getheaders()})

    def _take(self, timeout_s: float) -> http.client.HTTPConnection:
        while True:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
                connection.connect()
                return connection
            if connection.sock is None or _closed_by_server(connection.sock):
                connection.close()
                continue
            connection.sock.settimeout(timeout_s)
            return connection

    def close(self) -> None:
        """Close the idle connections; one in use stays with its request."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
