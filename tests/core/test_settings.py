import pytest

from loopline.core.settings import SettingsError, load_settings


def test_defaults_live_under_loopline_home(tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.artifact_root == tmp_path / "artifacts"
    assert settings.ray_address is None


def test_ray_address_selects_a_cluster():
    assert load_settings({"RAY_ADDRESS": "ray://head:10001"}).ray_address == "ray://head:10001"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LOOPLINE_GATE_METRIC": "auc"}, "LOOPLINE_GATE_METRIC"),
        ({"LOOPLINE_GATE_MARGIN": "a lot"}, "LOOPLINE_GATE_MARGIN"),
    ],
)
def test_bad_values_name_the_variable_and_the_fix(env, named):
    with pytest.raises(SettingsError, match=named) as info:
        load_settings(env)
    assert "set it to" in str(info.value)
