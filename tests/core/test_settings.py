import re
from pathlib import Path

import pytest

from loopline.core.settings import (
    BY_NAME,
    VARIABLES,
    SettingsError,
    load_settings,
    markdown,
    names,
    path,
    path_or_off,
    text,
)


def test_defaults_live_under_loopline_home(tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.artifact_root == tmp_path / "artifacts"
    assert settings.ray.address is None


def test_ray_address_selects_a_cluster():
    assert load_settings({"RAY_ADDRESS": "ray://head:10001"}).ray.address == "ray://head:10001"


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


ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"\bLOOPLINE_[A-Z0-9_]*[A-Z0-9]\b")


def test_every_variable_the_code_and_manifests_read_is_in_the_tree():
    """One tree: a LOOPLINE_* name anywhere in the package or the manifests is a
    variable of :data:`VARIABLES` (a prefix such as ``LOOPLINE_SERVE_`` is not a name)."""
    files = [*ROOT.joinpath("loopline").rglob("*.py"), *ROOT.joinpath("infra").rglob("*.yaml")]
    named = {n for f in files for n in NAMED.findall(f.read_text())}
    assert named - set(BY_NAME) == set()


def test_the_configuration_page_is_generated_from_the_tree():
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text() == markdown(), (
        "docs/configuration.md is stale: python -m loopline.core.settings --markdown "
        "> docs/configuration.md"
    )


CAN_FAIL = [v for v in VARIABLES if v.parse not in (text, path, path_or_off, names)]


@pytest.mark.parametrize("variable", CAN_FAIL, ids=[v.name for v in CAN_FAIL])
def test_every_checked_variable_refuses_nonsense_naming_itself(variable):
    with pytest.raises(SettingsError, match=variable.name) as info:
        load_settings({variable.name: "no such value!"})
    assert "set it to" in str(info.value) or "use a number and a unit" in str(info.value)


def test_every_default_loads_and_the_sections_hold_them(tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    assert settings.serve.max_batch == 256 and settings.gate.metric == "accuracy"
    assert settings.prefect.idle_s == 600.0 and settings.train.gpu is None
    assert settings.monitor_config == tmp_path / "monitoring.yaml"
    assert "s3cret" not in repr(load_settings({"LOOPLINE_API_KEY": "s3cret"}))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3@cr3t@host:5432/db", "postgresql://u:***@host:5432/db"),
        (
            "postgresql://u@h/db?sslmode=require&password=x1&a=b",
            "postgresql://u@h/db?sslmode=require&password=***&a=b",
        ),
        ("postgresql://h/db?PASSWORD=zz", "postgresql://h/db?PASSWORD=***"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_a_password_never_shows_wherever_the_url_holds_it(url, shown):
    from loopline.core.settings import without_password

    assert without_password(url) == shown


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://u:pw@host:notaport/db", "Port could not be cast"),
        ("postgresql://u:pw@[::1/db", "Invalid IPv6 URL"),
    ],
)
def test_a_database_url_with_a_bad_host_or_port_is_a_settings_error(url, says):
    with pytest.raises(SettingsError, match="LOOPLINE_DATABASE_URL") as raised:
        load_settings({"LOOPLINE_DATABASE_URL": url})
    assert says in str(raised.value) and "pw" not in str(raised.value)


def test_a_sqlite_database_in_a_folder_that_cannot_be_made_exits_2(tmp_path):
    from typer.testing import CliRunner

    from loopline.cli import app

    result = CliRunner().invoke(
        app,
        ["monitor", "--no-retrain"],
        env={"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": "sqlite:////proc/nope/x.db"},
    )
    assert result.exit_code == 2, result.output
    assert "LOOPLINE_DATABASE_URL" in result.output and "cannot be made" in result.output
