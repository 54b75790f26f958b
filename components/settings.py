"""Typed settings read from ``LOOPLINE_*`` environment variables.

Every setting has a default that works on one machine with no set-up; the scale-out
engines are selected by pointing a setting elsewhere (a tracking server, a Ray cluster).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PLATFORM_IMAGE = "ghcr.io/loopline-dev/loopline:0.1.0-python3.11"
"""The image every built-in component runs in; built from ``infra/``."""


class SettingsError(ValueError):
    """A ``LOOPLINE_*`` variable holds a value loopline cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    ray_address: str | None
    model_name: str
    gate_metric: str
    gate_margin: float

    @property
    def artifact_root(self) -> Path:
        return self.home / "artifacts"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def ray_storage(self) -> Path:
        return self.home / "ray"

    @property
    def prediction_log(self) -> Path:
        return self.home / "predictions" / "predictions.db"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"


GATE_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default ``os.environ``); raise SettingsError naming the fix."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("LOOPLINE_HOME", ".loopline")).expanduser().resolve()
    tracking_uri = env.get("LOOPLINE_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    gate_metric = env.get("LOOPLINE_GATE_METRIC", "accuracy")
    if gate_metric not in GATE_METRICS:
        raise SettingsError(
            f"LOOPLINE_GATE_METRIC={gate_metric!r} is not a known metric; "
            f"set it to one of {', '.join(GATE_METRICS)}."
        )
    return Settings(
        home=home,
        tracking_uri=tracking_uri,
        ray_address=env.get("LOOPLINE_RAY_ADDRESS") or env.get("RAY_ADDRESS") or None,
        model_name=env.get("LOOPLINE_MODEL_NAME", "digits-classifier"),
        gate_metric=gate_metric,
        gate_margin=_float(env, "LOOPLINE_GATE_MARGIN", 0.0),
    )


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to e.g. 0.01.") from None
