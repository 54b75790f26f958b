"""Typed settings read from ``LOOPLINE_*`` environment variables.

Every setting has a default that works on one machine with no set-up; the scale-out
engines are selected by pointing a setting elsewhere (a tracking server, a Ray cluster).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loopline.core.errors import UsageError

if TYPE_CHECKING:
    from loopline.ml.gate import GatePolicy


class SettingsError(UsageError):
    """A ``LOOPLINE_*`` variable holds a value loopline cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    database_url: str
    ray_address: str | None
    model_name: str
    gate_metric: str
    gate_margin: float
    gate_alpha: float = 0.05
    gate_min_rows: int = 30
    gate_tolerance: float = 0.02
    ray_storage_uri: str | None = None
    prefect_port: int = 4200
    prefect_idle_s: float = 600.0
    train_max_failures: int = 2  # worker-group restarts from the last checkpoint, per run
    train_gpu: bool | None = None  # None: train on GPUs when the machine or Ray cluster has them
    # Splits larger than this (read whole, float32) are streamed from Parquet (loopline.ml.streaming)
    train_memory_mb: int = 2048
    # Base images a catalog component may use besides the platform image's (comma-separated)
    allowed_images: tuple[str, ...] = ()

    @property
    def gate(self) -> GatePolicy:
        from loopline.ml.gate import GatePolicy

        return GatePolicy(
            metric=self.gate_metric,
            alpha=self.gate_alpha,
            margin=self.gate_margin,
            min_rows=self.gate_min_rows,
            tolerance=self.gate_tolerance,
        )

    @property
    def artifact_root(self) -> Path:
        return self.home / "artifacts"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def ray_storage(self) -> str:
        """Where Ray Train keeps checkpoints: a folder here, or storage the cluster and the
        pipeline both reach (``LOOPLINE_RAY_STORAGE``, e.g. s3://bucket/ray)."""
        return self.ray_storage_uri or str(self.home / "ray")

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def database_shown(self) -> str:
        """The platform database's URL without its password, for messages and logs."""
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", self.database_url)

    @property
    def logs(self) -> Path:
        """Where engines' internals log (Prefect, Ray, MLflow, the servers)."""
        return self.home / "logs"


GATE_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default ``os.environ``); raise SettingsError naming the fix."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("LOOPLINE_HOME", ".loopline")).expanduser().resolve()
    tracking_uri = env.get("LOOPLINE_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    database_url = _database_url(
        env.get("LOOPLINE_DATABASE_URL") or f"sqlite:///{home / 'loopline.db'}"
    )
    gate_metric = env.get("LOOPLINE_GATE_METRIC", "accuracy")
    if gate_metric not in GATE_METRICS:
        raise SettingsError(
            f"LOOPLINE_GATE_METRIC={gate_metric!r} is not a known metric; "
            f"set it to one of {', '.join(GATE_METRICS)}."
        )
    return Settings(
        home=home,
        tracking_uri=tracking_uri,
        database_url=database_url,
        ray_address=env.get("LOOPLINE_RAY_ADDRESS") or env.get("RAY_ADDRESS") or None,
        model_name=env.get("LOOPLINE_MODEL_NAME", "digits-classifier"),
        gate_metric=gate_metric,
        gate_margin=_float(env, "LOOPLINE_GATE_MARGIN", 0.0),
        gate_alpha=_fraction(env, "LOOPLINE_GATE_ALPHA", 0.05),
        gate_min_rows=_count(env, "LOOPLINE_GATE_MIN_ROWS", 30),
        gate_tolerance=_fraction(env, "LOOPLINE_GATE_TOLERANCE", 0.02),
        prefect_port=_count(env, "LOOPLINE_PREFECT_PORT", 4200),
        train_max_failures=_count(env, "LOOPLINE_TRAIN_MAX_FAILURES", 2),
        train_gpu=_switch(env, "LOOPLINE_TRAIN_GPU"),
        ray_storage_uri=env.get("LOOPLINE_RAY_STORAGE") or None,
        train_memory_mb=_count(env, "LOOPLINE_TRAIN_MEMORY_MB", 2048),
        allowed_images=tuple(
            i.strip() for i in env.get("LOOPLINE_ALLOWED_IMAGES", "").split(",") if i.strip()
        ),
        prefect_idle_s=duration_seconds(
            env.get("LOOPLINE_PREFECT_IDLE", "10m"), "LOOPLINE_PREFECT_IDLE", allow_zero=True
        ),
    )


SWITCH = {
    "auto": None,
    "on": True,
    "true": True,
    "1": True,
    "off": False,
    "false": False,
    "0": False,
}


def _switch(env: dict[str, str], name: str) -> bool | None:
    value = env.get(name, "auto").strip().lower()
    if value not in SWITCH:
        raise SettingsError(f"{name} is {value!r}; set it to auto, on or off.")
    return SWITCH[value]


DURATION = re.compile(r"^(\d+)\s*([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str, where: str, *, allow_zero: bool = False) -> float:
    """``30s``, ``5m``, ``2h`` or ``1d`` in seconds; SettingsError naming ``where`` otherwise."""
    match = DURATION.match(str(text).strip())
    if not match or (int(match.group(1)) == 0 and not allow_zero):
        raise SettingsError(f"{where} is {text!r}; use a number and a unit: 30s, 5m, 2h or 1d.")
    return float(int(match.group(1)) * SECONDS[match.group(2)])


def _database_url(url: str) -> str:
    """SQLite (one host) or PostgreSQL; ``postgresql://`` is driven by psycopg 3."""
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        return url
    if sep and scheme in ("postgresql", "postgres", "postgresql+psycopg") and rest:
        return f"postgresql+psycopg://{rest}"
    shown = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)  # never print the password
    raise SettingsError(
        f"LOOPLINE_DATABASE_URL={shown!r} is not a database URL loopline can use; set it to "
        "sqlite:////path/loopline.db (one host) or postgresql://user:password@host:5432/loopline"
    )


def _count(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit():
        raise SettingsError(f"{name}={raw!r} is not a whole number; set it to e.g. {default}.")
    return int(raw)


def _fraction(env: dict[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 <= value < 1:
        raise SettingsError(f"{name}={value!r} must be in [0, 1); set it to e.g. {default}.")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to e.g. 0.01.") from None
