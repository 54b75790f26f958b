"""The ``assemble`` component: the retraining dataset, the champion's reference data plus
newly labelled production data (:mod:`loopline.ml.retraining_data`)."""

from kfp.dsl import Dataset, Output

from loopline.components.decorator import component


@component
def assemble(dataset: Output[Dataset], model_name: str, since: int, trigger: str, seed: int = 0):
    """Reference data + labelled production data served after prediction number ``since``."""
    import json
    from pathlib import Path

    from loopline.core.settings import load_settings
    from loopline.ml.retraining_data import assemble_step

    dataset.metadata.update(
        assemble_step(
            Path(dataset.path),
            model_name=model_name,
            since=since,
            trigger=json.loads(trigger or "{}"),
            settings=load_settings(),
            seed=seed,
        )
    )
