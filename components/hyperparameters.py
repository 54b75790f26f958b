"""The training hyper-parameters, defined once.

``TrainConfig``'s fields that carry a help text, plus ``workers``, are the parameters of
the train component and of the training and retraining pipelines. Their names, types,
defaults and help live in ``TrainConfig`` alone; everything here is derived from it.

- A pipeline function runs only at compile time, so ``with_hyperparameters`` extends its
  signature in place and hands it the values as ``**train``.
- A component's function travels to a cluster as source text, and KFP's executor there
  reads its parameters from that text. So the train component's source is written out
  from these parameters (``define``), as attrs does for the methods it generates, and
  registered with ``linecache`` so that ``inspect.getsource`` finds it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import linecache
from dataclasses import dataclass
from typing import Any

from components.training import TrainConfig

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
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=defaults.get(p.name, p.default), annotation=p.type)
            for p in PARAMETERS
        ]  # fmt: skip
        signature = signature.replace(parameters=own + added)

        @functools.wraps(func)
        def pipeline(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return func(**bound.arguments)  # its own by name, the rest into **train

        pipeline.__signature__ = signature
        return pipeline

    return decorate


def parameters_source(indent: str = "    ") -> str:
    """The hyper-parameters as lines of a function's signature."""
    return "\n".join(f"{indent}{p.name}: {p.type.__name__} = {p.default!r}," for p in PARAMETERS)


def arguments_doc(indent: str = "        ") -> str:
    """The hyper-parameters as lines of a Google-style ``Args:`` section."""
    return "\n".join(f"{indent}{p.name}: {p.help}" for p in PARAMETERS)


def define(source: str, name: str, namespace: dict[str, Any]):
    """Define the function ``name`` from ``source`` in ``namespace``, with its text where
    ``inspect.getsource`` (and so KFP) finds it."""
    filename = f"<loopline generated {namespace.get('__name__', '')}.{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    # dont_inherit: KFP reads the annotations as types, not as strings.
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102
    return namespace[name]
