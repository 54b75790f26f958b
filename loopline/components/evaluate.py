"""The ``evaluate`` component: test-set metrics, confusion matrix, plots and a report."""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from loopline.components.decorator import component


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

    from loopline.core.layout import EVALUATION
    from loopline.core.settings import load_settings
    from loopline.ml.steps import evaluate_step

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
