"""When monitoring raises the alarm and starts retraining, read from configuration.

The policy lives in ``LOOPLINE_HOME/monitoring.yaml`` (or the file that
``LOOPLINE_MONITOR_CONFIG`` names); every key is optional:

```yaml
drift_share: 0.5        # share of drifted features that counts as data drift
min_rows: 200           # a window smaller than this is not judged
max_rows: 20000         # rows per side that Evidently sees; larger windows are sampled
cooldown: 1h            # no new retraining this soon after the last one for the model
lease: 10m              # a started retraining's claim; a dead monitor's expires, another takes over
triggers: [data_drift, prediction_drift]   # and/or quality
min_accuracy: 0.8       # the quality trigger: accuracy on labelled rows below this
max_mae: 25.0           # the quality trigger for a regressor: MAE on labelled rows above this
min_labels: 100         # labelled rows a pending retraining waits for
min_reviewed: 20        # ... of which reviewed by a key in LOOPLINE_LABEL_REVIEWERS
max_disagreement: 0.2   # a source whose labels disagree with the reviewed ones more: held
alert_url: https://hooks.example.com/loopline   # webhook (JSON POST) or an apprise URL;
                                                # LOOPLINE_ALERT_URL overrides it
retrain_engine: auto    # auto, inprocess, deployment (Prefect) or kubeflow
retrain_epochs: 20
retrain_parameters: {lr: 0.0005}   # loopline's own models: hyper-parameters that replace
                                   # the champion's recorded ones (the rest are reused)
models:                 # a model of your own retrains with your own pipeline
  churn:
    pipeline: pipelines/churn.py    # a .py file or compiled IR; relative to this file
    parameters: {rows: 3000}        # passed to it as they are
    dataset_parameter: dataset      # the input that gets the retraining Parquet file
```
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from loopline.core.errors import UsageError
from loopline.core.settings import Settings, SettingsError
from loopline.core.settings import duration as settings_duration

TRIGGERS = ("data_drift", "prediction_drift", "quality")
RETRAIN_ENGINES = ("auto", "inprocess", "deployment", "kubeflow")


class PolicyError(UsageError):
    """The monitoring configuration holds a value loopline cannot use."""


@dataclass(frozen=True)
class Policy:
    drift_share: float = 0.5
    min_rows: int = 200
    max_rows: int = 20_000
    cooldown_s: float = 3600.0
    lease_s: float = 600.0
    triggers: tuple[str, ...] = ("data_drift", "prediction_drift")
    min_accuracy: float = 0.8
    max_mae: float | None = None
    min_labels: int = 100
    min_reviewed: int = 20
    max_disagreement: float = 0.2
    alert_url: str | None = None
    retrain_engine: str = "auto"
    retrain_epochs: int = 20
    retrain_parameters: dict = field(default_factory=dict)  # over the champion's own
    pipelines: dict[str, RetrainPipeline] = field(default_factory=dict)  # by model name


@dataclass(frozen=True)
class RetrainPipeline:
    """The user's pipeline that retrains one model, from ``models:`` in the policy."""

    source: str
    parameters: dict = field(default_factory=dict)
    dataset_parameter: str = "dataset"


def load_policy(settings: Settings) -> Policy:
    path = settings.monitor_config
    if not path.exists():
        return _with_env(Policy(), settings)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path} is not valid YAML ({exc}); fix the file.") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{path} must be a mapping of setting: value.")
    return _with_env(parse_policy(raw, str(path), base=path.parent), settings)


def _with_env(policy: Policy, settings: Settings) -> Policy:
    """``LOOPLINE_ALERT_URL`` (from a Secret: it usually carries a token) wins over the file."""
    url = settings.monitor.alert_url
    return replace(policy, alert_url=url) if url else policy


def parse_policy(raw: dict, where: str = "the policy", base: Path = Path()) -> Policy:
    known = {f.name for f in fields(Policy)} - {"cooldown_s", "lease_s", "pipelines"} | {
        "cooldown",
        "lease",
        "models",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    values: dict = {}
    for name in ("drift_share", "min_accuracy", "max_disagreement"):
        if name in raw:
            values[name] = _fraction(raw[name], name, where)
    for name in ("min_rows", "max_rows", "min_labels", "min_reviewed", "retrain_epochs"):
        if name in raw:
            values[name] = _count(raw[name], name, where)
    if "cooldown" in raw:
        values["cooldown_s"] = duration_seconds(str(raw["cooldown"]), f"{where}: cooldown")
    if "lease" in raw:
        values["lease_s"] = duration_seconds(str(raw["lease"]), f"{where}: lease")
        if values["lease_s"] <= 0:
            raise PolicyError(f"{where}: lease must be longer than 0s, e.g. 10m.")
    if "max_mae" in raw:
        value = raw["max_mae"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise PolicyError(f"{where}: max_mae must be a positive number, e.g. 25.")
        values["max_mae"] = float(value)
    if "triggers" in raw:
        triggers = raw["triggers"]
        if not isinstance(triggers, list) or not set(triggers) <= set(TRIGGERS) or not triggers:
            raise PolicyError(f"{where}: triggers must be a list drawn from {', '.join(TRIGGERS)}.")
        values["triggers"] = tuple(triggers)
    if "retrain_engine" in raw:
        if raw["retrain_engine"] not in RETRAIN_ENGINES:
            raise PolicyError(
                f"{where}: retrain_engine must be one of {', '.join(RETRAIN_ENGINES)}."
            )
        values["retrain_engine"] = raw["retrain_engine"]
    if raw.get("alert_url"):
        values["alert_url"] = str(raw["alert_url"])
    if "retrain_parameters" in raw:
        values["retrain_parameters"] = _hyperparameters(raw["retrain_parameters"], where)
    if "models" in raw:
        values["pipelines"] = _pipelines(raw["models"], where, base)
    return Policy(**values)


def _hyperparameters(raw, where: str) -> dict:
    from loopline.ml.hyperparameters import PARAMETERS

    names = sorted(p.name for p in PARAMETERS)
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: retrain_parameters must map hyper-parameter names to values.")
    unknown = sorted(set(map(str, raw)) - set(names))
    if unknown:
        raise PolicyError(
            f"{where}: retrain_parameters: unknown hyper-parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(names)}."
        )
    return {str(k): v for k, v in raw.items()}


def _pipelines(raw, where: str, base: Path) -> dict[str, RetrainPipeline]:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: models must map each model name to its pipeline.")
    found = {}
    for name, spec in raw.items():
        at = f"{where}: models.{name}"
        if not isinstance(spec, dict) or not isinstance(spec.get("pipeline"), str):
            raise PolicyError(f"{at} needs pipeline: a .py file or compiled IR.")
        unknown = sorted(set(spec) - {"pipeline", "parameters", "dataset_parameter"})
        if unknown:
            raise PolicyError(
                f"{at}: unknown key(s) {', '.join(unknown)}; "
                "known: pipeline, parameters, dataset_parameter."
            )
        parameters = spec.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise PolicyError(f"{at}.parameters must map parameter names to values.")
        source = Path(spec["pipeline"]).expanduser()
        source = source if source.is_absolute() else base / source
        if not source.is_file():
            raise PolicyError(f"{at}: pipeline {source} does not exist.")
        found[str(name)] = RetrainPipeline(
            str(source), parameters, str(spec.get("dataset_parameter", "dataset"))
        )
    return found


def duration_seconds(text: str, where: str) -> float:
    try:
        return settings_duration(text, where)
    except SettingsError as exc:
        raise PolicyError(str(exc)) from None


def _fraction(value, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise PolicyError(f"{where}: {name} is {value!r}; use a number in (0, 1], e.g. 0.5.")
    return float(value)


def _count(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyError(f"{where}: {name} is {value!r}; use a whole number, e.g. 200.")
    return value
