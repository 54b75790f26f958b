"""A local Ray's token lives in loopline's home, not in ~/.ray, unless the user has one."""

import os
import stat

import pytest

from loopline.ml.ray_training import keep_token_in

NAMES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return tmp_path / "user"


def test_a_fresh_machine_gets_a_private_token_in_the_loopline_home(fresh_home, tmp_path):
    keep_token_in(tmp_path / "home")
    token = tmp_path / "home" / "ray" / "auth_token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    first = token.read_text()
    keep_token_in(tmp_path / "home")  # a second training keeps the same token
    assert token.read_text() == first
    assert not (fresh_home / ".ray").exists()


def test_a_users_own_token_is_left_alone(fresh_home, tmp_path):
    (fresh_home / ".ray").mkdir(parents=True)
    (fresh_home / ".ray" / "auth_token").write_text("mine")
    keep_token_in(tmp_path / "home")
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ
    assert not (tmp_path / "home" / "ray").exists()
