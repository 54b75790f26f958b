"""Training, evaluation and the champion gate against a real MLflow (SQLite) registry."""

import json

import pytest

from loopline.core import lineage
from loopline.ml.sources import ingest
from loopline.ml.steps import register_step
from loopline.ml.train_config import TrainConfig
from loopline.storage.registry import Registry
from tests.conftest import train_and_register


@pytest.fixture
def champion(settings, digits_dir, tmp_path):
    return train_and_register(settings, digits_dir, tmp_path / "v1", TrainConfig(epochs=3))


def test_first_model_becomes_champion_with_lineage(settings, digits_dir, champion, tmp_path):
    assert champion["promoted"] and champion["version"] == "1"
    info = Registry(settings).champion("digits-classifier")
    assert info.version == "1"
    assert info.metrics["accuracy"] == pytest.approx(champion["metrics"]["accuracy"], abs=1e-6)
    assert info.tags["loopline.dataset"] == lineage.content_hash(digits_dir)
    model_files = {p.name for p in (tmp_path / "v1" / "model").iterdir()}
    assert {
        "model.safetensors",
        "architecture.json",
        "input_schema.json",
        "reference.parquet",
        "guardrail.parquet",
    } <= model_files
    record = lineage.read(tmp_path / "v1" / "model")
    assert record["run_id"] == "run-v1" and record["parameters"]["epochs"] == 3
    assert record["content_hash"] == lineage.content_hash(tmp_path / "v1" / "model")


def test_worse_challenger_is_registered_but_not_promoted(settings, digits_dir, champion, tmp_path):
    worse = train_and_register(
        settings, digits_dir, tmp_path / "v2", TrainConfig(epochs=1, lr=1e-4)
    )
    assert worse["version"] == "2" and not worse["promoted"]
    gate = worse["decision"]
    # The champion is re-scored on the same test set as the challenger.
    assert gate["champion_score"] == pytest.approx(champion["metrics"]["accuracy"])
    assert "is not significantly better than champion v1" in gate["reasons"][0]
    assert gate["evidence"]["rows"] == 270 and gate["evidence"]["p_value"] > 0.05
    assert Registry(settings).champion("digits-classifier").version == "1"
    saved = json.loads((tmp_path / "v2" / "decision" / "decision.json").read_text())
    assert saved["promoted"] is False


def test_champion_trained_on_other_inputs_is_not_replaced(settings, champion, tmp_path):
    other = tmp_path / "bc"
    ingest("breast_cancer", other)
    result = train_and_register(settings, other, tmp_path / "bc-run", TrainConfig(epochs=2))
    assert not result["promoted"]
    assert "register under another model name" in result["decision"]["reasons"][0]
    assert Registry(settings).champion("digits-classifier").version == "1"


def test_champion_with_corrupt_files_blocks_promotion_instead_of_crashing(
    settings, digits_dir, champion, tmp_path
):
    source = Registry(settings).champion("digits-classifier").source.removeprefix("file://")
    (tmp_path / "x").mkdir()
    with open(f"{source}/model.safetensors", "wb") as fh:
        fh.write(b"garbage")
    result = train_and_register(
        settings, digits_dir, tmp_path / "v2", TrainConfig(epochs=3, seed=1)
    )
    assert not result["promoted"]
    assert "cannot be loaded" in result["decision"]["reasons"][0]


def test_registering_the_same_files_again_reuses_the_version(
    settings, digits_dir, champion, tmp_path
):
    folder = tmp_path / "v1"
    again = register_step(
        folder / "model",
        digits_dir,
        folder / "eval",
        tmp_path / "again",
        run_id="r2",
        model_name="digits-classifier",
        settings=settings,
    )
    assert again["version"] == "1" and not again["promoted"]
    assert "already registered" in again["decision"]["reasons"][0]
    assert len(Registry(settings).client.search_model_versions("name = 'digits-classifier'")) == 1
