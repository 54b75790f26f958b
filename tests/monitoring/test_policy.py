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
