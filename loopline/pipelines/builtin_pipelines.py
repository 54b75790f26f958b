"""The built-in pipelines, by the name the CLI uses; each is imported only when asked for."""

from __future__ import annotations

import importlib

PIPELINES = {
    "training": "loopline.pipelines.training:training",
    "retraining": "loopline.pipelines.retraining:retraining",
}


def get(name: str, target: str = "cpu"):
    """The built-in pipeline ``name``, built for ``target`` (:mod:`loopline.pipelines.cluster.pods`)."""
    from loopline.pipelines.cluster import pods as cluster

    try:
        module, attribute = PIPELINES[name].split(":")
    except KeyError:
        raise KeyError(
            f"unknown pipeline {name!r}; built-in pipelines are: {', '.join(PIPELINES)}"
        ) from None
    return cluster.build(getattr(importlib.import_module(module), attribute), target)
