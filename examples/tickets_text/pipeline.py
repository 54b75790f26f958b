"""The ticket project's pipeline: its own split and text classifier, then loopline's gate."""

from kfp import dsl
from tickets_components import prepare, train_tfidf

from loopline.components.register_model import register_model


@dsl.pipeline(name="tickets", description="Train the ticket router; register it behind the gate")
def tickets(
    dataset: str,
    model_name: str = "tickets",
    trigger: str = "",
    max_features: int = 2000,
    seed: int = 0,
):
    data = prepare(dataset=dataset, seed=seed)
    trained = train_tfidf(train_rows=data.outputs["train_rows"], max_features=max_features)
    register_model(
        model=trained.outputs["model"],
        eval_rows=data.outputs["test_rows"],
        train_rows=data.outputs["train_rows"],
        model_name=model_name,
        task="classification",
        label_column="topic",
        trigger=trigger,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
