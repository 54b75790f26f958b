"""The kfp SDK without what a local run never uses, for the processes that run pipelines.

``import kfp`` imports ``kfp.client`` (with the Kubernetes client) and ``kfp.components``
(with requests): 0.9 s of the 1 s that importing kfp costs, in every ``loopline run``
and in its workers' fork server. Kubeflow's own containers skip them the same way
(``_KFP_RUNTIME=true``, which kfp's ``__init__`` checks); unlike them, this keeps all of
``kfp.dsl``, and ``kfp.Client`` and ``kfp.components`` are still there: imported when
first used.

Importing this module loads kfp so (a kfp loaded earlier is left as it is): the CLI's
``run`` imports it first, and the workers' fork server preloads it by name.
"""

from __future__ import annotations

import importlib
import os
import sys


def load() -> None:
    if "kfp" in sys.modules:
        return
    given = os.environ.get("_KFP_RUNTIME")
    os.environ["_KFP_RUNTIME"] = "true"  # kfp's __init__ then imports no submodule
    try:
        import kfp
    finally:
        if given is None:
            os.environ.pop("_KFP_RUNTIME", None)
        else:
            os.environ["_KFP_RUNTIME"] = given
    kfp.__getattr__ = _on_first_use  # PEP 562
    importlib.import_module("kfp.dsl")


def _on_first_use(name: str):
    """``kfp.Client``, ``kfp.components``: what kfp's ``__init__`` would have imported."""
    if name == "Client":
        from kfp.client import Client

        return Client
    if name in ("client", "components"):
        return importlib.import_module(f"kfp.{name}")
    raise AttributeError(f"module 'kfp' has no attribute {name!r}")


load()
importlib.import_module("kfp.dsl.executor")  # what a worker runs components with
