"""Transfer learning: pretrained weights into a backbone, frozen layers, a linear probe
first, smaller learning rates for the backbone.

Weights come from a local file or folder, or from a registered model version
(``models:/NAME/VERSION``); they are safetensors, or a state dict that ``torch.load``
reads with ``weights_only=True``. Nothing is unpickled beyond tensors, and nothing is
downloaded. The head (``fc``) is always new: it fits the dataset's classes.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from loopline.core.errors import UsageError
from loopline.core.settings import load_settings
from loopline.ml.backbones import HEAD, STAGES
from loopline.ml.model_spec import ARCHITECTURES, BACKBONES, ModelSpec
from loopline.ml.models import build_model
from loopline.storage.registry import Registry

FREEZE_HELP = "backbone, none or until:<layer> (conv1, bn1, layer1 … layer4)"


class PretrainedError(UsageError):
    """Pretrained weights that cannot be used; the message names the file, layers and fix."""


@dataclass(frozen=True)
class Weights:
    path: Path  # a local safetensors or weights-only file
    source: str  # what the user gave: a path or models:/NAME/VERSION
    digest: str  # sha256 of the file


def resolve(reference: str, settings=None) -> Weights:
    """The local weights file that ``reference`` names."""
    if reference.startswith("models:/"):
        path = _registered(reference, settings)
    else:
        path = Path(reference).expanduser()
        if not path.exists():
            raise PretrainedError(
                f"pretrained={reference}: no such file or folder; give a .safetensors file, "
                f"a weights-only .pt state dict, a model folder, or models:/NAME/VERSION"
            )
    if path.is_dir():
        found = [path / n for n in ("model.safetensors", "best.safetensors") if (path / n).exists()]
        if not found:
            raise PretrainedError(
                f"pretrained={reference}: the folder holds no model.safetensors; point at "
                f"the weights file itself"
            )
        path = found[0]
    return Weights(path.resolve(), reference, _digest(path, reference))


MAX_WEIGHTS = 4 << 30  # a backbone larger than this is not a weights file loopline trains on


def _digest(path: Path, reference: str) -> str:
    """The file's sha256, read in blocks: a regular file of at most ``MAX_WEIGHTS``."""
    if not path.is_file():  # a device (/dev/zero), a FIFO, a socket: not weights
        raise PretrainedError(f"pretrained={reference}: not a regular file; give a weights file")
    size = path.stat().st_size
    if size > MAX_WEIGHTS:
        raise PretrainedError(
            f"pretrained={reference}: {size / 2**30:.1f} GiB, over the {MAX_WEIGHTS >> 30} GiB "
            "a backbone may take; give a smaller model's weights"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _registered(reference: str, settings) -> Path:
    parts = reference.removeprefix("models:/").split("/")
    if len(parts) != 2 or not all(parts):
        raise PretrainedError(
            f"pretrained={reference}: use models:/NAME/VERSION, e.g. models:/digits/3"
        )
    registry = Registry(settings or load_settings())
    try:
        info = registry.version(*parts)
    except Exception as exc:  # RegistryError, MLflow's own, an unreachable server
        raise PretrainedError(
            f"pretrained={reference}: the registry has no such version ({str(exc).splitlines()[0]})"
        ) from None
    return registry.download(info)


def read_state(weights: Weights) -> dict:
    """The tensors in the file: safetensors, or a weights-only torch file."""
    if weights.path.suffix == ".safetensors":
        try:
            return load_file(str(weights.path))
        except Exception as exc:
            raise PretrainedError(
                f"pretrained={weights.source}: not a readable safetensors file ({exc})"
            ) from None
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols is not the user's
            warnings.simplefilter("ignore")
            state = torch.load(weights.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything beyond tensors
        raise PretrainedError(
            f"pretrained={weights.source} is not a weights-only file: loading it would unpickle "
            f"arbitrary objects, which can run code ({type(exc).__name__}). Save the weights "
            f"with torch.save(model.state_dict(), path) or as safetensors"
        ) from None
    for key in ("state_dict", "model"):  # common checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(
            f"pretrained={weights.source} holds no state dict of tensors; save model.state_dict()"
        )
    return state


def load_backbone(model, state: dict, weights: Weights, arch: str) -> int:
    """Copy every backbone tensor of ``state`` into ``model``; the head stays new. Refuses,
    naming the layers, anything missing, extra or of another shape. Returns the count."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{HEAD}.")}
    given = {k.removeprefix("module."): v for k, v in state.items()}
    given = {k: v for k, v in given.items() if not k.startswith(f"{HEAD}.")}
    missing = sorted(own.keys() - given.keys())
    extra = sorted(given.keys() - own.keys())
    shapes = [
        f"{k}: file {tuple(given[k].shape)}, {arch} {tuple(own[k].shape)}"
        for k in sorted(own.keys() & given.keys())
        if tuple(given[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or shapes:
        problems = []
        if shapes:
            problems.append(f"{len(shapes)} layer(s) of another shape: " + "; ".join(shapes[:5]))
        if missing:
            problems.append(f"{len(missing)} missing, e.g. " + ", ".join(missing[:5]))
        if extra:
            problems.append(f"{len(extra)} unexpected, e.g. " + ", ".join(extra[:5]))
        raise PretrainedError(
            f"pretrained={weights.source} does not match {arch}: "
            + "; ".join(problems)
            + f". Use weights saved from a {arch}, or set arch to the architecture they are"
        )
    model.load_state_dict({**model.state_dict(), **given}, strict=True)
    return len(given)


def frozen_stages(rule: str) -> tuple[str, ...]:
    """The backbone stages a ``freeze`` rule freezes."""
    if rule == "none":
        return ()
    if rule == "backbone":
        return STAGES
    if rule.startswith("until:") and rule.removeprefix("until:") in STAGES:
        return STAGES[: STAGES.index(rule.removeprefix("until:")) + 1]
    raise PretrainedError(f"freeze={rule!r} is not a freeze rule; use {FREEZE_HELP}")


def set_frozen(model, stages: tuple[str, ...]) -> None:
    """Freeze ``stages``: no gradients, and their batch norms keep their statistics.
    Call after ``model.train()``, which puts every batch norm back in training mode."""
    for name, module in model.named_children():
        frozen = name in stages
        for parameter in module.parameters():
            parameter.requires_grad_(not frozen)
        if frozen:
            for sub in module.modules():
                if isinstance(sub, nn.BatchNorm2d):
                    sub.eval()


def parameter_groups(model, lr: float, backbone_scale: float) -> list[dict]:
    """Discriminative learning rates: the head at ``lr``, the backbone at ``lr × scale``."""
    head = [p for n, p in model.named_parameters() if n.startswith(f"{HEAD}.")]
    body = [p for n, p in model.named_parameters() if not n.startswith(f"{HEAD}.")]
    return [{"params": head, "lr": lr}, {"params": body, "lr": lr * backbone_scale}]


def preflight(arguments: dict, settings=None) -> Weights | None:
    """Check a run's transfer parameters before anything runs: the architecture, the
    freeze rule, and that the weights load into that architecture."""
    arch = arguments.get("arch", "auto")
    if arch not in ("auto", *ARCHITECTURES):
        raise PretrainedError(
            f"arch={arch!r} is not an architecture; use auto or one of {', '.join(ARCHITECTURES)}"
        )
    frozen_stages(arguments.get("freeze", "none"))
    reference = arguments.get("pretrained") or ""
    if not reference:
        return None
    if arch not in BACKBONES:
        raise PretrainedError(
            f"pretrained weights need a backbone architecture: set arch to one of "
            f"{', '.join(BACKBONES)} (arch is {arch})"
        )
    weights = resolve(reference, settings)
    probe = build_model(ModelSpec(arch=arch, input_shape=[3, 32, 32], num_classes=2))
    load_backbone(probe, read_state(weights), weights, arch)
    return weights
