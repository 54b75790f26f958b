"""What a model is, as JSON-able data: its architecture, input shape and sizes.

Kept apart from the PyTorch modules (``components.models``) so that reading a model's
description, or listing the architectures in the CLI's help, does not import torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

ARCHITECTURES = ("mlp", "cnn", "tabular_mlp")


@dataclass
class ModelSpec:
    arch: str
    input_shape: list[int]
    num_classes: int
    hidden: int = 128
    dropout: float = 0.2
    channels: list[int] = field(default_factory=lambda: [16, 32])

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"model architecture {self.arch!r} is unknown; use one of {', '.join(ARCHITECTURES)}."
            )
        if self.arch == "cnn" and len(self.input_shape) != 3:
            raise ValueError(
                f"cnn needs image input (channels, height, width), got shape {self.input_shape}; "
                "use --model tabular_mlp for tabular data."
            )

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
