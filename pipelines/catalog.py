"""The built-in pipelines, by the name the CLI uses; each is imported only when asked for."""

from __future__ import annotations

import importlib

PIPELINES = {
    "training": "pipelines.training:training",
    "retraining": "pipelines.retraining:retraining",
}


def get(name: str):
    try:
        module, attribute = PIPELINES[name].split(":")
    except KeyError:
        raise KeyError(
            f"unknown pipeline {name!r}; built-in pipelines are: {', '.join(PIPELINES)}"
        ) from None
    return getattr(importlib.import_module(module), attribute)
