"""The retraining pipeline that monitoring starts: reference + newly labelled data ->
validate -> train -> evaluate -> register (gated on recent labelled data) -> package.

``trigger`` carries why it runs (drift scores, the report's path) into the dataset's
lineage, so the run records what started it next to both models' metrics and the gate's
decision.
"""

from kfp import dsl

from components.kfp_components import validate_data
from pipelines.cluster import with_settings
from pipelines.retraining_data import assemble
from pipelines.training import RUN_ID, train_gate_package


@dsl.pipeline(
    name="retraining",
    description="Retrain the champion on its reference data plus labelled production data; "
    "promote only if the challenger beats it on recent labelled data.",
)
def retraining(
    model_name: str = "digits-classifier",
    since: int = 0,
    trigger: str = "{}",
    arch: str = "auto",
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 0.001,
    weight_decay: float = 0.0001,
    dropout: float = 0.2,
    augment: bool = False,
    patience: int = 5,
    workers: int = 0,
    seed: int = 0,
    min_samples_per_class: int = 20,
    min_class_ratio: float = 0.3,
) -> dsl.Artifact:
    data = assemble(model_name=model_name, since=since, trigger=trigger, seed=seed)
    data.set_caching_options(False)  # new labels arrive between runs
    checks = validate_data(
        dataset=data.outputs["dataset"],
        min_samples_per_class=min_samples_per_class,
        min_class_ratio=min_class_ratio,
        run_id=RUN_ID,
    )
    with_settings(data, checks)
    return train_gate_package(
        data.outputs["dataset"], checks, model_name=model_name, arch=arch, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, dropout=dropout,
        augment=augment, patience=patience, seed=seed, workers=workers,
    )  # fmt: skip
