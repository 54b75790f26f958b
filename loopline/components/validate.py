"""The ``validate-data`` component: the data checklist, failing the pipeline on a miss."""

from kfp.dsl import Artifact, Dataset, Input, Output

from loopline.components.decorator import component


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

    from loopline.ml.steps import validate_step
    from loopline.ml.validation import ValidationConfig

    config = ValidationConfig(min_samples_per_class, min_class_ratio, max_duplicate_fraction)
    report.metadata.update(
        validate_step(Path(dataset.path), Path(report.path), run_id=run_id, config=config)
    )
