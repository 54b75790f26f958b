"""The ``register`` component: a new model version, and ``champion`` moved only if the gate
promotes it."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from loopline.components.decorator import component


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

    from loopline.core.settings import load_settings
    from loopline.ml.steps import register_step

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
