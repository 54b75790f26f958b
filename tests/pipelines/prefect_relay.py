"""A real HTTP relay in front of the session's real Prefect server, playing the faults a
busy or distant server shows, which a healthy local one never does on cue: a 503 (Prefect's
answer while its database is busy), a 2xx page that is not JSON (a proxy's), a connection
dropped after the server took the request. Everything else reaches the server as sent."""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What the relay does with a request, chosen by its path (as under /api/): None forwards it.
BUSY = "busy"  # 503, nothing forwarded
NOT_JSON = "not-json"  # 200 with an HTML page, nothing forwarded
DROP_AFTER = "drop-after"  # forwarded and answered upstream; the connection then cut

Fault = Callable[[str], str | None]


def once(fault: str, *paths: str) -> Fault:
    """``fault`` for the first request to each of ``paths``; the rest go through."""
    left = set(paths)

    def choose(path: str) -> str | None:
        if path in left:
            left.discard(path)
            return fault
        return None

    return choose


class Relay:
    def __init__(self, upstream: str):
        parts = urllib.parse.urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._prefix = parts.path.rstrip("/") + "/"
        self.fault: Fault = lambda path: None
        self.received: list[str] = []  # every request's path, as it arrived
        self.forwarded: list[str] = []  # those the server answered
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept alive, as the client keeps it

            def do_POST(self) -> None:
                relay._handle(self)

            def log_message(self, *args) -> None: ...

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}{parts.path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        path = handler.path.removeprefix(self._prefix)
        self.received.append(path)
        fault = self.fault(path)
        if fault == BUSY:
            return _answer(handler, 503, b'{"exception_message": "Service Unavailable"}')
        if fault == NOT_JSON:
            return _answer(handler, 200, b"<html><body>Please wait</body></html>", "text/html")
        upstream = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            upstream.request("POST", handler.path, body, {"Content-Type": "application/json"})
            answer = upstream.getresponse()
            status, data = answer.status, answer.read()
        finally:
            upstream.close()
        self.forwarded.append(path)
        if fault == DROP_AFTER:  # the server took it; its answer is lost on the way back
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        _answer(handler, status, data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A connection the relay cut on purpose ends with an error: not news."""


def _answer(
    handler: BaseHTTPRequestHandler, status: int, data: bytes, kind: str = "application/json"
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
