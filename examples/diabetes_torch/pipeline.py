"""The diabetes project's pipeline: its own split and PyTorch regressor, then loopline's gate."""

from diabetes_components import prepare, train_regressor
from kfp import dsl

from loopline.components.register_model import register_model


@dsl.pipeline(
    name="diabetes", description="Train the progression regressor; register it behind the gate"
)
def diabetes(
    dataset: str,
    model_name: str = "diabetes",
    trigger: str = "",
    epochs: int = 60,
    hidden: int = 32,
    seed: int = 0,
):
    data = prepare(dataset=dataset, seed=seed)
    trained = train_regressor(
        train_rows=data.outputs["train_rows"], epochs=epochs, hidden=hidden, seed=seed
    )
    register_model(
        model=trained.outputs["model"],
        eval_rows=data.outputs["test_rows"],
        train_rows=data.outputs["train_rows"],
        model_name=model_name,
        task="regression",
        label_column="progression",
        trigger=trigger,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
