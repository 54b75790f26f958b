"""The platform images: tags named once, a multi-stage non-root build pinned to a base
release, installing the same locked dependencies as `make install`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from loopline.core import images

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_key(name)] = version
    return pins


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_tags_carry_the_package_version_and_each_variant():
    assert PYPROJECT["project"]["version"] == images.VERSION
    assert images.platform("cpu") != images.platform("cuda")
    assert all(images.VERSION in images.platform(v) for v in images.TORCH_INDEX)


def test_loopline_images_prints_every_tag_and_its_build_command():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("loopline")), "images"],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = done.stdout + done.stderr  # the console writes to stderr, --json to stdout
    for variant, index in images.TORCH_INDEX.items():
        assert images.platform(variant) in shown
        assert f"--build-arg TORCH_INDEX={index}" in shown


def test_the_dockerfile_is_multi_stage_non_root_and_pinned():
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", DOCKERFILE, flags=re.M)
    assert len(stages) >= 2, "a build stage and a runtime stage"
    for base, _ in stages:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    runtime = DOCKERFILE.split(f"FROM {stages[-1][0]} AS {stages[-1][1]}")[1]
    assert "\nUSER 10001:10001" in runtime and "COPY --from=build" in runtime
    assert "pip install -c requirements.lock ." in DOCKERFILE
    assert "grep '^torch==' requirements.lock" in DOCKERFILE


def test_the_lock_pins_every_dependency_and_matches_what_is_installed():
    pins = lock()
    declared = (
        PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"]
    )
    for text in declared:
        requirement = Requirement(text)
        name = _key(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement.specifier}"
        )
        installed = metadata.version(requirement.name).split("+")[0]
        assert installed == pins[name], f"{name} {installed} installed, {pins[name]} locked"
