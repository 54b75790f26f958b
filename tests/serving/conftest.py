"""One real `bentoml serve` per session on loopback, over a registry with two versions."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import httpx
import pytest

from loopline.core.settings import Settings, load_settings
from loopline.ml.train_config import TrainConfig
from loopline.serving.server import Server, start_server
from loopline.storage.registry import Registry
from tests.conftest import free_port, train_and_register

# The session server's labelling keys: a labeller's and a reviewer's.
LABELLER = {"X-API-Key": "test-labeller-key"}
REVIEWER = {"X-API-Key": "test-reviewer-key"}
LABEL_SETTINGS = {
    "LOOPLINE_LABEL_KEYS": "labeller=test-labeller-key,reviewer=test-reviewer-key",
    "LOOPLINE_LABEL_REVIEWERS": "reviewer",
}


@dataclasses.dataclass
class Served:
    settings: Settings
    server: Server
    before_model: dict  # what the server answered while the registry had no champion

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path) -> Served:
    """v1 is the champion; v2 (worse) is registered but not promoted."""
    root = tmp_path_factory.mktemp("serving")
    settings = load_settings({"LOOPLINE_HOME": str(root / "home"), **LABEL_SETTINGS})
    settings.home.mkdir(parents=True)
    server = start_server(settings, port=free_port(), log_path=root / "serve.log", poll_s="0.5")
    try:
        before = _answers_without_a_model(server)
        first = train_and_register(settings, digits_dir, root / "v1", TrainConfig(epochs=4))
        second = train_and_register(
            settings, digits_dir, root / "v2", TrainConfig(epochs=1, lr=1e-4)
        )
        assert first["promoted"] and not second["promoted"], (first, second)
        server.wait_ready()
        yield Served(settings, server, before)
    finally:
        server.stop()


def _answers_without_a_model(server: Server) -> dict:
    """Wait for the HTTP server, then record /readyz and /predict before any model exists."""
    for _ in range(300):
        try:
            ready = httpx.get(f"{server.url}/readyz", timeout=2)
            break
        except httpx.TransportError:
            assert server.process.poll() is None, "bentoml serve exited"
            time.sleep(0.3)
    for _ in range(100):  # past the first moments, while the worker opens the database
        predict = httpx.post(f"{server.url}/predict", json={"instances": [[0.0] * 64]}, timeout=10)
        if "starting" not in predict.text:
            break
        time.sleep(0.1)
    return {"readyz": ready.status_code, "predict": predict.status_code, "body": predict.json()}


@pytest.fixture
def champion_v1(served: Served):
    """Leave the champion at v1 after the test, whatever it moved."""
    yield
    Registry(served.settings).promote(served.settings.model_name, "1")
