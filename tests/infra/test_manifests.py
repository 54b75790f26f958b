"""The Kubernetes manifests against the official schemas, plus the house rules: non-root,
no privilege escalation, resource limits, and no secret values written into a manifest.

There is no cluster here, so `kubernetes-validate` (the published OpenAPI schemas) stands
in for an API server's admission checks.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
KUBERNETES = "1.30.0"
SECRET_WORDS = ("KEY", "TOKEN", "PASSWORD", "SECRET")
SECRET_URLS = {"LOOPLINE_ALERT_URL", "PREFECT_API_URL"}  # these URLs carry credentials


def documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(f"{path.name}:{d['kind']}/{d['metadata']['name']}", d)
                  for d in yaml.safe_load_all(path.read_text()) if d]  # fmt: skip
    return found


def pod_spec(document: dict) -> dict | None:
    spec = document.get("spec", {})
    if document["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if document["kind"] in ("Deployment", "StatefulSet", "Job"):
        return spec["template"]["spec"]
    return None


@pytest.mark.parametrize(("name", "document"), documents(), ids=[n for n, _ in documents()])
def test_manifest_matches_the_kubernetes_schema(name, document):
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


@pytest.mark.parametrize(
    ("name", "document"),
    [(n, d) for n, d in documents() if pod_spec(d)],
    ids=[n for n, d in documents() if pod_spec(d)],
)
def test_workloads_run_non_root_with_limits_and_no_secret_values(name, document):
    spec = pod_spec(document)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec.get("automountServiceAccountToken") is False
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        for env in container.get("env", []):
            name = env["name"]
            secret_like = any(word in name for word in SECRET_WORDS) or name in SECRET_URLS
            if secret_like and not name.endswith("_FILE"):  # a _FILE names a mounted secret
                assert "value" not in env, f"{name} must come from a Secret"


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


def test_platform_dockerfile_runs_as_a_non_root_user():
    dockerfile = (K8S.parent / "docker" / "Dockerfile").read_text()
    assert "\nUSER 10001:10001" in dockerfile
    assert "torch==2.13.0" in dockerfile  # the same pin as pyproject.toml


def test_the_platform_state_is_in_a_database_from_the_settings_secret_never_a_shared_file():
    """The issue's case: 2-10 serving replicas wrote one SQLite file on a shared volume."""
    for name, document in documents():
        spec = pod_spec(document)
        if spec is None:
            continue
        for container in spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            if "LOOPLINE_HOME" not in env:
                continue
            database = env.get("LOOPLINE_DATABASE_URL", {})
            assert database.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == (
                "loopline-settings"
            ), f"{name} keeps the platform state in its LOOPLINE_HOME"
        if document["kind"] == "Deployment" and document["spec"].get("replicas", 1) > 1:
            claims = [v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]
            assert not claims, f"{name}: replicas must not share a volume for their state"
