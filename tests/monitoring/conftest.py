"""A real loop for monitoring tests: a registry with a v1 champion, a real `bentoml serve`
following it, and real Prefect runs of the retraining pipeline (in-process engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loopline.monitoring.monitor import Monitor

import dataclasses
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from loopline.core.settings import Settings, load_settings
from loopline.ml.dataset import read_split
from loopline.ml.train_config import TrainConfig
from loopline.monitoring.policy import Policy
from loopline.serving.server import Server, free_port, start_server
from tests.conftest import train_and_register
from tests.serving.conftest import LABEL_SETTINGS, LABELLER, REVIEWER

POLICY = Policy(
    drift_share=0.5,
    min_rows=100,
    min_labels=100,
    cooldown_s=0,
    retrain_engine="inprocess",
    retrain_epochs=6,
)


@dataclasses.dataclass
class Loop:
    settings: Settings
    server: Server
    dataset: Path
    monitor: Monitor  # imported by the fixture: Evidently takes 3 s to import

    def send(self, x: np.ndarray) -> list[str]:
        """One request per row; the request ids, in order."""
        with httpx.Client(timeout=30) as http:
            ids = []
            for row in x:
                answer = http.post(f"{self.server.url}/predict", json={"instances": [row.tolist()]})
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["request_id"])
        return ids

    def label(
        self, request_ids: list[str], y: np.ndarray, *, reviewed: np.ndarray | None = None
    ) -> dict:
        """The labeller labels every item; with ``reviewed`` (the truth), the reviewer
        labels every tenth, as a labelling team's audit would. The labeller's answer."""
        answer = self._feedback(LABELLER, request_ids, y)
        if reviewed is not None:
            self._feedback(REVIEWER, request_ids[::10], reviewed[::10])
        return answer

    def _feedback(self, key: dict, request_ids: list[str], y: np.ndarray) -> dict:
        labels = [
            {"request_id": r, "label": str(int(v))} for r, v in zip(request_ids, y, strict=True)
        ]
        answer = httpx.post(
            f"{self.server.url}/feedback", json={"labels": labels}, headers=key, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def serving_version(self) -> str:
        probe = {"instances": [[0.0] * 64]}
        return httpx.post(f"{self.server.url}/predict", json=probe, timeout=30).json()[
            "model_version"
        ]

    def split(self, name: str):
        return read_split(self.dataset, name)

    def wait_for_version(self, version: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.serving_version() != version:
            time.sleep(0.3)
        return self.serving_version()


@pytest.fixture(scope="module")
def loop(tmp_path_factory, digits_dir, prefect_api):
    from loopline.monitoring.monitor import Monitor

    root = tmp_path_factory.mktemp("loop")
    saved = {
        k: os.environ.get(k) for k in ("LOOPLINE_HOME", "LOOPLINE_TRACKING_URI", *LABEL_SETTINGS)
    }
    os.environ["LOOPLINE_HOME"] = str(root / "home")  # the pipeline's steps read it
    os.environ.update(LABEL_SETTINGS)
    os.environ.pop("LOOPLINE_TRACKING_URI", None)
    settings = load_settings()
    first = train_and_register(settings, digits_dir, root / "v1", TrainConfig(epochs=6))
    assert first["promoted"]
    server = start_server(settings, port=free_port(), log_path=root / "serve.log", poll_s="0.5")
    monitor = None
    try:
        server.wait_ready()
        monitor = Monitor(settings, POLICY)
        yield Loop(settings, server, digits_dir, monitor)
    finally:
        server.stop()
        if monitor is not None:
            monitor.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
