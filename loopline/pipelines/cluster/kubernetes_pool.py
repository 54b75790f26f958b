"""The Prefect work pool that runs loopline's flows as Kubernetes Jobs.

Prefect's Kubernetes worker (prefect-kubernetes) turns each scheduled flow run into a Job
made from the pool's base job template. :func:`base_job_template` takes Prefect's own
default and makes it loopline's: the platform image, the platform's settings from the
``loopline-settings`` Secret, a non-root container with limits, and a scratch ``/tmp``.
The worker Deployment in ``infra/k8s/base`` creates the pool from the JSON file this
module writes (``python -m loopline.pipelines.cluster.kubernetes_pool``; a test keeps the two the same).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from loopline.core import images
from loopline.core.package import data
from loopline.pipelines.cluster.pods import SETTINGS_KEYS, SETTINGS_SECRET

POOL = "loopline-kubernetes"
POOL_TYPE = "kubernetes"
NAMESPACE = "loopline"
SERVICE_ACCOUNT = "loopline-flow-runs"
TEMPLATE_FILE = data("infra", "k8s", "base", "prefect", "base-job-template.json")
HOME = "/var/lib/loopline"
# The flow itself is light; pipeline tasks train on the Ray cluster.
DEFAULTS = {
    "cpu_request": "1",
    "cpu_limit": "4",
    "memory_request": "2Gi",
    "memory_limit": "8Gi",
    "finished_job_ttl": 86400,
    "backoff_limit": 0,
}


def base_job_template() -> dict:
    from prefect_kubernetes.worker import KubernetesWorker

    template = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    variables = template["variables"]["properties"]
    variables["image"]["default"] = images.platform("cpu")
    variables["namespace"]["default"] = NAMESPACE
    variables["service_account_name"]["default"] = SERVICE_ACCOUNT
    for name, value in DEFAULTS.items():
        variables[name]["default"] = value
    job = template["job_configuration"]["job_manifest"]["spec"]
    pod = job["template"]["spec"]
    # Prefect's default puts these Job fields in the pod spec, which a strict API refuses.
    job.update({key: pod.pop(key) for key in ("completions", "parallelism") if key in pod})
    pod.update(
        {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}],
        }
    )
    container = pod["containers"][0]
    # A list, not "{{ env }}": Prefect prepends the flow run's variables to it.
    container["env"] = [
        {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": SETTINGS_SECRET, "key": key, "optional": True}},
        }
        for key, variable in SETTINGS_KEYS.items()
    ] + [
        {"name": "LOOPLINE_HOME", "value": HOME},
        {"name": "PREFECT_HOME", "value": "/tmp/prefect"},
    ]
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    container["volumeMounts"] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": HOME},
    ]
    return template


def write(path: Path = TEMPLATE_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(base_job_template(), indent=2, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    print(write())
