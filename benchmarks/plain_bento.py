"""The plain BentoML baselines of ``benchmarks/serving``: one ``@bentoml.service`` with one
``@bentoml.api`` over the same weights as the champion, as a BentoML user would write it,
with and without adaptive batching (the batch size of loopline's batcher, and the wait
loopline's own model service used before it batched in process).
No API key, no validation beyond BentoML's own, no prediction log, no envelope: what
BentoML itself costs.

``bentoml serve benchmarks.plain_bento:Plain`` (or ``:Batchable``) with
``BENCH_MODEL_FOLDER`` naming a model folder (``model.safetensors`` + architecture).
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np
import torch

from loopline.core.settings import load_settings
from loopline.ml.weights import load_model

OPTIONS = load_settings().serve
MAX_LATENCY_MS = 1000


def _model() -> torch.nn.Module:
    model, _ = load_model(Path(os.environ["BENCH_MODEL_FOLDER"]))
    return model.eval()


@bentoml.service(name="plain", workers=1)
class Plain:
    def __init__(self) -> None:
        self.model = _model()

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> dict:
        with torch.inference_mode():
            x = torch.tensor(instances, dtype=torch.float32)
            probabilities = torch.softmax(self.model(x), dim=1)
        return {"labels": probabilities.argmax(1).tolist(), "probabilities": probabilities.tolist()}


@bentoml.service(name="plain-batchable", workers=1)
class Batchable:
    def __init__(self) -> None:
        self.model = _model()

    @bentoml.api(batchable=True, max_batch_size=OPTIONS.max_batch, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(instances, dtype=np.float32))
            return torch.softmax(self.model(x), dim=1).numpy()
