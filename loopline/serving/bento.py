"""Build a Bento for the champion: the service, its Python packages and a model reference.

The Bento refers to the model by registry name and version (labels) and follows the
``champion`` alias at run time through ``LOOPLINE_TRACKING_URI``; it does not copy the
weights, so one Bento serves every later champion. It is ready for
``bentoml containerize``; the image runs as a non-root user (see ``infra/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from loopline.core.errors import LooplineError
from loopline.core.package import installed_root, requirements
from loopline.core.settings import Settings
from loopline.serving.server import SERVICE
from loopline.storage.registry import Registry

# The installed package, as installed: its Python files from the folder that holds it.
# Anchored, because BENTOML_HOME may sit inside a checkout (under .loopline).
INCLUDE = ["/loopline/**/*.py"]
EXCLUDE = ["**/__pycache__/"]


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: str
    model_name: str
    model_version: str


class PackageError(LooplineError, RuntimeError):
    """Nothing to package (no champion, unknown version)."""


def build_bento(settings: Settings, *, version: str | None = None) -> BuiltBento:
    """Build ``loopline-<model name>`` for ``version`` (default: the champion)."""
    registry = Registry(settings)
    name = settings.model_name
    info = registry.version(name, version) if version else registry.champion(name)
    if info is None:
        raise PackageError(
            f"model {name!r} has no champion to package; run `loopline run training` first"
        )
    # BentoML is imported only now, after BENTOML_HOME is set: it fixes its home the
    # first time it reads the variable.
    os.environ["BENTOML_HOME"] = str(settings.bentoml_home)
    import bentoml
    from bentoml._internal.bento.build_config import BentoEnvSchema

    bento = bentoml.bentos.build(
        SERVICE,
        name=f"loopline-{name}",
        version=_bento_version(info.version, info.tags.get("loopline.content_hash", "")),
        labels={
            "loopline.model_name": name,
            "loopline.model_version": info.version,
            "loopline.model_source": info.source,
        },
        description=f"loopline model server for {name} (built for version {info.version})",
        include=INCLUDE,
        exclude=EXCLUDE,
        envs=[BentoEnvSchema(name="LOOPLINE_MODEL_NAME", value=name)],
        python={"packages": requirements(), "lock_packages": False},
        docker={"python_version": "3.11"},
        build_ctx=str(installed_root()),
    )
    return BuiltBento(str(bento.tag), str(bento.path), name, info.version)


def _bento_version(version: str, content_hash: str) -> str:
    """``v<registry version>-<12 hex of the model's content hash>``: a valid BentoML tag."""
    digest = content_hash.removeprefix("sha256:")[:12] or "unhashed"
    return f"v{version}-{digest}"
