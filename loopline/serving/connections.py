"""Connections that a slow or greedy client cannot hold: uvicorn's HTTP protocol with the
deadlines and caps it lacks.

uvicorn closes an idle keep-alive connection and nothing else. A connection that sends
nothing, or sends its headers or body a byte at a time, stays open as long as the client
likes, and so do as many of them as the file-descriptor limit allows. :class:`GuardedHTTP`
adds these rules, per worker process:

- a request's line and headers arrive within ``header_timeout_s`` of its first byte (of
  the connection's opening, for its first request), else 408 and close;
- its body arrives within ``body_timeout_s`` of its headers, else 408 and close;
- at most ``max_connections`` are open, and ``max_client_connections`` from one address;
  a connection beyond either gets 503 with ``Retry-After`` and is closed;
- an idle keep-alive connection is closed after ``idle_s`` (uvicorn's own timer).

And a drain on SIGTERM that resets nothing (:func:`drain_on_sigterm`): the listening socket
stops at once, so a new connection is refused (a client may retry it elsewhere) rather than
queued and reset; a request in flight is answered with ``Connection: close``; an idle
connection stays open for a moment in case the client's next request is already on its way.

BentoML builds uvicorn's ``Config`` without a protocol option, so :func:`install` names this
class as uvicorn's ``auto`` protocol. The worker imports the service module, which calls it,
before its server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections import Counter
from http import HTTPStatus

import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from loopline.core.settings import ServeSettings

LAST_CALL_S = 1.0  # how long a draining server keeps an idle connection for one more request


class GuardedHTTP(HttpToolsProtocol):
    limits = ServeSettings()
    _by_client: Counter[str] = Counter()  # this worker's open connections per address

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.idle_s
        self._deadline: asyncio.TimerHandle | None = None
        self._address: str | None = None
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        self._by_client[self._address] += 1
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "the server has too many open connections; retry shortly", 1)
        elif self._by_client[self._address] > self.limits.max_client_connections:
            self._refuse(
                503,
                f"this address has over {self.limits.max_client_connections} open "
                "connections; reuse or close some",
                1,
            )
        else:
            self._arm(self.limits.header_timeout_s, "line and headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._address is not None:
            self._by_client[self._address] -= 1
            if self._by_client[self._address] <= 0:
                del self._by_client[self._address]
            self._address = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a kept-alive connection's next request
            self._arm(self.limits.header_timeout_s, "line and headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed
        self._arm(self.limits.body_timeout_s, "body")

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown. uvicorn closes an idle connection at once, which
        resets a request the client sent just before; this one waits a moment for it."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                LAST_CALL_S, self.timeout_keep_alive_handler
            )
        else:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, seconds: float, what: str) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the handler reading the body hears a disconnect
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self._refuse(
            408, f"the request's {what} did not arrive within {seconds:g} s; send it promptly"
        )

    def _refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
        if self.transport.is_closing():
            return
        body = json.dumps({"error": message}).encode()
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if retry_after is not None:
            head.append(f"retry-after: {retry_after}")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.transport.close()


def drain_on_sigterm() -> None:
    """On SIGTERM, stop the listening socket before uvicorn's own shutdown begins.

    BentoML's arbiter holds the socket too, so uvicorn's closing its copy leaves the kernel
    queueing new connections that nobody accepts, until the arbiter exits and resets them.
    Shutting the socket down refuses them at once instead. A worker gets SIGTERM only when
    the whole server stops (from the arbiter, its process group, or its parent's death).
    Call it from inside the worker's server (the service's constructor), where uvicorn's
    handler is installed, so that this one runs first and then hands over to it."""
    listener = _listening_fd()
    uvicorns = signal.getsignal(signal.SIGTERM)
    if listener is None or not callable(uvicorns):
        return

    def stop_listening(signum, frame) -> None:
        # Already shut down, or not a socket: uvicorn's shutdown still runs.
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(listener)) as sock:
            sock.shutdown(socket.SHUT_RD)
        uvicorns(signum, frame)

    signal.signal(signal.SIGTERM, stop_listening)


def _listening_fd() -> int | None:
    """The socket BentoML's arbiter handed this worker (its ``--fd`` argument)."""
    argv = sys.argv
    if "--fd" in argv[:-1] and argv[argv.index("--fd") + 1].isdigit():
        return int(argv[argv.index("--fd") + 1])
    return None


def install(limits: ServeSettings) -> None:
    """Make :class:`GuardedHTTP`, with ``limits``, the protocol of this process's uvicorn."""
    GuardedHTTP.limits = limits
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHTTP"
