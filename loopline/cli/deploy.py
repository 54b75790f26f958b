"""`loopline deploy`: an overlay of ``infra/k8s`` rendered for this release and applied.

The manifests name images by placeholder (:data:`loopline.core.images.PLACEHOLDERS`), and
the base's kustomize ``images:`` give them this release's tags. The render replaces the
serving image and ``LOOPLINE_MODEL_NAME`` with the configured model's, and any placeholder
left (an overlay of the user's own), so the tags live in one place
(``loopline/core/images.py``). kubectl renders the overlay (its built-in kustomize) and
applies it.
"""

from __future__ import annotations

import shutil
import subprocess

import yaml

from loopline.core import images
from loopline.core.errors import UsageError
from loopline.core.package import data
from loopline.core.settings import Settings

OVERLAYS = data("infra", "k8s", "overlays")


def overlays() -> list[str]:
    return sorted(p.name for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())


def render(overlay: str, settings: Settings) -> list[dict]:
    """The overlay's objects, with this release's images and the settings' model name."""
    if overlay not in overlays():
        raise UsageError(f"unknown overlay {overlay!r}; use one of {', '.join(overlays())}")
    rendered = _kubectl("kustomize", str(OVERLAYS / overlay))
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    tags = {name: images.platform(variant) for name, variant in images.PLACEHOLDERS.items()}
    tags[images.BENTO_PLACEHOLDER] = images.bento(settings.model_name)
    tags[images.bento(images.BENTO_MODEL)] = images.bento(settings.model_name)
    for document in documents:
        _substitute(document, tags, settings.model_name)
    return documents


def to_yaml(documents: list[dict]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


def apply(documents: list[dict]) -> str:
    return _kubectl("apply", "-f", "-", stdin=to_yaml(documents))


def _substitute(node: object, tags: dict[str, str], model_name: str) -> None:
    """Images by placeholder, and LOOPLINE_MODEL_NAME, wherever a container names them."""
    if isinstance(node, dict):
        if isinstance(node.get("image"), str) and node["image"] in tags:
            node["image"] = tags[node["image"]]
        if node.get("name") == "LOOPLINE_MODEL_NAME" and "value" in node:
            node["value"] = model_name
        for value in node.values():
            _substitute(value, tags, model_name)
    elif isinstance(node, list):
        for value in node:
            _substitute(value, tags, model_name)


def _kubectl(*args: str, stdin: str | None = None) -> str:
    if shutil.which("kubectl") is None:
        raise UsageError(
            "kubectl is not installed; install it (apt-get install kubectl, or "
            "https://kubernetes.io/docs/tasks/tools/) and run this again"
        )
    done = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"kubectl {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout
