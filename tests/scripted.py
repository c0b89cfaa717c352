"""A real HTTP/1.1 server answering from a script: recorded or made-up engine responses, no engine."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from diffbench.client import Http, connect
from diffbench.launcher import free_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    @classmethod
    def of(cls, body: object, status: int = 200) -> Answer:
        return cls(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


Handler = Callable[[str, str, bytes], Answer]


@contextmanager
def serving(handler: Handler) -> Iterator[Http]:
    """A real HTTP/1.1 server on a free port answering each request with `handler(method, path, body)`."""

    class Scripted(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = handler(self.command, self.path, body)
            time.sleep(answer.delay_s)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Scripted)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    http = connect(f"http://127.0.0.1:{server.server_port}")
    try:
        yield http
    finally:
        http.close()
        server.shutdown()
        server.server_close()


def answering(answer: Answer) -> Handler:
    return lambda method, path, body: answer
