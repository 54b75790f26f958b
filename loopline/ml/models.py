"""Model architectures, described by a JSON-able spec so weights never need pickle.

- ``mlp``: the seed article's classifier: Flatten, Dense 128 + ReLU, Dropout 0.2, Dense.
- ``cnn``: a small convolutional net for images.
- ``tabular_mlp``: standardizes features with the training split's statistics, then two
  dense layers; serving sends raw feature values.
- ``resnet18``, ``resnet50``: pretrained-capable backbones (``loopline.ml.backbones``).

Every model takes flat rows ``(n, features)`` and reshapes internally.
"""

from __future__ import annotations

import torch
from torch import nn

from loopline.ml.backbones import BLOCKS, ResNetClassifier
from loopline.ml.model_spec import ModelSpec


def build_model(spec: ModelSpec) -> nn.Module:
    builders = {"mlp": SeedMLP, "cnn": SmallCNN, "tabular_mlp": TabularMLP}
    builders |= dict.fromkeys(BLOCKS, ResNetClassifier)
    return builders[spec.arch](spec)


class SeedMLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(spec.num_features, spec.hidden),
            nn.ReLU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, spec.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SmallCNN(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.input_shape = tuple(spec.input_shape)
        layers: list[nn.Module] = []
        in_channels = spec.input_shape[0]
        for out_channels in spec.channels:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *self.input_shape)).numel()
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(spec.dropout),
            nn.Linear(flat, spec.hidden),
            nn.ReLU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, spec.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(len(x), *self.input_shape)))


class TabularMLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        # Buffers, so the training split's statistics travel inside the weights file.
        self.register_buffer("mean", torch.zeros(spec.num_features))
        self.register_buffer("std", torch.ones(spec.num_features))
        self.layers = nn.Sequential(
            nn.Linear(spec.num_features, spec.hidden),
            nn.ReLU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, spec.hidden // 2),
            nn.ReLU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden // 2, spec.num_classes),
        )

    def set_normalization(self, mean: list[float], std: list[float]) -> None:
        self.mean.copy_(torch.tensor(mean))
        self.std.copy_(torch.tensor(std).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.std)
