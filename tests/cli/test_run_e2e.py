"""End to end through the CLI: the first run trains on Ray with 2 workers (the session's
``ray_address`` head); later runs train in-process, which is what they vary."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_digits

from tests.conftest import VENV_BIN

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def loopline(*args, home):
    env = {**os.environ, "LOOPLINE_HOME": str(home)}
    return subprocess.run(
        [str(VENV_BIN / "loopline"), *args], capture_output=True, text=True, env=env, timeout=600
    )


def champion(home):
    return json.loads(loopline("status", "--json", home=home).stdout)["champion"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_address, prefect_api):
    home = tmp_path_factory.mktemp("e2e")
    result = loopline(
        "run", "training", "--dataset", "digits", "--epochs", "3", "--json", home=home
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return home, json.loads(result.stdout)


def test_training_pipeline_crowns_its_first_model(trained):
    home, summary = trained
    assert summary["status"] == "succeeded"
    decision = summary["decision"]
    assert decision["promoted"] and decision["version"] == "1"
    assert decision["metrics"]["accuracy"] > 0.6
    assert summary["training"]["epochs_run"] == 3
    for name in ("validation report", "evaluation report", "training curves", "confusion matrix"):
        assert os.path.exists(summary["paths"][name]), name
    status = champion(home)
    assert status["version"] == "1"
    assert status["metrics"]["accuracy"] == pytest.approx(decision["metrics"]["accuracy"], abs=1e-5)
    lineage = json.loads((Path(summary["paths"]["model files"]) / "lineage.json").read_text())
    assert lineage["step"] == "train" and lineage["inputs"]["dataset"].startswith("sha256:")
    assert lineage["parameters"]["workers"] == 2
    # The gate promoted, so the pipeline's last step packaged a Bento.
    packaged = [t for t in summary["tasks"] if t["name"].endswith("package")]
    assert [t["status"] for t in packaged] == ["succeeded"], summary["tasks"]
    assert list((home / "bentoml" / "bentos" / "loopline-digits-classifier").glob("v1-*"))


def test_failed_validation_exits_1_lists_checks_and_keeps_the_champion(trained, tmp_path):
    home, _ = trained
    bunch = load_digits()
    frame = pd.DataFrame(bunch.data / 16, columns=[f"p{i}" for i in range(64)])
    frame["digit"] = bunch.target.astype(str)
    frame.loc[:9, "p3"] = None
    frame.loc[10:14, "digit"] = "x"  # a sixth-rate class with 5 samples
    frame.to_csv(tmp_path / "broken.csv", index=False)
    result = loopline(
        "run",
        "training",
        "--dataset",
        str(tmp_path / "broken.csv"),
        "--label-column",
        "digit",
        "--model",
        "digits-classifier",
        home=home,
    )
    assert result.returncode == 1
    assert "step validate-data failed: DataValidationError" in result.stderr
    assert "missing_values: 1 problem(s)" in result.stderr
    assert "column p3: 10 missing values" in result.stderr
    assert "class x: 5 samples, need at least 100" in result.stderr
    assert "validate-data: validation.html: " in result.stderr  # the checklist, by path
    assert "Traceback" not in result.stderr  # a data failure is no crash
    assert champion(home)["version"] == "1"


def test_unchanged_rerun_comes_from_cache_and_a_new_parameter_reruns_only_what_it_affects(
    trained,
):
    home, first = trained
    again = loopline("run", "training", "--dataset", "digits", "--epochs", "3", "--json", home=home)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    cached = {t["name"]: t["cached"] for t in summary["tasks"] if t["status"] == "succeeded"}
    assert cached == {
        "ingest": True,
        "validate-data": True,
        "train": True,
        "evaluate": True,
        "register": False,
    }
    assert summary["decision"]["version"] == "1"
    assert "already registered" in summary["decision"]["decision"]["reasons"][0]
    changed = loopline(
        "run",
        "training",
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--workers",
        "0",
        "--json",
        home=home,
    )
    tasks = json.loads(changed.stdout)["tasks"]
    cached = {t["name"]: t["cached"] for t in tasks if not t["name"].startswith("condition")}
    assert cached == {
        "ingest": True,
        "validate-data": True,
        "train": False,
        "evaluate": False,
        "register": False,
    }


def test_worse_model_is_not_promoted(trained):
    home, _ = trained
    before = champion(home)["version"]
    result = loopline("run", "training", "--epochs", "1", "--workers", "0", "--json", home=home)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    decision = summary["decision"]
    assert decision["promoted"] is False and decision["version"] != before
    packaged = [t["status"] for t in summary["tasks"] if t["name"].startswith("condition")]
    assert packaged == ["skipped"], summary["tasks"]
    assert champion(home)["version"] == before
