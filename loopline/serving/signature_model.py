"""Serving any registered MLflow Model with a signature.

Requests are checked against the signature's named, typed columns
(:func:`loopline.serving.requests.parse_records`); the log keeps each instance as sent,
as one JSON object in column order, for the monitor to read back by type. A classifier
answers its label, with the probability of each class by name when its flavor has them;
a regressor answers its number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loopline.core.layout import DIGEST_TAG
from loopline.ml.mlflow_model import MlflowModel, load
from loopline.serving.labels import check_classes
from loopline.serving.requests import Limits, RequestError, parse_records
from loopline.storage.registry import VersionInfo


@dataclass(frozen=True)
class SignatureModel:
    name: str
    version: str
    model: MlflowModel
    folder: Path

    @classmethod
    def load(cls, info: VersionInfo, folder: Path) -> SignatureModel:
        return cls(info.name, info.version, load(folder, info.tags[DIGEST_TAG]), folder)

    @property
    def task(self) -> str:
        return self.model.card.task

    @property
    def classes(self) -> list[str] | None:
        return list(self.model.classes) if self.task == "classification" else None

    def parse(self, body: bytes, content_type: str | None, limits: Limits) -> list[dict]:
        return parse_records(body, content_type, list(self.model.card.contract.columns), limits)

    def concat(self, parts: list[list[dict]]) -> list[dict]:
        return parts[0] if len(parts) == 1 else [row for part in parts for row in part]

    def answer(self, rows: list[dict]) -> tuple[list[str], np.ndarray]:
        answers = self.model.predict(self.model.frame(rows))
        if answers.probabilities is None:
            return answers.labels, np.zeros((len(rows), 0))
        return answers.labels, answers.probabilities.round(6)

    def logged_inputs(self, rows: list[dict]) -> list[bytes]:
        return [json.dumps(row, separators=(",", ":")).encode() for row in rows]

    def prediction(self, label: str, probabilities: np.ndarray) -> dict:
        if self.task == "regression":
            return {"value": float(label)}
        if not len(probabilities):
            return {"label": label}
        return {
            "label": label,
            "probabilities": dict(zip(self.model.classes, probabilities.tolist(), strict=True)),
        }

    def check_labels(self, labels: list) -> None:
        if self.task == "classification":
            check_classes(labels, list(self.model.classes) or None)
            return
        for label in labels:
            try:
                number = float(label.label)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise RequestError(
                    422,
                    f"label {label.label!r} (request {label.request_id}) is not a number; a "
                    "regressor's labels are its true values; nothing was stored",
                )
