"""Monitoring policies come from configuration; a bad one is a clear error naming the fix."""

import pytest

from loopline.core.settings import load_settings
from loopline.monitoring.policy import Policy, PolicyError, load_policy, parse_policy


def test_defaults_without_a_file_and_values_from_yaml(home):
    settings = load_settings()
    assert load_policy(settings) == Policy()
    settings.home.mkdir(parents=True)
    (settings.home / "monitoring.yaml").write_text(
        "drift_share: 0.3\nmin_rows: 50\ncooldown: 2h\ntriggers: [quality]\n"
        "alert_url: json://localhost\nretrain_engine: inprocess\n"
    )
    policy = load_policy(settings)
    assert (policy.drift_share, policy.min_rows, policy.cooldown_s) == (0.3, 50, 7200.0)
    assert policy.triggers == ("quality",) and policy.retrain_engine == "inprocess"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"drift_shar": 0.3}, "unknown setting(s) drift_shar"),
        ({"drift_share": 2}, "use a number in (0, 1]"),
        ({"min_rows": -1}, "use a whole number"),
        ({"cooldown": "soon"}, "use a number and a unit: 30s, 5m, 2h or 1d"),
        ({"triggers": ["vibes"]}, "triggers must be a list drawn from data_drift"),
        ({"retrain_engine": "cron"}, "retrain_engine must be one of auto"),
    ],
)
def test_bad_settings_are_named_with_the_fix(raw, says):
    with pytest.raises(PolicyError, match=None) as caught:
        parse_policy(raw, "monitoring.yaml")
    assert says in str(caught.value) and "monitoring.yaml" in str(caught.value)


def test_invalid_yaml_is_a_policy_error(home):
    settings = load_settings()
    settings.home.mkdir(parents=True)
    (settings.home / "monitoring.yaml").write_text("drift_share: [0.3\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(settings)


PIPELINE = """
from kfp import dsl


@dsl.component(base_image="loopline-platform")
def echo(text: str) -> str:
    return text


@dsl.pipeline(name="mine")
def mine({parameters}):
    echo(text=model_name)
"""


def _project(tmp_path, parameters: str, models: str):
    (tmp_path / "pipeline.py").write_text(PIPELINE.format(parameters=parameters))
    (tmp_path / "monitoring.yaml").write_text(f"min_rows: 10\nmodels:\n{models}")
    return tmp_path / "monitoring.yaml"


def test_a_model_s_own_retraining_pipeline_is_read_relative_to_the_policy(tmp_path):
    from loopline.monitoring.retrain import check_pipeline

    policy_file = _project(
        tmp_path,
        'dataset: str, model_name: str = "m", rows: int = 1',
        "  m:\n    pipeline: pipeline.py\n    parameters: {rows: 5}\n",
    )
    settings = load_settings(
        {"LOOPLINE_HOME": str(tmp_path / "home"), "LOOPLINE_MONITOR_CONFIG": str(policy_file)}
    )
    policy = load_policy(settings)
    spec = policy.pipelines["m"]
    assert spec.source == str(tmp_path / "pipeline.py") and spec.parameters == {"rows": 5}
    assert set(check_pipeline("m", spec).parameter_names()) == {"dataset", "model_name", "rows"}


@pytest.mark.parametrize(
    ("models", "says"),
    [
        ("  m: {}\n", "models.m needs pipeline"),
        ("  m:\n    pipeline: nowhere.py\n", "pipeline .*nowhere.py does not exist"),
        ("  m:\n    pipeline: pipeline.py\n    extra: 1\n", "unknown key.s. extra"),
        ("  m:\n    pipeline: pipeline.py\n    parameters: [1]\n", "parameters must map"),
    ],
)
def test_a_bad_models_section_is_named(tmp_path, models, says):
    policy_file = _project(tmp_path, "dataset: str", models)
    import yaml

    with pytest.raises(PolicyError, match=says):
        parse_policy(yaml.safe_load(policy_file.read_text()), "x", base=tmp_path)


def test_a_retraining_pipeline_without_the_dataset_input_exits_2_before_anything_runs(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    policy_file = _project(tmp_path, 'model_name: str = "m"', "  m:\n    pipeline: pipeline.py\n")
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(tmp_path / "home"),
        "LOOPLINE_MONITOR_CONFIG": str(policy_file),
    }
    env.pop("LOOPLINE_TRACKING_URI", None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "loopline"), "monitor", "--model", "m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "has no parameter dataset" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
