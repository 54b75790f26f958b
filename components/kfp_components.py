"""The built-in KFP components: thin typed wrappers over :mod:`components.steps`.

Each runs in the platform image and installs nothing at run time. Bodies import their
logic, because KFP ships only the function's source to the executor. No
``from __future__ import annotations`` here: KFP reads the annotations as types.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import PLATFORM_IMAGE

component = dsl.component(base_image=PLATFORM_IMAGE, install_kfp_package=False)


@component
def ingest(
    source: str,
    dataset: Output[Dataset],
    label_column: str = "label",
    image_size: int = 28,
    seed: int = 0,
    run_id: str = "",
):
    """Load a built-in dataset or files and write stratified Parquet splits with a schema.

    Args:
        source: A built-in dataset (digits, breast_cancer, ...) or a path: a CSV/Parquet
            file, an image folder (one sub-folder per class) or an MNIST IDX folder.
        dataset: The train, validation and test splits, with the schema, as Parquet.
        label_column: The label column of a CSV or Parquet file.
        image_size: The side images are resized to.
        seed: Seed of the stratified split.
        run_id: The pipeline run, for the lineage.
    """
    from pathlib import Path

    from components.steps import ingest_step

    dataset.metadata.update(
        ingest_step(
            source,
            Path(dataset.path),
            run_id=run_id,
            label_column=label_column,
            image_size=image_size,
            seed=seed,
        )
    )


@component
def validate_data(
    dataset: Input[Dataset],
    report: Output[Artifact],
    min_samples_per_class: int = 100,
    min_class_ratio: float = 0.5,
    max_duplicate_fraction: float = 0.01,
    run_id: str = "",
):
    """Run the data checklist; fail the pipeline listing every failed check.

    Args:
        dataset: The splits that ingest wrote.
        report: The checklist's results, as JSON and HTML.
        min_samples_per_class: Fewer training rows in any class fail the check.
        min_class_ratio: The smallest class over the largest, at least.
        max_duplicate_fraction: The share of duplicate rows allowed.
        run_id: The pipeline run, for the lineage.
    """
    from pathlib import Path

    from components.steps import validate_step
    from components.validation import ValidationConfig

    config = ValidationConfig(min_samples_per_class, min_class_ratio, max_duplicate_fraction)
    report.metadata.update(
        validate_step(Path(dataset.path), Path(report.path), run_id=run_id, config=config)
    )


@component
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    model_name: str,
    arch: str = "auto",
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 0.001,
    weight_decay: float = 0.0001,
    dropout: float = 0.2,
    hidden: int = 128,
    augment: bool = True,
    patience: int = 5,
    seed: int = 0,
    amp: bool = True,
    workers: int = -1,
    pretrained: str = "",
    freeze: str = "none",
    probe_epochs: int = 0,
    backbone_lr_scale: float = 1.0,
    input_size: int = 0,
    run_id: str = "",
):
    """Train with Ray Train's TorchTrainer, early stopping, checkpoints and MLflow metrics.

    Args:
        dataset: The validated splits.
        model: The trained weights (safetensors), model spec and training summary.
        model_name: The registered model it is trained for.
        arch: The architecture: auto, or one of components.model_spec.ARCHITECTURES.
        epochs: Maximum epochs; early stopping may end sooner.
        batch_size: Rows per batch and worker.
        lr: The learning rate.
        weight_decay: AdamW's weight decay.
        dropout: Dropout before the classifier.
        hidden: Width of the hidden layer.
        augment: Whether image data is augmented.
        patience: Epochs without improvement before stopping.
        seed: Seed for initialisation and shuffling.
        amp: Mixed precision on CUDA.
        workers: Ray Train workers; 0 trains in-process; -1 chooses (in-process on one
            machine, 2 on a Ray cluster).
        pretrained: Backbone weights: a file or folder, or models:/NAME/VERSION.
        freeze: What stays frozen after the probe: backbone, none or until:<layer>.
        probe_epochs: Epochs that train the new head alone before fine-tuning.
        backbone_lr_scale: The backbone learns at lr times this.
        input_size: The side images are resized to for a backbone; 0 for its own (224).
        run_id: The pipeline run, for the lineage.
    """
    from pathlib import Path

    from components.settings import load_settings
    from components.steps import train_step
    from components.training import TrainConfig

    config = TrainConfig(
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        dropout=dropout,
        hidden=hidden,
        augment=augment,
        patience=patience,
        seed=seed,
        amp=amp,
        pretrained=pretrained,
        freeze=freeze,
        probe_epochs=probe_epochs,
        backbone_lr_scale=backbone_lr_scale,
        input_size=input_size,
    )
    summary = train_step(
        Path(dataset.path),
        Path(model.path),
        config,
        run_id=run_id,
        workers=workers,
        model_name=model_name,
        settings=load_settings(),
    )
    model.metadata.update(summary)


@component
def evaluate(
    model: Input[Model],
    dataset: Input[Dataset],
    evaluation: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    run_id: str = "",
):
    """Score the model on the test split: metrics, confusion matrix, curves, HTML report.

    Args:
        model: The trained model.
        dataset: The splits; the test split is scored.
        evaluation: The evaluation folder: metrics, predictions and plots.
        report: The HTML report.
        metrics: The headline metrics, as KFP metrics.
        classification: The confusion matrix, as KFP classification metrics.
        run_id: The pipeline run, for the lineage.
    """
    import json
    import shutil
    from pathlib import Path

    from components.layout import EVALUATION
    from components.settings import load_settings
    from components.steps import evaluate_step

    out = Path(evaluation.path)
    summary = evaluate_step(
        Path(model.path), Path(dataset.path), out, run_id=run_id, settings=load_settings()
    )
    evaluation.metadata.update(summary)
    shutil.copy(out / "report.html", report.path)
    for name, value in summary["metrics"].items():
        metrics.log_metric(name, value)
    result = json.loads((out / EVALUATION).read_text())
    classification.log_confusion_matrix(result["classes"], result["confusion_matrix"])


@component
def register(
    model: Input[Model],
    dataset: Input[Dataset],
    evaluation: Input[Artifact],
    decision: Output[Artifact],
    model_name: str,
    run_id: str = "",
) -> NamedTuple("Gate", [("promoted", bool), ("version", str)]):
    """Register an MLflow model version; move `champion` only if the gate promotes it.

    Args:
        model: The trained model.
        dataset: The splits it was trained on (the gate scores both models on them).
        evaluation: The evaluation of the model.
        decision: The gate's decision, with its statistics.
        model_name: The registered model.
        run_id: The pipeline run, for the lineage.
    """
    from collections import namedtuple
    from pathlib import Path

    from components.settings import load_settings
    from components.steps import register_step

    result = register_step(
        Path(model.path),
        Path(dataset.path),
        Path(evaluation.path),
        Path(decision.path),
        run_id=run_id,
        model_name=model_name,
        settings=load_settings(),
    )
    decision.metadata.update(result)
    return namedtuple("Gate", ["promoted", "version"])(result["promoted"], result["version"])
