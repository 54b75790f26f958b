"""Each example project (examples/NAME) through the whole closed loop, with real processes:
the user's pipeline on Prefect, `bentoml serve`, Evidently, the gate, MLflow.

Per example: v1 trained and registered by the user's pipeline -> served -> a request of
the wrong type gets a 422 naming the column -> normal traffic judged stable -> shifted
traffic drifts on the columns the example moved -> labels -> retraining through the
user's pipeline -> v2 promoted on evidence, and the server switches while a client keeps
sending (no request fails) -> a deliberately worse model is refused.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
from rich.console import Console

from loopline.cli.demo import label_keys
from loopline.cli.example_demo import example_loop
from loopline.core.settings import load_settings
from loopline.storage.registry import reader

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loop")]
EXAMPLES = Path(__file__).parents[2] / "examples"


def _data(folder: Path):
    spec = importlib.util.spec_from_file_location(f"data_{folder.name}", folder / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["churn_sklearn", "diabetes_torch", "tickets_text"])
def test_the_example_goes_round_the_whole_loop(name, tmp_path, monkeypatch, prefect_api):
    folder = EXAMPLES / name
    data = _data(folder)
    home = tmp_path / "home"
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    monkeypatch.setenv("LOOPLINE_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("LOOPLINE_MODEL_NAME", data.MODEL_NAME)
    monkeypatch.setenv("LOOPLINE_MONITOR_CONFIG", str(folder / "monitoring.yaml"))
    for variable, value in label_keys().items():  # a labeller's key and a reviewer's
        monkeypatch.setenv(variable, value)
    output = io.StringIO()
    outcome = example_loop(folder, load_settings(), Console(file=output, width=120))
    said = output.getvalue()

    assert outcome.v1["promoted"] is True, said
    assert outcome.bad_request["status"] == 422, said
    assert f"'{data.BAD_REQUEST['column']}'" in outcome.bad_request["error"]
    normal, shifted = outcome.checks
    assert normal.status == "ok", normal.drift
    assert shifted.status == "drift"
    assert set(data.DRIFTED) <= set(shifted.drift["drifted_columns"]), shifted.drift
    (retraining,) = outcome.retraining
    assert retraining["state"] == "promoted", retraining
    # Every labelled shifted row went in, but the reviewed tenth (which judges the labels).
    assert retraining["dataset"]["labelled"] == 900 - 90
    assert outcome.switched_to == retraining["version"] == "2"
    assert outcome.during_switch["sent"] > 10 and outcome.during_switch["failed"] == 0
    assert outcome.worse["promoted"] is False and outcome.worse["version"] == "3"
    champion = reader(load_settings()).champion(data.MODEL_NAME)
    assert champion.version == "2" and outcome.passed
    assert "significantly better" in champion.tags["gate.reasons"]
