"""The training run's configuration: its hyper-parameters (defined once here, with their
help; :mod:`loopline.ml.hyperparameters` makes them the pipelines' parameters) and the
machine's training settings.

Apart from the training loop (:mod:`loopline.ml.training_loop`), which imports torch:
compiling a training pipeline needs the parameters alone, and importing torch cost each
``loopline run training`` 1.75 CPU s before its first task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loopline.ml.model_spec import BACKBONES, ModelSpec, default_arch

if TYPE_CHECKING:
    from loopline.ml.dataset import DatasetSchema


def _hyper(default, help: str):
    """A hyper-parameter: the train component and the training pipelines expose it as a
    parameter, with this help (loopline.ml.hyperparameters)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    arch: str = _hyper(
        "auto", "The architecture: auto, or one of loopline.ml.model_spec.ARCHITECTURES."
    )
    epochs: int = _hyper(20, "Maximum epochs; early stopping may end sooner.")
    batch_size: int = _hyper(64, "Rows per batch and worker.")
    lr: float = _hyper(1e-3, "The learning rate.")
    weight_decay: float = _hyper(1e-4, "The L2 penalty, through Adam's weight_decay.")
    dropout: float = _hyper(0.2, "Dropout before the classifier.")
    hidden: int = _hyper(128, "Width of the hidden layer.")
    augment: bool = _hyper(True, "Whether image data is augmented.")
    patience: int = _hyper(5, "Epochs without val-loss improvement before stopping.")
    seed: int = _hyper(0, "Seed for initialisation, shuffling and the split.")
    amp: bool = _hyper(True, "Mixed precision, used only on CUDA.")
    # Transfer learning (loopline.ml.transfer); backbones only
    pretrained: str = _hyper("", "Backbone weights: a file or folder, or models:/NAME/VERSION.")
    freeze: str = _hyper(
        "none", "What stays frozen after the probe: backbone, none or until:<layer>."
    )
    probe_epochs: int = _hyper(0, "Epochs that train the new head alone before fine-tuning.")
    backbone_lr_scale: float = _hyper(1.0, "The backbone learns at lr times this.")
    input_size: int = _hyper(
        0, "The side images are resized to for a backbone; 0 for its own (224)."
    )
    # Settings of the machine, not pipeline parameters: data larger than memory_mb is
    # streamed (loopline.ml.streaming; LOOPLINE_TRAIN_MEMORY_MB), and checkpoint_seconds
    # spaces the checkpoints (LOOPLINE_TRAIN_CHECKPOINT_SECONDS; 0: every epoch).
    stream: str = _hyper(
        "auto",
        "Stream the splits from Parquet: on, off, or auto (when the train and val splits "
        "would take more than the worker's memory budget).",
    )
    memory_mb: int = 2048
    checkpoint_seconds: float = 30.0

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive, got {getattr(self, name)}"
            for name in ("epochs", "batch_size", "lr", "hidden", "patience")
            if getattr(self, name) <= 0
        ]
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.probe_epochs < 0 or self.input_size < 0 or self.backbone_lr_scale < 0:
            problems.append("probe_epochs, input_size and backbone_lr_scale must be >= 0")
        if self.checkpoint_seconds < 0:
            problems.append(f"checkpoint_seconds must be >= 0, got {self.checkpoint_seconds}")
        if self.stream not in ("auto", "on", "off"):
            problems.append(f"stream must be auto, on or off, got {self.stream!r}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def spec_for(self, schema: DatasetSchema) -> ModelSpec:
        arch = default_arch(schema.kind) if self.arch == "auto" else self.arch
        backbone = arch in BACKBONES
        return ModelSpec(
            arch=arch,
            input_shape=schema.input_shape,
            num_classes=schema.num_classes,
            hidden=self.hidden,
            dropout=self.dropout,
            input_size=(self.input_size or None) if backbone else None,
            value_range=schema.value_range if backbone else None,
        )
