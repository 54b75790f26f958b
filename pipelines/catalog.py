"""The built-in pipelines, by the name the CLI uses."""

from __future__ import annotations

from pipelines.retraining import retraining
from pipelines.training import training

PIPELINES = {"training": training, "retraining": retraining}


def get(name: str):
    try:
        return PIPELINES[name]
    except KeyError:
        raise KeyError(
            f"unknown pipeline {name!r}; built-in pipelines are: {', '.join(PIPELINES)}"
        ) from None
