"""The registry behind a real `mlflow server` whose store is the real PostgreSQL, as the
overlays run it: registration behind the gate, promote, rollback, the champion reader
(MLflow's API here, not SQLite's tables) and a server's model following the alias,
with the registered files' digest checked after their download through the server."""

from __future__ import annotations

from loopline.core.settings import load_settings
from loopline.ml.train_config import TrainConfig
from loopline.serving.champion import ChampionHolder
from loopline.storage.registry import Registry, SqliteReader, reader
from tests.conftest import train_and_register


def test_promote_rollback_and_follow_through_a_tracking_server_on_postgresql(
    mlflow_server, digits_dir, tmp_path
):
    settings = load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path / "home"),
            "LOOPLINE_TRACKING_URI": mlflow_server,
            "LOOPLINE_MODEL_NAME": "remote-digits",
        }
    )
    name = settings.model_name
    first = train_and_register(settings, digits_dir, tmp_path / "v1", TrainConfig(epochs=3))
    assert first["promoted"], first
    second = train_and_register(
        settings, digits_dir, tmp_path / "v2", TrainConfig(epochs=1, lr=1e-4)
    )
    assert not second["promoted"]  # the gate refuses the worse one, on the server too
    reads = reader(settings)
    assert not isinstance(reads, SqliteReader)  # MLflow's API, not a local file's tables
    assert reads.champion(name).version == "1"
    assert name in reads.models()
    holder = ChampionHolder(settings, pinned=None, poll_s=60)
    assert holder.refresh() and holder.current.version == "1"  # downloaded, digest checked
    registry = Registry(settings)
    registry.promote(name, "2")
    assert holder.refresh() and holder.current.version == "2"
    assert registry.rollback(name) == ("2", "1")
    assert holder.refresh() and holder.current.version == "1"
    assert registry.champion_history(name) == ["1"]
