"""Slow, idle, greedy and overloading clients against a real `bentoml serve`, and a SIGTERM
under load. The server keeps a private home but shares the session's registry.

Loopback has a whole /8, so each kind of client connects from an address of its own
(127.0.0.x): the per-address cap applies to each, and the well-behaved client is another.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from loopline.core.settings import load_settings
from loopline.serving.server import start_server
from tests.conftest import free_port
from tests.serving.load import ROW

pytestmark = pytest.mark.xdist_group("served")  # shares the session's registry

LIMITS = {
    "LOOPLINE_SERVE_HEADER_TIMEOUT_S": "2",
    "LOOPLINE_SERVE_BODY_TIMEOUT_S": "2",
    "LOOPLINE_SERVE_MAX_CLIENT_CONNECTIONS": "100",
}


@pytest.fixture(scope="module")
def guarded(served, tmp_path_factory):
    root = tmp_path_factory.mktemp("guarded")
    settings = load_settings(
        {"LOOPLINE_HOME": str(root / "home"), "LOOPLINE_TRACKING_URI": served.settings.tracking_uri}
    )
    server = start_server(settings, port=free_port(), log_path=root / "serve.log", env=LIMITS)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _trickle(socks: list[socket.socket], data: bytes, stop: threading.Event) -> None:
    """Send ``data`` a byte every 0.3 s on every socket, as a slow-loris client does."""
    for byte in data:
        if stop.wait(0.3):
            return
        for sock in socks:
            with contextlib.suppress(OSError):  # the server closed it: what the test awaits
                sock.send(bytes([byte]))


def _fate(sock: socket.socket) -> str:
    """How the server ended the connection: its status code, or 'closed' (no answer)."""
    sock.settimeout(10)
    try:
        answer = sock.recv(200)
    except ConnectionResetError:
        return "closed"
    except TimeoutError:
        return "open"
    finally:
        sock.close()
    return answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1") else "closed"


def test_slow_loris_idle_and_slow_bodies_neither_starve_a_client_nor_stay_open(guarded):
    port = int(guarded.url.rsplit(":", 1)[1])
    loris = [_connect(port, "127.0.0.1") for _ in range(300)]  # 100 over the address cap
    bodies = [_connect(port, "127.0.0.3") for _ in range(50)]
    idle = [_connect(port, "127.0.0.4") for _ in range(60)]
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for sock in bodies:  # whole headers, then a body that never finishes
        sock.sendall(head + b"Content-Length: 5000\r\n\r\n{")
    stop = threading.Event()
    senders = [
        threading.Thread(target=_trickle, args=(loris, head + b"X-Slow: " + b"a" * 200, stop)),
        threading.Thread(target=_trickle, args=(bodies, b'"instances": ' + b" " * 200, stop)),
    ]
    for sender in senders:
        sender.start()
    try:
        # A well-behaved client, from an address of its own, is answered at once meanwhile.
        took = []
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:
            for _ in range(5):
                started = time.monotonic()
                answer = client.post(f"{guarded.url}/predict", json={"instances": ROW}, timeout=5)
                took.append(time.monotonic() - started)
                assert answer.status_code == 200, answer.text
                time.sleep(0.2)
        assert max(took) < 1.0, took
        fates = {name: [_fate(s) for s in socks] for name, socks in [("loris", loris), ("bodies", bodies), ("idle", idle)]}  # fmt: skip
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    # Past the deadlines, the server closed every one of them, with a reason where it could.
    assert fates["loris"].count("503") >= 150, fates["loris"]  # refused over the cap
    assert fates["loris"].count("408") + fates["loris"].count("503") == 300, fates["loris"]
    assert fates["bodies"] == ["408"] * 50
    assert fates["idle"] == ["408"] * 60
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1")) as client:
        assert client.get(f"{guarded.url}/readyz").status_code == 200  # the address may return


def test_a_slow_body_is_a_408_that_names_the_deadline(guarded):
    port = int(guarded.url.rsplit(":", 1)[1])
    sock = _connect(port, "127.0.0.5")
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    sock.settimeout(10)
    answer = sock.recv(1000).decode()
    sock.close()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "body did not arrive" in answer and "connection: close" in answer.lower()


def test_overload_gets_429_with_retry_after_instead_of_a_long_wait(served, tmp_path):
    settings = load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path / "home"),
            "LOOPLINE_TRACKING_URI": served.settings.tracking_uri,
        }
    )
    server = start_server(
        settings,
        port=free_port(),
        log_path=tmp_path / "serve.log",
        env={"LOOPLINE_SERVE_MAX_QUEUE_S": "0.002"},
    )
    try:
        server.wait_ready()

        def client(_):
            answers = []
            with httpx.Client(timeout=30) as http:
                for _ in range(6):
                    answers.append(
                        http.post(f"{server.url}/predict", json={"instances": ROW * 256})
                    )
            return answers

        with ThreadPoolExecutor(32) as pool:
            answers = [a for batch in pool.map(client, range(32)) for a in batch]
    finally:
        server.stop()
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 429}, sorted(set(codes))
    busy = next(a for a in answers if a.status_code == 429)
    assert int(busy.headers["Retry-After"]) >= 1
    assert "LOOPLINE_SERVE_MAX_QUEUE_S" in busy.json()["error"]


def test_sigterm_drains_requests_in_flight(served, tmp_path):
    """SIGTERM under load: every request the server had begun is answered; later ones are
    refused at connect (a client may retry those), never reset mid-request."""
    settings = load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path / "home"),
            "LOOPLINE_TRACKING_URI": served.settings.tracking_uri,
        }
    )
    server = start_server(settings, port=free_port(), log_path=tmp_path / "serve.log")
    server.wait_ready()
    outcomes: list[tuple[float, str]] = []
    stopping = threading.Event()

    def client():
        with httpx.Client(timeout=30) as http:
            while not stopping.is_set():
                sent = time.monotonic()
                try:
                    r = http.post(f"{server.url}/predict", json={"instances": ROW * 64})
                    outcomes.append((sent, str(r.status_code)))
                except httpx.ConnectError:
                    outcomes.append((sent, "refused"))
                    return
                except httpx.TransportError as exc:
                    outcomes.append((sent, type(exc).__name__))
                    return

    clients = [threading.Thread(target=client) for _ in range(16)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 60
    while [what for _, what in outcomes].count("200") <= 50:  # the load got going
        assert time.monotonic() < deadline, outcomes[-5:]
        time.sleep(0.05)
    terminated = time.monotonic()
    server.stop()  # SIGTERM to the tree; SIGKILL only past the grace period
    stopping.set()
    for thread in clients:
        thread.join()
    before = [what for sent, what in outcomes if sent < terminated]
    assert before.count("200") > 50, "the load did not get going"
    assert set(before) == {"200"}, sorted(set(before))
    after = {what for sent, what in outcomes if sent >= terminated}
    assert after <= {"200", "refused"}, after
