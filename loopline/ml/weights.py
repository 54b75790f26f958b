"""Model files without pickle: safetensors weights plus the architecture as JSON."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from loopline.ml.model_spec import ModelSpec
from loopline.ml.models import build_model

WEIGHTS = "model.safetensors"
ARCHITECTURE = "architecture.json"


def save_model(folder: Path, model: nn.Module, spec: ModelSpec) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / WEIGHTS, model)
    (folder / ARCHITECTURE).write_text(spec.to_json())


def save_weights(path: Path, model: nn.Module) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    save_file(state, str(path))


def load_model(folder: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model from ``architecture.json`` and load its safetensors weights."""
    folder = Path(folder)
    spec = ModelSpec.from_json((folder / ARCHITECTURE).read_text())
    model = build_model(spec)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.to(device).eval(), spec


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)
