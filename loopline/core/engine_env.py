"""The environment loopline gives the engines it runs: state under LOOPLINE_HOME, no
telemetry, and the engines' own log lines in files instead of the terminal.

Prefect keeps its database and profiles in ``PREFECT_HOME`` (``~/.prefect`` unless set),
which every Prefect project of the user shares; loopline gives each ``LOOPLINE_HOME`` its
own, always (a command run from another loopline process gets its own home's, too). The
telemetry switches are defaults a user's export overrides. All must be in ``os.environ``
before Prefect is imported, because Prefect reads its settings once, at import.
"""

from __future__ import annotations

import os

import yaml

from loopline.core.settings import Settings

# No engine phones home: on a closed network each attempt is a failed DNS lookup in the log.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "BENTOML_DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
PREFECT_LOG = "prefect.log"


def engine_environment(settings: Settings, *, verbose: bool = False) -> dict[str, str]:
    env = {
        "PREFECT_HOME": str(settings.prefect_home),
        "MPLCONFIGDIR": str(settings.home / "matplotlib"),  # its font cache, not in ~/.cache
        # loopline's own loggers also run outside flows (monitor, alerts): no API warning.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        **TELEMETRY_OFF,
    }
    if not verbose:
        env["PREFECT_LOGGING_SETTINGS_PATH"] = str(_prefect_logging_file(settings))
    return env


OWNED = ("PREFECT_HOME", "PREFECT_LOGGING_SETTINGS_PATH")


def apply(settings: Settings, *, verbose: bool = False) -> None:
    """Export :func:`engine_environment` for this process and its children. Writes
    nothing: commands that only read leave no files behind."""
    env = engine_environment(settings, verbose=verbose)
    for key, value in env.items():
        if key in OWNED:
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
    if verbose:
        os.environ.pop("PREFECT_LOGGING_SETTINGS_PATH", None)


def prepare_logs(settings: Settings) -> None:
    """Create the log folder and Prefect's logging configuration (before Prefect loads)."""
    settings.logs.mkdir(parents=True, exist_ok=True)
    target = _prefect_logging_file(settings)
    text = yaml.safe_dump(_prefect_logging(settings.logs / PREFECT_LOG), sort_keys=False)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def _prefect_logging_file(settings: Settings):
    return settings.logs / "prefect-logging.yml"


def _prefect_logging(log_file) -> dict:
    """Prefect's default logging configuration with its console handler writing to a file.

    The API handler stays, so flow and task logs still reach the Prefect UI.
    """
    standard = {
        "()": "prefect.logging.formatters.PrefectFormatter",
        "format": "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
        "flow_run_fmt": "%(asctime)s.%(msecs)03d | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
        "task_run_fmt": "%(asctime)s.%(msecs)03d | %(levelname)-7s | Task run %(task_run_name)r - %(message)s",
        "datefmt": "%Y-%m-%d %H:%M:%S",
    }
    file_handler = {
        "level": 0,
        "class": "logging.FileHandler",
        "formatter": "standard",
        "filename": str(log_file),
        "delay": True,
    }
    level = "${PREFECT_LOGGING_LEVEL}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"standard": standard},
        "handlers": {
            "console": file_handler,
            "debug": file_handler,
            "api": {"level": 0, "class": "prefect.logging.handlers.APILogHandler"},
            "worker_api": {"level": 0, "class": "prefect.logging.handlers.WorkerAPILogHandler"},
        },
        "loggers": {
            "prefect": {"level": level},
            "prefect.extra": {"level": level, "handlers": ["api"], "propagate": False},
            "prefect.flow_runs": {"level": "NOTSET", "handlers": ["api"]},
            "prefect.task_runs": {"level": "NOTSET", "handlers": ["api"]},
            "prefect.workers": {"level": "NOTSET", "handlers": ["worker_api"]},
            "prefect.server": {"level": "${PREFECT_SERVER_LOGGING_LEVEL}"},
            "prefect.client": {"level": level},
            "prefect._internal": {
                "level": "${PREFECT_INTERNAL_LOGGING_LEVEL}",
                "propagate": False,
                "handlers": ["debug"],
            },
        },
        "root": {"level": "WARNING", "handlers": ["console"]},
    }
