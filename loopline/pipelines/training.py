"""The training pipeline: ingest -> validate -> Ray training -> evaluate -> register, then
package a Bento when the gate promoted the new model. Every task takes the platform's
settings from the ``loopline-settings`` Secret on Kubeflow (:mod:`loopline.pipelines.cluster.pods`)."""

from kfp import dsl

from loopline.components.evaluate import evaluate
from loopline.components.ingest import ingest
from loopline.components.package import package
from loopline.components.register import register
from loopline.components.train import train
from loopline.components.validate import validate_data
from loopline.ml.hyperparameters import with_hyperparameters
from loopline.pipelines.cluster.pods import with_settings

RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER


def train_gate_package(dataset, checks, *, model_name, **train_params):
    """Train after ``checks``, evaluate, register behind the gate, and package the new
    champion; the register task's decision artifact is the pipeline's output."""
    trained = train(dataset=dataset, model_name=model_name, run_id=RUN_ID, **train_params).after(
        checks
    )
    scored = evaluate(model=trained.outputs["model"], dataset=dataset, run_id=RUN_ID)
    gate = register(
        model=trained.outputs["model"],
        dataset=dataset,
        evaluation=scored.outputs["evaluation"],
        model_name=model_name,
        run_id=RUN_ID,
    )
    gate.set_caching_options(False)  # reads the registry's current champion every run
    with_settings(trained, scored, gate)
    with dsl.If(gate.outputs["promoted"] == True, name="promoted"):  # noqa: E712 - KFP needs ==
        bento = package(model_name=model_name, version=gate.outputs["version"])
        bento.set_caching_options(False)
        with_settings(bento)
    return gate.outputs["decision"]


@dsl.pipeline(
    name="training",
    description="Ingest, validate, train on Ray, evaluate, register behind the gate, "
    "and package the new champion as a Bento.",
)
@with_hyperparameters()  # epochs, lr, arch, pretrained, workers, ...: TrainConfig's
def training(
    dataset: str = "digits",
    model_name: str = "digits-classifier",
    label_column: str = "label",
    image_size: int = 28,
    min_samples_per_class: int = 100,
    min_class_ratio: float = 0.5,
    **train,
) -> dsl.Artifact:
    data = ingest(
        source=dataset,
        label_column=label_column,
        image_size=image_size,
        seed=train["seed"],
        run_id=RUN_ID,
    )
    checks = validate_data(
        dataset=data.outputs["dataset"],
        min_samples_per_class=min_samples_per_class,
        min_class_ratio=min_class_ratio,
        run_id=RUN_ID,
    )
    with_settings(data, checks)
    return train_gate_package(data.outputs["dataset"], checks, model_name=model_name, **train)
