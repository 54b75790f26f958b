"""The churn project's pipeline: its own split and model, then loopline's gate."""

from churn_components import prepare, train_hgb
from kfp import dsl

from loopline.components.register_model import register_model


@dsl.pipeline(name="churn", description="Train the churn classifier; register it behind the gate")
def churn(
    dataset: str,
    model_name: str = "churn",
    trigger: str = "",
    max_iter: int = 100,
    seed: int = 0,
):
    data = prepare(dataset=dataset, seed=seed)
    trained = train_hgb(train_rows=data.outputs["train_rows"], max_iter=max_iter, seed=seed)
    register_model(
        model=trained.outputs["model"],
        eval_rows=data.outputs["test_rows"],
        train_rows=data.outputs["train_rows"],
        model_name=model_name,
        task="classification",
        label_column="churned",
        trigger=trigger,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
