"""The ``register-model`` component: any pipeline's MLflow Model into the registry, behind
the gate (see :mod:`loopline.ml.registration`)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from loopline.components.decorator import component


@component
def register_model(
    model: Input[Model],
    eval_rows: Input[Dataset],
    train_rows: Input[Dataset],
    decision: Output[Artifact],
    model_name: str,
    task: str,
    label_column: str = "label",
    trigger: str = "",
    run_id: str = "",
) -> NamedTuple("Gate", [("promoted", bool), ("version", str)]):
    """Register any MLflow Model with a signature; move `champion` only if the gate promotes it.

    Args:
        model: An MLflow Model folder (mlflow.<flavor>.save_model(..., path=model.path)),
            with a signature.
        eval_rows: Labelled rows (Parquet or CSV) the model never trained on: the gate
            compares the model and the champion on them, and they become the model's
            guardrail.
        train_rows: The labelled rows it trained on (a sample of up to 5,000 is kept): the
            drift reference, and where a retraining's data starts.
        decision: The gate's decision, with its statistics.
        model_name: The registered model.
        task: classification or regression.
        label_column: The column of eval_rows with the true answer.
        trigger: The retraining trigger that started the run, when monitoring did
            (loopline passes it to the pipeline's `trigger` parameter).
        run_id: The pipeline run, for the lineage.
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from loopline.core.settings import load_settings
    from loopline.ml.registration import register_model_step

    result = register_model_step(
        Path(model.path),
        Path(eval_rows.path),
        Path(train_rows.path),
        Path(decision.path),
        task=task,
        label_column=label_column,
        model_name=model_name,
        run_id=run_id,
        settings=load_settings(),
        trigger_id=str(json.loads(trigger).get("trigger_id", "")) if trigger else "",
    )
    decision.metadata.update(result)
    return namedtuple("Gate", ["promoted", "version"])(result["promoted"], result["version"])
