"""The retraining pipeline that monitoring starts: reference + newly labelled data ->
validate -> train -> evaluate -> register (gated on recent labelled data) -> package.

``trigger`` carries why it runs (drift scores, the report's path) into the dataset's
lineage, so the run records what started it next to both models' metrics and the gate's
decision.
"""

from kfp import dsl

from loopline.components.assemble import assemble
from loopline.components.validate import validate_data
from loopline.ml.hyperparameters import with_hyperparameters
from loopline.pipelines.cluster.pods import with_settings
from loopline.pipelines.training import RUN_ID, train_gate_package


@dsl.pipeline(
    name="retraining",
    description="Retrain the champion on its reference data plus labelled production data; "
    "promote only if the challenger beats it on recent labelled data.",
)
# Retraining's own defaults: no augmentation, and training in-process (workers=0).
@with_hyperparameters(augment=False, workers=0)
def retraining(
    model_name: str = "digits-classifier",
    since: int = 0,
    trigger: str = "{}",
    min_samples_per_class: int = 20,
    min_class_ratio: float = 0.3,
    **train,
) -> dsl.Artifact:
    data = assemble(model_name=model_name, since=since, trigger=trigger, seed=train["seed"])
    data.set_caching_options(False)  # new labels arrive between runs
    checks = validate_data(
        dataset=data.outputs["dataset"],
        min_samples_per_class=min_samples_per_class,
        min_class_ratio=min_class_ratio,
        run_id=RUN_ID,
    )
    with_settings(data, checks)
    return train_gate_package(data.outputs["dataset"], checks, model_name=model_name, **train)
