"""The plain BentoML baselines of ``benchmarks/serving_sklearn``: an MLflow Model served
as a BentoML user would, with ``mlflow.pyfunc.load_model`` inside one ``@bentoml.service``
with one ``@bentoml.api``, without and with BentoML's adaptive batching. No API key, no
validation beyond BentoML's own, no prediction log, no envelope.

``bentoml serve benchmarks.plain_mlflow_bento:Plain`` (or ``:Batchable``) with
``BENCH_MODEL_FOLDER`` naming the MLflow Model folder.
"""

from __future__ import annotations

import os

import bentoml
import pandas as pd

from loopline.core.settings import load_settings

OPTIONS = load_settings().serve
MAX_LATENCY_MS = 1000


def _model():
    import mlflow.pyfunc

    # The baseline loads what the benchmark registered; it is not an untrusted file.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    return mlflow.pyfunc.load_model(os.environ["BENCH_MODEL_FOLDER"])


@bentoml.service(name="plain-mlflow", workers=1)
class Plain:
    def __init__(self) -> None:
        self.model = _model()

    @bentoml.api
    def predict(self, instances: list[dict]) -> dict:
        return {"labels": [str(v) for v in self.model.predict(pd.DataFrame(instances))]}


@bentoml.service(name="plain-mlflow-batchable", workers=1)
class Batchable:
    def __init__(self) -> None:
        self.model = _model()

    @bentoml.api(batchable=True, max_batch_size=OPTIONS.max_batch, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, instances: list[dict]) -> list[str]:
        return [str(v) for v in self.model.predict(pd.DataFrame(instances))]
