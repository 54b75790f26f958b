"""One typed settings tree, read from ``LOOPLINE_*`` environment variables.

:data:`VARIABLES` is the whole contract: each variable's name, where it lands in the tree
(``serve.max_batch``), its parser (the type and the error that names the fix), its
default and its help. :func:`load_settings` builds the tree from it, and the
configuration page (``docs/configuration.md``) is generated from it too
(``python -m loopline.core.settings --markdown``); a test fails when they differ.

Every default works on one machine with no set-up; the scale-out engines are selected by
pointing a setting elsewhere (a tracking server, a Ray cluster, PostgreSQL).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loopline.core.errors import UsageError


class SettingsError(UsageError):
    """A ``LOOPLINE_*`` variable holds a value loopline cannot use."""


# -- parsers: (raw text or value, what to name in the error) -> typed value ----------------

DURATION = re.compile(r"^(\d+)\s*([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SWITCH = {
    "auto": None,
    "on": True,
    "true": True,
    "1": True,
    "off": False,
    "false": False,
    "0": False,
}
GATE_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall")


def text(raw: str, where: str) -> str | None:
    return str(raw) or None


def path(raw: str, where: str) -> Path:
    return Path(raw).expanduser().resolve()


def path_or_off(raw: str, where: str) -> Path | None:
    return None if str(raw).strip().lower() == "off" else path(raw, where)


def _in_virtual_environment(folder: str) -> Path | None:
    """``folder`` under the running virtual environment; None outside one (a system
    Python's prefix, /usr, is not the place for what a program writes)."""
    return Path(sys.prefix) / folder if sys.prefix != sys.base_prefix else None


def count(raw: Any, where: str) -> int:
    """A whole number, 0 or more."""
    if isinstance(raw, bool) or not str(raw).strip().isdigit():
        raise SettingsError(f"{where}={raw!r} is not a whole number; set it to e.g. 2.")
    return int(str(raw).strip())


def number(raw: Any, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}={raw!r} is not a number; set it to e.g. 0.01.") from None
    if math.isnan(value):
        raise SettingsError(f"{where}={raw!r} is not a number; set it to e.g. 0.01.")
    return value


def positive(raw: Any, where: str) -> float:
    value = number(raw, where)
    if value <= 0:
        raise SettingsError(f"{where}={raw!r} must be positive; set it to e.g. 2.")
    return value


def positive_count(raw: Any, where: str) -> int:
    value = positive(raw, where)
    return int(value)


def fraction(raw: Any, where: str) -> float:
    """A share in [0, 1): a significance level, a tolerance."""
    value = number(raw, where)
    if not 0 <= value < 1:
        raise SettingsError(f"{where}={value!r} must be in [0, 1); set it to e.g. 0.05.")
    return value


def share(raw: Any, where: str) -> float:
    """A share in [0, 1]: a sample rate."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value <= 1:
        raise SettingsError(f"{where}={raw!r} must be a share from 0 to 1; set it to e.g. 0.01.")
    return value


def switch(raw: str, where: str) -> bool | None:
    """``auto`` (None), ``on`` or ``off``."""
    value = str(raw).strip().lower()
    if value not in SWITCH:
        raise SettingsError(f"{where} is {value!r}; set it to auto, on or off.")
    return SWITCH[value]


def on_off(raw: str, where: str) -> bool:
    value = str(raw).strip().lower()
    if value not in ("on", "off"):
        raise SettingsError(f"{where}={value!r}; set it to on or off.")
    return value == "on"


def duration(raw: str, where: str, *, allow_zero: bool = True) -> float:
    """``30s``, ``5m``, ``2h`` or ``1d`` in seconds; SettingsError naming ``where`` otherwise."""
    match = DURATION.match(str(raw).strip())
    if not match or (int(match.group(1)) == 0 and not allow_zero):
        raise SettingsError(f"{where} is {raw!r}; use a number and a unit: 30s, 5m, 2h or 1d.")
    return float(int(match.group(1)) * SECONDS[match.group(2)])


def positive_duration(raw: str, where: str) -> float:
    """A :func:`duration` above zero."""
    return duration(raw, where, allow_zero=False)


def gate_metric(raw: str, where: str) -> str:
    if raw not in GATE_METRICS:
        raise SettingsError(
            f"{where}={raw!r} is not a known metric; set it to one of {', '.join(GATE_METRICS)}."
        )
    return raw


LABEL_CONFLICTS = ("exclude", "first", "last")


def label_conflicts(raw: str, where: str) -> str:
    value = str(raw).strip().lower()
    if value not in LABEL_CONFLICTS:
        raise SettingsError(f"{where}={raw!r}; set it to one of {', '.join(LABEL_CONFLICTS)}.")
    return value


def names(raw: str, where: str) -> tuple[str, ...]:
    """A comma-separated list."""
    return tuple(i.strip() for i in str(raw).split(",") if i.strip())


def database_url(raw: str, where: str) -> str:
    """SQLite (one host) or PostgreSQL; ``postgresql://`` is driven by psycopg 3."""
    scheme, sep, rest = raw.partition("://")
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        return raw
    if sep and scheme in ("postgresql", "postgres", "postgresql+psycopg") and rest:
        try:  # a port that is no number, an unclosed [IPv6 address: named here, not later
            _ = urlsplit(f"postgresql://{rest}").port
        except ValueError as exc:
            raise SettingsError(
                f"{where}={without_password(raw)!r}: {exc}; write the host as host:5432 "
                "(an IPv6 address as [::1]:5432)"
            ) from None
        return f"postgresql+psycopg://{rest}"
    raise SettingsError(
        f"{where}={without_password(raw)!r} is not a database URL loopline can use; set it to "
        "sqlite:////path/loopline.db (one host) or postgresql://user:password@host:5432/loopline"
    )


def without_password(url: str) -> str:
    """A URL fit for messages and logs: never print the password, whether in the user
    part (up to its last ``@``: a password may hold one) or as a query parameter."""
    url = re.sub(r"://([^:/@]*):[^/?#]*@", r"://\1:***@", url)
    return re.sub(
        r"([?&](?:password|passwd|pwd|sslpassword|secret|token)=)[^&#]*", r"\1***", url, flags=re.I
    )


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for any other database."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use: its affinity, capped by a container's CPU limit
    (cgroup v2 quota), which torch's own count does not see."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


# -- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None
    storage_uri: str | None = None


@dataclass(frozen=True)
class TrainSettings:
    max_failures: int = 2  # worker-group restarts from the last checkpoint, per run
    gpu: bool | None = None  # None: train on GPUs when the machine or Ray cluster has them
    memory_mb: int = 2048  # larger splits (read whole, float32) are streamed (ml.streaming)
    checkpoint_seconds: float = 30.0  # the least time between two checkpoints; 0: each epoch


@dataclass(frozen=True)
class GateSettings:
    """The champion/challenger gate's policy (:mod:`loopline.ml.gate`)."""

    metric: str = "accuracy"
    alpha: float = 0.05  # the test's one-sided significance level
    margin: float = 0.0  # the challenger must also beat the champion by more than this
    min_rows: int = 30  # fewer labelled rows than this cannot decide
    tolerance: float = 0.02  # the most the challenger may lose on the guardrail set
    class_tolerance: float = 0.05  # ... and on any one class of it (recall)


@dataclass(frozen=True)
class PrefectSettings:
    port: int = 4200
    idle_s: float = 600.0
    template: Path | None = None  # a migrated database new homes copy; None: none


@dataclass(frozen=True)
class ServeSettings:
    version: str | None = None  # a pinned registry version; None follows the champion alias
    poll_s: float = 2.0  # how often the server checks whether the champion moved
    batching: bool = True
    max_batch: int = 256
    api_workers: int = 1
    max_bytes: int = 1_000_000
    max_instances: int = 256
    threads: int = 1  # torch's threads for the forward pass
    # Slow and greedy clients (serving/connections.py) and overload (serving/admission.py).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_s: float = 5.0
    max_connections: int = 2048
    max_client_connections: int = 128
    max_queue_s: float = 1.0
    drain_s: float = 20.0
    trace_sample_rate: float = 0.0  # the share of requests traced with OpenTelemetry
    api_key: str | None = field(default=None, repr=False)  # never printed
    api_key_file: Path | None = None


@dataclass(frozen=True)
class LabelSettings:
    """Who may label (``/feedback``), and what a conflicting label means."""

    keys: str | None = field(default=None, repr=False)  # NAME=KEY,...; never printed
    keys_file: Path | None = None
    reviewers: tuple[str, ...] = ()  # the keys whose labels are reviewed: trusted
    conflicts: str = "exclude"


@dataclass(frozen=True)
class MonitorSettings:
    config: Path | None = None  # None: LOOPLINE_HOME/monitoring.yaml
    alert_url: str | None = field(default=None, repr=False)  # usually carries a token
    kfp_host: str | None = None


@dataclass(frozen=True)
class CatalogSettings:
    allowed_images: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeSettings:
    """Set by loopline for the processes it starts, and by the image build."""

    progress_file: Path | None = None
    git_sha: str | None = None


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    database_url: str
    model_name: str = "digits-classifier"
    ray: RaySettings = RaySettings()
    train: TrainSettings = TrainSettings()
    gate: GateSettings = GateSettings()
    prefect: PrefectSettings = PrefectSettings()
    serve: ServeSettings = ServeSettings()
    labels: LabelSettings = LabelSettings()
    monitor: MonitorSettings = MonitorSettings()
    catalog: CatalogSettings = CatalogSettings()
    runtime: RuntimeSettings = RuntimeSettings()

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
        return self.ray.storage_uri or str(self.home / "ray")

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def monitor_config(self) -> Path:
        return self.monitor.config or self.home / "monitoring.yaml"

    @property
    def database_shown(self) -> str:
        """The platform database's URL without its password, for messages and logs."""
        return without_password(self.database_url)

    @property
    def logs(self) -> Path:
        """Where engines' internals log (Prefect, Ray, MLflow, the servers)."""
        return self.home / "logs"


@dataclass(frozen=True)
class Variable:
    name: str
    at: str  # where it lands in the tree: "home", "serve.max_batch"
    parse: Callable[[Any, str], Any]
    help: str
    # The raw default; a callable derives it from the values read so far; None: unset.
    default: str | Callable[[dict[str, Any]], Any] | None = None
    shown_default: str = ""  # the default as the docs show it, when derived
    fallback: str | None = None  # another variable read when this one is unset


# A table reads better one variable a line than as the formatter would wrap it.
# fmt: off
VARIABLES: tuple[Variable, ...] = (
    Variable("LOOPLINE_HOME", "home", path, "Root of artifacts, stores, checkpoints and logs.", ".loopline", "./.loopline"),
    Variable("LOOPLINE_DATABASE_URL", "database_url", database_url, "The platform database (prediction log, labels, checks, triggers, catalog); PostgreSQL to scale out.", lambda v: f"sqlite:///{v['home'] / 'loopline.db'}", "sqlite:///$LOOPLINE_HOME/loopline.db"),
    Variable("LOOPLINE_TRACKING_URI", "tracking_uri", text, "MLflow tracking and registry; a tracking server to scale out.", lambda v: f"sqlite:///{v['home'] / 'mlflow.db'}", "sqlite:///$LOOPLINE_HOME/mlflow.db"),
    Variable("LOOPLINE_MODEL_NAME", "model_name", text, "The registered model that commands act on by default.", "digits-classifier"),
    Variable("LOOPLINE_RAY_ADDRESS", "ray.address", text, "A Ray cluster (for example KubeRay); unset: local Ray. `RAY_ADDRESS` is read when this is unset.", fallback="RAY_ADDRESS"),
    Variable("LOOPLINE_RAY_STORAGE", "ray.storage_uri", text, "Ray Train checkpoints; storage every Ray node reaches (s3://...) on a cluster.", shown_default="$LOOPLINE_HOME/ray"),
    Variable("LOOPLINE_TRAIN_MAX_FAILURES", "train.max_failures", count, "Worker-group restarts from the last checkpoint within one training.", "2"),
    Variable("LOOPLINE_TRAIN_GPU", "train.gpu", switch, "`on`: train on GPUs (a cluster scaling GPU workers from zero shows none until asked); `auto`: when the Ray cluster has GPUs; `off`.", "auto"),
    Variable("LOOPLINE_TRAIN_MEMORY_MB", "train.memory_mb", count, "A worker's memory budget for data: larger train, validation or test splits are streamed from Parquet.", "2048"),
    Variable("LOOPLINE_TRAIN_CHECKPOINT_SECONDS", "train.checkpoint_seconds", duration, "The least time between two training checkpoints (each at an epoch's end; the final epoch always writes one); a killed training resumes from the last. `0s`: every epoch.", "30s"),
    Variable("LOOPLINE_GATE_METRIC", "gate.metric", gate_metric, f"The metric the gate compares: {', '.join(GATE_METRICS)}.", "accuracy"),
    Variable("LOOPLINE_GATE_ALPHA", "gate.alpha", fraction, "The gate's one-sided significance level.", "0.05"),
    Variable("LOOPLINE_GATE_MIN_ROWS", "gate.min_rows", count, "Fewer labelled rows than this cannot decide.", "30"),
    Variable("LOOPLINE_GATE_TOLERANCE", "gate.tolerance", fraction, "The most a challenger may lose on the champion's guardrail rows.", "0.02"),
    Variable("LOOPLINE_GATE_CLASS_TOLERANCE", "gate.class_tolerance", fraction, "The most a challenger may lose on any one class of the guardrail rows (recall).", "0.05"),
    Variable("LOOPLINE_GATE_MARGIN", "gate.margin", number, "The challenger must also beat the champion by more than this.", "0"),
    Variable("LOOPLINE_PREFECT_PORT", "prefect.port", count, "This home's Prefect server: the port it prefers; when another process holds it, the OS chooses a free one (`$LOOPLINE_HOME/prefect/server.json` records the port bound).", "4200"),
    Variable("LOOPLINE_PREFECT_IDLE", "prefect.idle_s", positive_duration, "This home's Prefect server stops after this long unused by any loopline command (its start-up does not count); `loopline server` keeps it up while it runs.", "10m"),
    Variable("LOOPLINE_PREFECT_TEMPLATE", "prefect.template", path_or_off, "The folder (under the virtual environment by default) of the migrated Prefect database a new home's server copies instead of migrating its own; the first server that migrates writes it. `off`: every new home migrates its own; a folder it cannot write means no template.", lambda v: _in_virtual_environment("var/loopline/prefect"), "sys.prefix/var/loopline/prefect in a virtual environment, else off"),
    Variable("LOOPLINE_SERVE_VERSION", "serve.version", text, "Pin the served registry version (`loopline serve --version`); unset: follow `champion`."),
    Variable("LOOPLINE_SERVE_POLL_S", "serve.poll_s", positive, "How often a server checks whether `champion` moved, in seconds.", "2"),
    Variable("LOOPLINE_SERVE_BATCHING", "serve.batching", on_off, "Merge concurrent requests into one forward pass (`--no-batching` turns it off).", "on"),
    Variable("LOOPLINE_SERVE_MAX_BATCH", "serve.max_batch", positive_count, "Rows per forward pass.", "256"),
    Variable("LOOPLINE_SERVE_WORKERS", "serve.api_workers", positive_count, "Front-door worker processes.", "1"),
    Variable("LOOPLINE_SERVE_THREADS", "serve.threads", positive_count, "Torch threads for the forward pass; one CPU stays with HTTP, validation and the log (a container's CPU limit counts).", lambda v: max(1, usable_cpus() - 1), "usable CPUs - 1 (at least 1)"),
    Variable("LOOPLINE_SERVE_TRACE_SAMPLE_RATE", "serve.trace_sample_rate", share, "Share of requests traced with OpenTelemetry, to the exporter in BentoML's configuration; at 0 no span is opened at all.", "0"),
    Variable("LOOPLINE_SERVE_MAX_BYTES", "serve.max_bytes", positive_count, "The largest request body, in bytes.", "1000000"),
    Variable("LOOPLINE_SERVE_MAX_INSTANCES", "serve.max_instances", positive_count, "The most instances in one request.", "256"),
    Variable("LOOPLINE_SERVE_HEADER_TIMEOUT_S", "serve.header_timeout_s", positive, "A request line and headers (or a new connection's first request) must arrive within this, in seconds; else 408 and the connection is closed.", "10"),
    Variable("LOOPLINE_SERVE_BODY_TIMEOUT_S", "serve.body_timeout_s", positive, "A request body must arrive within this after its headers, in seconds; else 408 and the connection is closed.", "30"),
    Variable("LOOPLINE_SERVE_IDLE_S", "serve.idle_s", positive, "An idle keep-alive connection is closed after this, in seconds (uvicorn's `timeout_keep_alive`).", "5"),
    Variable("LOOPLINE_SERVE_MAX_CONNECTIONS", "serve.max_connections", positive_count, "Open connections per worker; beyond it a new one gets 503 and is closed.", "2048"),
    Variable("LOOPLINE_SERVE_MAX_CLIENT_CONNECTIONS", "serve.max_client_connections", positive_count, "Open connections per worker from one client address; beyond it a new one gets 503 and is closed.", "128"),
    Variable("LOOPLINE_SERVE_MAX_QUEUE_S", "serve.max_queue_s", positive, "A prediction that would wait longer than this behind the queued rows gets 429 with Retry-After, in seconds.", "1"),
    Variable("LOOPLINE_SERVE_DRAIN_S", "serve.drain_s", positive, "On SIGTERM, new connections are refused and requests in flight get this long to finish, in seconds (`loopline serve` passes it as uvicorn's `timeout_graceful_shutdown`; in a Bento's container, the pod's grace period bounds it).", "20"),
    Variable("LOOPLINE_API_KEY", "serve.api_key", text, "Require this key in `X-API-Key` on `/predict`; unset: open. It cannot label."),
    Variable("LOOPLINE_API_KEY_FILE", "serve.api_key_file", path, "A file holding the API key (a mounted Kubernetes Secret), read when `LOOPLINE_API_KEY` is unset."),
    Variable("LOOPLINE_LABEL_KEYS", "labels.keys", text, "Keys that may label (`X-API-Key` on `/feedback`), `NAME=KEY` separated by commas; each label records its key's name. A bare key is named `labeller`. Unset, with no file: `/feedback` is closed."),
    Variable("LOOPLINE_LABEL_KEYS_FILE", "labels.keys_file", path, "A file of labelling keys, one `NAME=KEY` per line (a mounted Kubernetes Secret), read when `LOOPLINE_LABEL_KEYS` is unset."),
    Variable("LOOPLINE_LABEL_REVIEWERS", "labels.reviewers", names, "Names of labelling keys whose labels are reviewed (comma-separated): never trained on, they judge the other labels and the retrained model.", ""),
    Variable("LOOPLINE_LABEL_CONFLICTS", "labels.conflicts", label_conflicts, "An item given different labels: `exclude` it from quality and retraining, or take its `first` or `last` label.", "exclude"),
    Variable("LOOPLINE_MONITOR_CONFIG", "monitor.config", path, "The monitoring policy (YAML).", shown_default="$LOOPLINE_HOME/monitoring.yaml"),
    Variable("LOOPLINE_ALERT_URL", "monitor.alert_url", text, "Where alerts go: a JSON webhook or any apprise URL; wins over the policy's `alert_url` (keep it in a Secret: it usually carries a token)."),
    Variable("LOOPLINE_KFP_HOST", "monitor.kfp_host", text, "Retraining runs on this Kubeflow Pipelines API."),
    Variable("LOOPLINE_ALLOWED_IMAGES", "catalog.allowed_images", names, "Base images a catalog component may use besides the platform image (comma-separated).", ""),
    Variable("LOOPLINE_PROGRESS_FILE", "runtime.progress_file", path, "Set by loopline for a step it runs: the file the step reports its progress to."),
    Variable("LOOPLINE_GIT_SHA", "runtime.git_sha", text, "Set by the image build: the code version lineage records (else `git rev-parse`)."),
)
# fmt: on
BY_NAME = {v.name: v for v in VARIABLES}


def read(name: str, env: dict[str, str] | None = None) -> Any:
    """One variable, parsed: for code that needs a single value before (or without)
    the whole tree, such as a step reading its progress file."""
    return _value(BY_NAME[name], dict(os.environ if env is None else env), {})


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """The tree from ``env`` (default ``os.environ``); SettingsError naming the fix."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    for variable in VARIABLES:
        values[variable.at] = _value(variable, env, values)
    top = {k: v for k, v in values.items() if "." not in k}
    sections: dict[str, dict[str, Any]] = {}
    for at, value in values.items():
        if "." in at:
            section, name = at.split(".")
            sections.setdefault(section, {})[name] = value
    defaults = Settings(**top)
    return Settings(**top, **{k: type(getattr(defaults, k))(**v) for k, v in sections.items()})


def _value(variable: Variable, env: dict[str, str], values: dict[str, Any]) -> Any:
    raw = env.get(variable.name) or (env.get(variable.fallback) if variable.fallback else None)
    if raw is None or raw == "":
        default = variable.default
        if callable(default):
            return default(values)
        if default is None:
            return None
        raw = default
    return variable.parse(raw, variable.name)


def markdown() -> str:
    """The configuration page: every variable with its default and meaning."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from loopline/core/settings.py: "
        "python -m loopline.core.settings --markdown > docs/configuration.md -->",
        "",
        "Every setting is an environment variable. A bad value exits with code 2 and a "
        "message that names the variable and the fix.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for v in VARIABLES:
        default = v.shown_default or ("" if callable(v.default) else v.default or "")
        shown = f"`{default}`" if default else "unset"
        lines.append(f"| `{v.name}` | {shown} | {v.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m loopline.core.settings --markdown
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m loopline.core.settings --markdown")
    sys.stdout.write(markdown())
