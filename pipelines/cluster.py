"""What a pipeline task needs to reach the platform's state from a Kubernetes pod.

On Kubeflow every task runs in a pod of its own, with none of the submitter's
environment. The built-in pipelines declare, for every task, that the platform's
settings come from the ``loopline-settings`` Secret (through kfp-kubernetes): the MLflow
tracking URI, the database URL, the Ray cluster and the shared checkpoint storage. The
local engine honours the same declaration by reading those variables from its own
environment. And a submission refuses settings that only make sense on this machine.
"""

from __future__ import annotations

from components.errors import UsageError
from components.settings import Settings

SETTINGS_SECRET = "loopline-settings"
# Secret key -> the variable each task reads; optional, so a cluster without Ray (say)
# leaves a key out.
SETTINGS_KEYS = {
    "tracking-uri": "LOOPLINE_TRACKING_URI",
    "database-url": "LOOPLINE_DATABASE_URL",
    "ray-address": "LOOPLINE_RAY_ADDRESS",
    "ray-storage": "LOOPLINE_RAY_STORAGE",
}


def with_settings(*tasks):
    """Give each task the platform's settings from the ``loopline-settings`` Secret."""
    from kfp import kubernetes

    for task in tasks:
        kubernetes.use_secret_as_env(
            task, secret_name=SETTINGS_SECRET, secret_key_to_env=SETTINGS_KEYS, optional=True
        )
    return tasks[0] if len(tasks) == 1 else tasks


def check_reachable(settings: Settings) -> None:
    """Refuse to submit to a cluster with settings that point at this machine's files:
    pods could not reach them, and would quietly start empty stores of their own."""
    local = {
        "LOOPLINE_TRACKING_URI": settings.tracking_uri,
        "LOOPLINE_DATABASE_URL": settings.database_url,
        "LOOPLINE_RAY_STORAGE": settings.ray_storage,
    }
    for variable, value in local.items():
        if value.startswith(("sqlite:", "file:", "/", ".")) or "://" not in value:
            raise UsageError(
                f"{variable}={_shown(value)} is on this machine, which a Kubeflow run cannot "
                f"reach; set it to a shared service (MLflow at http://mlflow:5000, PostgreSQL "
                f"at postgresql://..., an s3:// bucket for checkpoints) and put the same value "
                f"in the {SETTINGS_SECRET} Secret's {_key(variable)} key"
            )


def _key(variable: str) -> str:
    return next(k for k, v in SETTINGS_KEYS.items() if v == variable)


def _shown(value: str) -> str:
    import re

    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", value)
