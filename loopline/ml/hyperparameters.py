"""The training hyper-parameters, defined once.

``TrainConfig``'s fields that carry a help text, plus ``workers``, are the parameters of
the train component and of the training and retraining pipelines. Their names, types,
defaults and help live in ``TrainConfig`` alone; everything here is derived from it.

- A pipeline function runs only at compile time, so ``with_hyperparameters`` extends its
  signature in place and hands it the values as ``**train``.
- A component's function travels to a cluster as source text, and KFP's executor there
  reads its parameters from that text. So the train component
  (:mod:`loopline.components.train`) writes them out, and a test holds it to
  :data:`PARAMETERS`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any

from loopline.ml.train_config import TrainConfig

_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class HyperParameter:
    name: str
    type: type
    default: Any
    help: str


WORKERS = HyperParameter(
    "workers",
    int,
    -1,
    "Ray Train workers; 0 trains in-process; -1 chooses (in-process on one machine, "
    "2 on a Ray cluster).",
)
PARAMETERS: tuple[HyperParameter, ...] = (
    *(
        HyperParameter(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"])
        for f in dataclasses.fields(TrainConfig)
        if "help" in f.metadata
    ),
    WORKERS,
)


def from_arguments(arguments: dict[str, Any]) -> tuple[TrainConfig, int]:
    """The ``TrainConfig`` and worker count among a task's ``arguments``."""
    names = {p.name for p in PARAMETERS} - {WORKERS.name}
    config = TrainConfig(**{k: v for k, v in arguments.items() if k in names})
    return config, int(arguments.get(WORKERS.name, WORKERS.default))


def with_hyperparameters(**defaults: Any):
    """Add the hyper-parameters to a pipeline function's signature, after its own, with
    TrainConfig's defaults unless ``defaults`` gives the pipeline's own. The function
    takes them as ``**train``."""
    unknown = set(defaults) - {p.name for p in PARAMETERS}
    if unknown:
        raise TypeError(f"not training hyper-parameters: {sorted(unknown)}")

    def decorate(func):
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        added = [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=defaults.get(p.name, p.default),
                annotation=p.type,
            )
            for p in PARAMETERS
        ]
        signature = signature.replace(parameters=own + added)

        @functools.wraps(func)
        def pipeline(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return func(**bound.arguments)  # its own by name, the rest into **train

        pipeline.__signature__ = signature
        return pipeline

    return decorate
