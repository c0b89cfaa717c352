"""Keep-alive connections against a real local HTTP/1.1 server: reuse, servers that close, threads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from diffbench.client import call, connect
from diffbench.connections import Http
from diffbench.errors import RequestFailed
from diffbench.launcher import free_port


class KeepAlive(BaseHTTPRequestHandler):
    """Answers which client port asked; `/close` closes the connection after answering, unannounced."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/short":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        content = json.dumps({"port": self.client_address[1], "echo": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        if self.path == "/announced-close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(content)
        if self.path == "/close":
            self.close_connection = True

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def keep_alive_server() -> Iterator[Http]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), KeepAlive)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with connect(f"http://127.0.0.1:{server.server_port}") as http:
            yield http
    finally:
        server.shutdown()
        server.server_close()


def port(http: Http, path: str = "/") -> int:
    return call(http, "GET", path, 5, f"GET {path}").json()["port"]


def test_requests_in_turn_share_one_connection_and_bodies_arrive_whole() -> None:
    with keep_alive_server() as http:
        ports = {port(http) for _ in range(5)}
        answer = call(http, "POST", "/", 5, "POST /", b'{"a": 1}', {"Content-Type": "application/json"})
    assert len(ports) == 1
    assert answer.status == 200 and answer.json()["echo"] == '{"a": 1}' and answer.json()["port"] in ports
    assert answer.headers["content-length"] == str(len(answer.data))  # names in lower case


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed() -> None:
    with keep_alive_server() as http:
        first = port(http, "/close")  # the server hangs up after this answer, without saying so
        time.sleep(0.1)
        second = port(http)
        third = port(http)
    assert first != second == third


def test_an_announced_close_is_not_reused() -> None:
    with keep_alive_server() as http:
        assert port(http, "/announced-close") != port(http)


def test_concurrent_threads_each_get_a_connection_and_give_it_back() -> None:
    with keep_alive_server() as http, ThreadPoolExecutor(max_workers=6) as pool:
        ports = set(pool.map(lambda _: port(http), range(60)))
        assert len(ports) <= 6
        assert port(http) in ports  # given back, and taken again


def test_a_cut_answer_fails_and_its_connection_is_dropped() -> None:
    with keep_alive_server() as http:
        with pytest.raises(RequestFailed, match="GET /short: IncompleteRead"):
            call(http, "GET", "/short", 5, "GET /short")
        assert port(http) > 0


def test_close_closes_the_idle_connections() -> None:
    with keep_alive_server() as http:
        before = port(http)
        http.close()
        assert port(http) != before


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="is http://host:port, not 'https://x:1'"):
        Http("https://x:1")
