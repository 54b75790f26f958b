"""What a pipeline task needs in a Kubernetes pod: the platform's settings, its size, and
on the GPU target a GPU.

On Kubeflow every task runs in a pod of its own, with none of the submitter's
environment. The built-in pipelines declare, for every task, that the platform's
settings come from the ``loopline-settings`` Secret (through kfp-kubernetes): the MLflow
tracking URI, the database URL, the Ray cluster and the shared checkpoint storage. The
local engine honours the same declaration by reading those variables from its own
environment. And a submission refuses settings that only make sense on this machine.

Each task also gets CPU and memory requests and limits (:data:`SIZES`). The ``gpu``
target, the one the ``gpu`` overlay's cluster runs, gives the train task one NVIDIA GPU,
the CUDA image and the node selector and toleration of GPU nodes. Pipelines are built
for a target with :func:`build`: KFP runs a pipeline's body when it is decorated, so a
target is chosen by decorating the body again under it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from loopline.core import images
from loopline.core.errors import UsageError
from loopline.core.settings import Settings

SETTINGS_SECRET = "loopline-settings"
# Secret key -> the variable each task reads; optional, so a cluster without Ray (say)
# leaves a key out.
SETTINGS_KEYS = {
    "tracking-uri": "LOOPLINE_TRACKING_URI",
    "database-url": "LOOPLINE_DATABASE_URL",
    "ray-address": "LOOPLINE_RAY_ADDRESS",
    "ray-storage": "LOOPLINE_RAY_STORAGE",
}


TARGETS = ("cpu", "gpu")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set by NVIDIA's GPU feature discovery


@dataclass(frozen=True)
class Size:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


# By component name. Training on Ray does its heavy work on the Ray cluster's workers;
# the train task holds the driver (and, with no cluster, the training itself).
SIZES = {
    "train": Size("2", "8", "4G", "16G"),
    "evaluate": Size("1", "4", "2G", "8G"),
}
DEFAULT_SIZE = Size("500m", "2", "1G", "4G")
_target = contextvars.ContextVar("loopline_target", default="cpu")


@contextlib.contextmanager
def target(name: str) -> Iterator[None]:
    if name not in TARGETS:
        raise UsageError(f"unknown target {name!r}; use one of {', '.join(TARGETS)}")
    token = _target.set(name)
    try:
        yield
    finally:
        _target.reset(token)


def build(pipeline, name: str):
    """``pipeline`` (a ``@dsl.pipeline``) built again for target ``name``: whatever target
    was current when its module was imported, the result is ``name``'s."""
    from kfp import dsl

    with target(name):
        return dsl.pipeline(
            name=pipeline.component_spec.name,
            description=pipeline.component_spec.description,
            pipeline_config=pipeline.pipeline_config,
        )(pipeline.pipeline_func)


def with_settings(*tasks):
    """Give each task the platform's settings from the ``loopline-settings`` Secret, its
    size, and on the GPU target a GPU for training."""
    from kfp import kubernetes

    for task in tasks:
        kubernetes.use_secret_as_env(
            task, secret_name=SETTINGS_SECRET, secret_key_to_env=SETTINGS_KEYS, optional=True
        )
        size = SIZES.get(task.component_spec.name, DEFAULT_SIZE)
        task.set_cpu_request(size.cpu_request).set_cpu_limit(size.cpu_limit)
        task.set_memory_request(size.memory_request).set_memory_limit(size.memory_limit)
        if _target.get() == "gpu" and task.component_spec.name == "train":
            _on_a_gpu(task)
    return tasks[0] if len(tasks) == 1 else tasks


def _on_a_gpu(task) -> None:
    from kfp import kubernetes

    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
    task.set_container_image(images.platform("cuda"))
    # A Ray cluster that scales its GPU group up from zero shows no GPU until asked.
    task.set_env_variable("LOOPLINE_TRAIN_GPU", "on")
    kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")


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
