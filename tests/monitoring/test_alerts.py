"""Alerts reach a real HTTP receiver on loopback; a dead receiver never raises."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopline.monitoring.alerts import send_alert


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()


@pytest.fixture
def receiver():
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], Receiver.received
    server.shutdown()


def test_webhook_and_apprise_urls_deliver(receiver):
    port, received = receiver
    assert send_alert(f"http://127.0.0.1:{port}/hook", "drift", "97% drifted", {"trigger_id": 1})
    assert received[-1] == {
        "event": "drift",
        "message": "97% drifted",
        "details": {"trigger_id": 1},
    }
    assert send_alert(f"json://127.0.0.1:{port}/apprise", "promotion", "v2 promoted", {})
    assert (
        received[-1]["title"] == "loopline: promotion" and received[-1]["message"] == "v2 promoted"
    )


def test_undeliverable_alerts_are_dropped_without_raising(caplog):
    assert send_alert(None, "drift", "x", {}) is False
    assert send_alert("http://127.0.0.1:9/hook?token=s3cret", "drift", "x", {}) is False
    assert send_alert("nosuchscheme://s3cret@host", "failure", "x", {}) is False
    assert "s3cret" not in caplog.text  # the URL's credentials never reach the log
