"""The container images of a loopline release, named in one place.

Every built-in KFP component, the monitor, the Prefect worker and the Ray cluster run in
the platform image; it comes in a CPU and a CUDA variant that differ only in the torch
wheel (infra/docker/Dockerfile, its ``VARIANT`` and ``TORCH_INDEX`` build arguments). ``loopline images`` prints these
names, ``loopline deploy`` writes them into the manifests, and the GPU target of the
compiler puts the CUDA variant on the train task.
"""

from __future__ import annotations

from dataclasses import dataclass

REGISTRY = "ghcr.io/loopline-dev"
VERSION = "0.1.1"  # the package's version; tests/infra checks it against pyproject.toml
PYTHON = "3.11"
# variant -> the torch wheel index its image installs from (the CUDA wheel carries its
# runtime libraries; the node's driver comes from the NVIDIA device plugin).
TORCH_INDEX = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu128",
}
# The names the manifests use for images; infra/k8s/base/kustomization.yaml's `images:`
# gives them the tags below (tests/infra keeps the two in step).
PLACEHOLDERS = {"loopline-platform": "cpu", "loopline-platform-cuda": "cuda"}
BENTO_PLACEHOLDER = "loopline-bento"
BENTO_MODEL = "digits-classifier"  # the model whose serving image the manifests name


def platform(variant: str = "cpu") -> str:
    if variant not in TORCH_INDEX:
        raise ValueError(f"unknown image variant {variant!r}; use one of {', '.join(TORCH_INDEX)}")
    return f"{REGISTRY}/loopline:{VERSION}-py{PYTHON}-{variant}"


def bento(model_name: str, version: str = VERSION) -> str:
    """The champion's Bento image (``bentoml containerize`` tags it so)."""
    return f"{REGISTRY}/loopline-{model_name}:{version}"


@dataclass(frozen=True)
class Image:
    name: str
    tag: str
    build: str  # the command that builds it, from the repository root


def release(model_name: str) -> list[Image]:
    """Every image of this release, with the command that builds it."""
    images = [
        Image(
            f"platform ({variant})",
            platform(variant),
            f"docker build -f infra/docker/Dockerfile --build-arg VARIANT={variant} "
            f"--build-arg TORCH_INDEX={TORCH_INDEX[variant]} -t {platform(variant)} .",
        )
        for variant in TORCH_INDEX
    ]
    bento_tag = bento(model_name)
    images.append(
        Image(
            f"serving ({model_name})",
            bento_tag,
            f"loopline package && BENTOML_HOME=$LOOPLINE_HOME/bentoml bentoml containerize "
            f"loopline-{model_name}:latest -t {bento_tag}",
        )
    )
    return images


PLATFORM_IMAGE = platform("cpu")
"""The image every built-in component runs in (the CPU variant; see :func:`platform`)."""
