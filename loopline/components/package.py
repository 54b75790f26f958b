"""The ``package`` component: a Bento for the newly promoted champion. It is the training
pipeline's last step and runs only when the gate promoted."""

from kfp.dsl import Artifact, Output

from loopline.components.decorator import component


@component
def package(model_name: str, version: str, bento: Output[Artifact]):
    """Build a Bento (service, Python packages, model reference) for ``version``.

    Args:
        model_name: The registered model.
        version: The registered version to package.
        bento: The Bento's tag, path and image name.
    """
    import dataclasses
    import json
    from pathlib import Path

    from loopline.core.settings import load_settings
    from loopline.serving.bento import build_bento

    settings = dataclasses.replace(load_settings(), model_name=model_name)
    built = dataclasses.asdict(build_bento(settings, version=version))
    Path(bento.path).write_text(json.dumps(built, indent=2))
    bento.metadata.update(built)
