"""ResNet backbones in plain PyTorch, with torchvision's layer names.

torchvision itself cannot be used here (its PyPI wheels either fail to import against the
platform's torch or pull another torch). Hugging Face's ResNet names its layers its own
way. Keeping torchvision's names (``conv1``, ``bn1``, ``layer1`` … ``layer4``, ``fc``)
means the most widely published pretrained ResNet weights load as they are, once saved
as safetensors or as a weights-only state dict, and loopline's own trained ResNets load
as pretrained weights for the next task. No weights are ever downloaded.

The classifier takes loopline's flat rows and adapts them to the backbone: it restores
the image shape, scales pixel values to [0, 1] with the dataset's value range, repeats a
grey channel three times, resizes to the backbone's input size and applies the
backbone's normalization. These settings live in the model spec (``architecture.json``),
so serving applies exactly what training did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loopline.ml.model_spec import ModelSpec

BLOCKS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet50": ("bottleneck", [3, 4, 6, 3])}
# The stem and stages, in forward order: what `freeze=until:<layer>` counts through.
STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
HEAD = "fc"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride here: v1.5
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetClassifier(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        kind, layers = BLOCKS[spec.arch]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.input_shape = tuple(spec.input_shape)
        self.input_size = spec.input_size
        low, high = spec.value_range or (0.0, 1.0)
        norm = spec.normalization
        # Not persistent: they come from the spec, so weights files hold torchvision's keys only.
        self.register_buffer("low", torch.tensor(float(low)), persistent=False)
        self.register_buffer("span", torch.tensor(float(high - low) or 1.0), persistent=False)
        self.register_buffer("mean", torch.tensor(norm["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm["std"]).view(1, 3, 1, 1), persistent=False)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.fc = nn.Linear(512 * block.expansion, spec.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Flat rows -> normalized (n, 3, size, size) images, as the backbone was trained."""
        x = x.reshape(len(x), *self.input_shape)
        x = (x - self.low) / self.span
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.adapt(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
