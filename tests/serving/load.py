"""Concurrent prediction traffic for the kill -9 tests: clients that send 3-row requests
round-robin to the servers until stopped, and remember which requests were answered."""

from __future__ import annotations

import threading

import httpx
from sklearn.datasets import load_digits

ROW = (load_digits().data[:1] / 16.0).tolist()


class Load:
    def __init__(self, urls: list[str], headers: dict[str, str] | None = None, clients: int = 8):
        self.urls, self.headers = urls, headers or {}
        self.answered: list[str] = []  # request ids that got a 200: the log must hold them
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(c,)) for c in range(clients)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, client: int) -> None:
        with httpx.Client(timeout=10) as http:
            for n in range(100_000):
                if self._stop.is_set():
                    return
                request_id = f"c{client}-{n}"
                try:
                    r = http.post(
                        f"{self.urls[n % len(self.urls)]}/predict",
                        json={"instances": ROW * 3},
                        headers={**self.headers, "X-Request-ID": request_id},
                    )
                except httpx.HTTPError:
                    continue  # that server is gone; the request was never answered
                if r.status_code == 200:
                    self.answered.append(request_id)
