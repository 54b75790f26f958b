"""The built-in KFP components: thin typed wrappers over :mod:`components.steps`.

Each runs in the platform image and installs nothing at run time. Bodies import their
logic, because KFP ships only the function's source to the executor. No
``from __future__ import annotations`` here: KFP reads the annotations as types.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import hyperparameters
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


# The train component's source is written from the hyper-parameters, which are defined
# once, in TrainConfig (components.hyperparameters says why it is text).
_TRAIN = '''def train(
    dataset: Input[Dataset],
    model: Output[Model],
    model_name: str,
{parameters}
    run_id: str = "",
):
    """Train, in-process or on Ray Train's TorchTrainer, with early stopping, checkpoints
    and MLflow metrics.

    Args:
        dataset: The validated splits.
        model: The trained weights (safetensors), model spec and training summary.
        model_name: The registered model it is trained for.
{arguments}
        run_id: The pipeline run, for the lineage.
    """
    from pathlib import Path

    from components.hyperparameters import from_arguments
    from components.settings import load_settings
    from components.steps import train_step

    config, workers = from_arguments(locals())
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
'''
train = component(
    hyperparameters.define(
        _TRAIN.format(
            parameters=hyperparameters.parameters_source(),
            arguments=hyperparameters.arguments_doc(),
        ),
        "train",
        globals(),
    )
)


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
