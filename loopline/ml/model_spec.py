"""What a model is, as JSON-able data: its architecture, input shape and sizes.

Kept apart from the PyTorch modules (``loopline.ml.models``) so that reading a model's
description, or listing the architectures in the CLI's help, does not import torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

BACKBONES = ("resnet18", "resnet50")  # loopline.ml.backbones: pretrained weights fit these
ARCHITECTURES = ("mlp", "cnn", "tabular_mlp", *BACKBONES)
# What torchvision-compatible ResNet weights were trained on; recorded per model.
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
BACKBONE_SIZE = 224


@dataclass
class ModelSpec:
    arch: str
    input_shape: list[int]
    num_classes: int
    hidden: int = 128
    dropout: float = 0.2
    channels: list[int] = field(default_factory=lambda: [16, 32])
    # Backbones only: the side images are resized to, the pixel range that maps to [0, 1],
    # and the normalization the backbone's weights expect.
    input_size: int | None = None
    value_range: list[float] | None = None
    normalization: dict | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"model architecture {self.arch!r} is unknown; use one of {', '.join(ARCHITECTURES)}."
            )
        if self.arch in ("cnn", *BACKBONES) and len(self.input_shape) != 3:
            raise ValueError(
                f"{self.arch} needs image input (channels, height, width), got shape "
                f"{self.input_shape}; use --arch tabular_mlp for tabular data."
            )
        if self.arch in BACKBONES:
            self.input_size = self.input_size or BACKBONE_SIZE
            self.normalization = self.normalization or IMAGENET

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls(**json.loads(text))


def default_arch(kind: str) -> str:
    return "cnn" if kind == "image" else "tabular_mlp"
