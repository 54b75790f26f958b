"""The Kubernetes overlays, rendered as `loopline deploy` renders them, against the official
schemas (core kinds), the published CRD schemas (KubeRay, prometheus-operator), and the
house rules: non-root, no privilege escalation, resource limits, no secret values.

There is no cluster here: `kubernetes-validate` (the published OpenAPI schemas) and the
vendored CRD schemas (tests/infra/crds) stand in for an API server's admission checks.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from loopline.cli import deploy
from loopline.core import images
from loopline.core.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CRDS = Path(__file__).resolve().parent / "crds"
KUBERNETES = "1.30.0"
SECRET_WORDS = ("KEY", "TOKEN", "PASSWORD", "SECRET")
SECRET_URLS = {"LOOPLINE_ALERT_URL", "PREFECT_API_URL"}  # these URLs carry credentials
CUSTOM = {
    "RayCluster": "raycluster",
    "PodMonitor": "podmonitor",
    "PrometheusRule": "prometheusrule",
    "AlertmanagerConfig": "alertmanagerconfig",
}
API_USERS = {"loopline-prefect-worker"}  # creates the Jobs of flow runs (rbac.yaml)
OVERLAYS = deploy.overlays()

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl renders the overlays: apt-get install kubectl (make test does, as root)",
)


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    settings = load_settings({"LOOPLINE_HOME": "/nonexistent", "LOOPLINE_MODEL_NAME": "digits"})
    return tuple(deploy.render(overlay, settings))


def named(document: dict) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


def pod_specs(document: dict) -> list[tuple[str, dict]]:
    """Every pod spec in an object, with where it is."""
    spec = document.get("spec", {})
    kind = document["kind"]
    if kind == "CronJob":
        return [(named(document), spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return [(named(document), spec["template"]["spec"])]
    if kind == "RayCluster":
        groups = [("head", spec["headGroupSpec"])] + [
            (g["groupName"], g) for g in spec.get("workerGroupSpecs", [])
        ]
        return [(f"{named(document)}:{n}", g["template"]["spec"]) for n, g in groups]
    return []


def strict(schema: object) -> object:
    """Unknown fields are errors, as with `kubectl apply --validate=strict`."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_schema(kind: str) -> dict:
    return strict(yaml.safe_load((CRDS / f"{CUSTOM[kind]}.yaml").read_text()))


def validate_custom(document: dict) -> None:
    jsonschema.validate(document, crd_schema(document["kind"]))
    if document["kind"] == "RayCluster":  # KubeRay embeds Kubernetes' PodTemplateSpec
        spec = document["spec"]
        for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
            template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "ray"},
                "template": group["template"],
            }
            kubernetes_validate.validate(template, KUBERNETES, strict=True)


def every(predicate=lambda d: True) -> list[tuple[str, dict]]:
    return [(f"{o}:{named(d)}", d) for o in OVERLAYS for d in rendered(o) if predicate(d)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_with_this_releases_images(overlay):
    documents = rendered(overlay)
    assert len(documents) > 20
    found = {c["image"] for d in documents for _, spec in pod_specs(d) for c in spec["containers"]}
    assert images.platform("cpu") in found
    assert not found & (set(images.PLACEHOLDERS) | {images.BENTO_PLACEHOLDER}), found
    assert images.bento("digits") in found
    assert all(
        d["metadata"].get("namespace") == "loopline" for d in documents if d["kind"] != "Namespace"
    )


@pytest.mark.parametrize(("name", "document"), every(), ids=[n for n, _ in every()])
def test_every_object_matches_its_schema(name, document):
    if document["kind"] in CUSTOM:
        validate_custom(document)
    else:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


@pytest.mark.parametrize(
    ("mistake", "path"),
    [
        ("a misspelt RayCluster field", ("spec", "workerGroupSpecs", 0, "maxReplica")),
        (
            "a misspelt pod field in a Ray template",
            ("spec", "headGroupSpec", "template", "spec", "containers", 0, "imagePullPolcy"),
        ),
        ("a misspelt PodMonitor endpoint field", ("spec", "podMetricsEndpoints", 0, "prot")),
        ("a misspelt alert field", ("spec", "groups", 0, "rules", 0, "expression")),
        ("a misspelt alert route field", ("spec", "route", "groupWaits")),
    ],
)
def test_the_custom_resource_checks_catch_unknown_fields(mistake, path):
    target = {
        "workerGroupSpecs": "RayCluster",
        "headGroupSpec": "RayCluster",
        "podMetricsEndpoints": "PodMonitor",
        "groups": "PrometheusRule",
        "route": "AlertmanagerConfig",
    }[path[1]]
    document = copy.deepcopy(next(d for d in rendered("gpu") if d["kind"] == target))
    node = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = "oops"
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate_custom(document)


WORKLOADS = every(lambda d: bool(pod_specs(d)))


@pytest.mark.parametrize(("name", "document"), WORKLOADS, ids=[n for n, _ in WORKLOADS])
def test_workloads_run_non_root_with_limits_and_no_secret_values(name, document):
    for where, spec in pod_specs(document):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        token = spec.get("automountServiceAccountToken")
        assert token is (spec.get("serviceAccountName") in API_USERS), where
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            for env in container.get("env", []):
                variable = env["name"]
                secret_like = any(w in variable for w in SECRET_WORDS) or variable in SECRET_URLS
                if secret_like and not variable.endswith("_FILE"):  # a _FILE names a mount
                    assert "value" not in env, f"{where}: {variable} must come from a Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_platform_state_is_in_the_settings_database_never_a_shared_file(overlay):
    """The case of an earlier issue: serving replicas wrote one SQLite file on a volume."""
    for document in rendered(overlay):
        for where, spec in pod_specs(document):
            for container in spec["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                if "LOOPLINE_HOME" not in env or document["kind"] == "RayCluster":
                    continue
                database = env.get("LOOPLINE_DATABASE_URL", {})
                secret = database.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                assert secret == "loopline-settings", f"{where} keeps its state in LOOPLINE_HOME"
            if document["kind"] == "Deployment" and document["spec"].get("replicas", 1) > 1:
                claims = [
                    v["persistentVolumeClaim"]["claimName"]
                    for v in spec.get("volumes", [])
                    if "persistentVolumeClaim" in v
                ]
                # MLflow's artifacts: files written once per run id; its store is below.
                assert set(claims) <= {"mlflow-data"}, f"{where}: replicas share {claims}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_keeps_its_registry_in_postgresql_never_a_sqlite_file(overlay):
    """The registry holds the champion alias every serving replica follows: its store is
    MLflow's own database in the platform's PostgreSQL, from a Secret."""
    [mlflow] = [d for d in rendered(overlay) if named(d) == "Deployment/mlflow"]
    assert mlflow_store_problems(mlflow) == []
    if overlay != "local":
        assert mlflow["spec"]["replicas"] >= 2
        pdbs = kinds(overlay, "PodDisruptionBudget")
        assert pdbs["mlflow"]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow"}  # fmt: skip
    [job] = [d for d in rendered(overlay) if named(d) == "Job/mlflow-database"]
    [create] = job["spec"]["template"]["spec"]["containers"]
    assert "create-database.sql" in " ".join(create["command"])


def mlflow_store_problems(deployment: dict) -> list[str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    words = " ".join(container.get("command", []) + container.get("args", []))
    problems = ["a SQLite store in the command"] if "sqlite" in words else []
    env = {e["name"]: e for e in container.get("env", [])}
    store = env.get("MLFLOW_BACKEND_STORE_URI", {})
    if "sqlite" in str(store.get("value", "")):
        problems.append("a SQLite store in MLFLOW_BACKEND_STORE_URI")
    if store.get("valueFrom", {}).get("secretKeyRef", {}).get("name") != "loopline-mlflow":
        problems.append("the store URI does not come from the loopline-mlflow Secret")
    return problems


def test_an_mlflow_on_sqlite_is_caught():
    [mlflow] = [d for d in rendered("production") if named(d) == "Deployment/mlflow"]
    broken = copy.deepcopy(mlflow)
    [container] = broken["spec"]["template"]["spec"]["containers"]
    container["command"] += ["--backend-store-uri", "sqlite:////data/mlflow.db"]
    container["env"] = []
    assert mlflow_store_problems(broken) == [
        "a SQLite store in the command",
        "the store URI does not come from the loopline-mlflow Secret",
    ]


def kinds(overlay: str, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in rendered(overlay) if d["kind"] == kind}


def test_local_is_one_replica_of_everything_and_small():
    assert all(d["spec"].get("replicas", 1) == 1 for d in kinds("local", "Deployment").values())
    assert not kinds("local", "HorizontalPodAutoscaler")
    (ray,) = kinds("local", "RayCluster").values()
    assert [g["maxReplicas"] for g in ray["spec"]["workerGroupSpecs"]] == [1]
    requests = [
        c["resources"]["requests"]["cpu"]
        for d in rendered("local")
        for _, s in pod_specs(d)
        for c in s["containers"]
    ]
    assert all(r.endswith("m") or float(r) <= 1 for r in requests), requests


def test_production_scales_serving_spreads_it_and_guards_disruptions():
    assert (
        kinds("production", "HorizontalPodAutoscaler")["loopline-serving"]["spec"]["minReplicas"]
        >= 2
    )
    budgets = kinds("production", "PodDisruptionBudget")
    assert {"loopline-serving", "postgres", "loopline-ray-head"} <= set(budgets)
    serving = kinds("production", "Deployment")["loopline-serving"]["spec"]["template"]["spec"]
    assert serving["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert "postgres" in kinds("production", "StatefulSet")


def test_the_gpu_overlay_adds_a_gpu_worker_group_on_gpu_nodes():
    (ray,) = kinds("gpu", "RayCluster").values()
    groups = {g["groupName"]: g for g in ray["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]
    container = gpu["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == images.platform("cuda")
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert groups["gpu"]["minReplicas"] == 0  # idle GPUs scale to zero
    assert ray["spec"]["enableInTreeAutoscaling"] is True


def test_deploy_applies_the_rendered_overlay_with_kubectl(tmp_path, monkeypatch):
    """No API server here: a stand-in `kubectl` on PATH records what `apply` receives and
    hands `kustomize` to the real kubectl."""
    real = shutil.which("kubectl")
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\nif [ "$1" = kustomize ]; then exec {real} "$@"; fi\n'
        f'echo "$@" > {tmp_path}/args\ncat > {tmp_path}/applied\necho "objects configured"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{Path(real).parent}")
    from typer.testing import CliRunner

    from loopline.cli import app

    result = CliRunner().invoke(
        app, ["deploy", "--overlay", "local"], env={"LOOPLINE_HOME": str(tmp_path / "home")}
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "args").read_text().split() == ["apply", "-f", "-"]
    applied = list(yaml.safe_load_all((tmp_path / "applied").read_text()))
    assert len(applied) == len(rendered("local"))
    assert "applied overlay local" in result.output
    unknown = CliRunner().invoke(app, ["deploy", "--overlay", "staging", "--dry-run"])
    assert unknown.exit_code == 2 and "gpu, local, production" in unknown.output


def test_deploy_serves_any_registered_model():
    from typer.testing import CliRunner

    from loopline.cli import app

    shown = CliRunner().invoke(app, ["deploy", "--overlay", "production", "--dry-run", "--model", "churn"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    [serving] = [
        d
        for d in yaml.safe_load_all(shown.output)
        if d and named(d) == "Deployment/loopline-serving"
    ]
    [container] = serving["spec"]["template"]["spec"]["containers"]
    assert container["image"] == images.bento("churn")
    assert {"name": "LOOPLINE_MODEL_NAME", "value": "churn"} in container["env"]
    assert images.bento(images.BENTO_MODEL) not in shown.output


def raw(overlay: str) -> list[dict]:
    """An overlay as `kubectl apply -k` deploys it: no `loopline deploy` in between."""
    import subprocess

    done = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "infra" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def untagged(documents: list[dict]) -> list[str]:
    """Images with no tag or digest, or tagged latest (kubectl pulls :latest then)."""
    found = []
    for document in documents:
        for where, spec in pod_specs(document):
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                image = container["image"]
                name, _, tag = image.rpartition("/")[2].partition(":")
                if "@sha256:" not in image and (not tag or tag == "latest"):
                    found.append(f"{where}: {image}")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_of_every_raw_overlay_has_a_release_tag(overlay):
    documents = raw(overlay)
    assert untagged(documents) == []
    found = {c["image"] for d in documents for _, spec in pod_specs(d) for c in spec["containers"]}
    assert images.platform("cpu") in found and images.bento(images.BENTO_MODEL) in found
    assert untagged(rendered(overlay)) == []


def test_the_kustomize_image_tags_are_the_release_s():
    """Every kustomization's `images:` and loopline/core/images.py name the same tags."""
    expected = {name: images.platform(v) for name, v in images.PLACEHOLDERS.items()}
    expected[images.BENTO_PLACEHOLDER] = images.bento(images.BENTO_MODEL)
    folders = [ROOT / "infra" / "k8s" / "base", *(deploy.OVERLAYS / o for o in OVERLAYS)]
    for folder in folders:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for image in kustomization.get("images", []):
            assert f"{image['newName']}:{image['newTag']}" == expected[image["name"]], folder
    base = yaml.safe_load((folders[0] / "kustomization.yaml").read_text())
    assert {i["name"] for i in base["images"]} == set(expected)


def test_an_untagged_image_is_found():
    document = {
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [{"image": "loopline-bento"}]}}},
    }
    assert untagged([document]) == ["Deployment/x: loopline-bento"]
    document["spec"]["template"]["spec"]["containers"][0]["image"] = "reg:5000/app:latest"
    assert untagged([document]) == ["Deployment/x: reg:5000/app:latest"]
