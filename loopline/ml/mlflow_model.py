"""A user's MLflow Model in the loop: loaded only from the registry, and asked for answers
in one shape whatever its flavor.

A registered folder holds the MLflow Model (``model/``) beside what the loop keeps with it:
``card.json`` (the contract, the label column and a classifier's classes), the drift
reference and the guardrail rows. Its sha256 manifest is recorded in the registry, and
:func:`load` verifies the folder against it before MLflow reads a byte: pickled flavors
are code, and only files the registry vouches for are ever unpickled.

Answers: a classifier gives labels, and probabilities when its flavor has them (a
scikit-learn model's ``predict_proba``, in ``classes_`` order); a regressor gives numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.ml.model_contract import ModelContract, verify_digest

MODEL = "model"  # the MLflow Model inside a registered folder
CARD = "card.json"
ALLOW_PICKLE = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
_allow_lock = threading.Lock()


@dataclass(frozen=True)
class ModelCard:
    """What the loop keeps about a registered MLflow Model."""

    contract: ModelContract
    label_column: str
    classes: tuple[str, ...] = ()  # a classifier's, in probability order

    @property
    def task(self) -> str:
        return self.contract.task

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.contract.columns]

    def to_json(self) -> str:
        return json.dumps(
            {
                "contract": json.loads(self.contract.to_json()),
                "label_column": self.label_column,
                "classes": list(self.classes),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        raw = json.loads(text)
        contract = ModelContract.from_json(json.dumps(raw["contract"]))
        return cls(contract, raw["label_column"], tuple(raw["classes"]))


@dataclass(frozen=True)
class Answers:
    labels: list[str]  # a classifier's labels; a regressor's numbers, as text
    values: np.ndarray | None  # a regressor's numbers
    probabilities: np.ndarray | None  # (rows, classes), when the model has them


class MlflowModel:
    """One loaded, verified model; :meth:`predict` is safe to call from one thread."""

    def __init__(self, card: ModelCard, pyfunc, estimator=None):
        self.card = card
        self._pyfunc = pyfunc
        self._estimator = estimator  # a scikit-learn model with predict_proba
        # Its probabilities' order: the estimator's own, whatever the card says.
        self.classes = tuple(str(c) for c in estimator.classes_) if estimator is not None else ()

    def with_card(self, card: ModelCard) -> MlflowModel:
        return MlflowModel(card, self._pyfunc, self._estimator)

    def frame(self, records: list[dict]) -> pd.DataFrame:
        """Records (column -> value, already checked) as a frame typed by the signature:
        built column by column, once (a request's rows go through here on every answer)."""
        return pd.DataFrame(
            {
                c.name: np.asarray([r[c.name] for r in records], dtype=_dtype(c))
                for c in self.card.contract.columns
            }
        )

    def predict(self, frame: pd.DataFrame) -> Answers:
        if self.card.task == "regression":
            values = _flat(self._pyfunc.predict(frame)).astype(np.float64)
            return Answers([repr(float(v)) for v in values], values, None)
        if self._estimator is not None:
            probabilities = np.asarray(self._estimator.predict_proba(frame), dtype=np.float64)
            classes = self.classes
            labels = [classes[i] for i in probabilities.argmax(axis=1).tolist()]
            return Answers(labels, None, probabilities)
        return Answers([str(v) for v in _flat(self._pyfunc.predict(frame)).tolist()], None, None)


def typed(frame: pd.DataFrame, contract: ModelContract) -> pd.DataFrame:
    """``frame``'s signature columns, in signature order, with the signature's types."""
    return pd.DataFrame(
        {c.name: frame[c.name].astype(_dtype(c)) for c in contract.columns}, index=frame.index
    )


def _dtype(column) -> str:
    if column.kind == "numeric":
        return "float32" if column.type == "float" else "float64"
    if column.kind == "integer":
        return "int32" if column.type == "integer" else "int64"
    return "bool" if column.kind == "boolean" else "object"


def read_card(folder: Path) -> ModelCard:
    return ModelCard.from_json((Path(folder) / CARD).read_text())


def registered_card(folder: Path, digest: str) -> ModelCard:
    """The card of a registered folder whose files are the registered ones (the monitor
    trusts its reference only then)."""
    verify_digest(folder, digest)
    return read_card(folder)


def load(folder: Path, digest: str) -> MlflowModel:
    """The registered folder's model, after its files are checked against ``digest``.
    MLflow's check of the installed packages against the model's requirements (1.2 s:
    it reads every installed distribution's files) ran when the model was registered."""
    folder = Path(folder)
    verify_digest(folder, digest)
    return load_verified(folder / MODEL, read_card(folder), check_requirements=False)


def load_verified(model: Path, card: ModelCard, *, check_requirements: bool = True) -> MlflowModel:
    """The MLflow Model in ``model``, whose files the caller has just checked against the
    registry's record (:func:`load`, or registration's check of the registry's copy).
    With ``check_requirements``, MLflow warns of installed packages that differ from the
    versions the model was saved with."""
    with allow_pickle():
        import mlflow.pyfunc

        pyfunc = mlflow.pyfunc.load_model(str(model), suppress_warnings=not check_requirements)
        estimator = None
        if card.task == "classification" and "sklearn" in card.contract.flavors:
            estimator = _estimator(pyfunc, model)
    return MlflowModel(card, pyfunc, estimator)


def _estimator(pyfunc, model: Path):
    """The scikit-learn classifier behind ``pyfunc``, for its probabilities: the one the
    pyfunc loaded when scikit-learn's flavor loads it (loading the files again cost a
    second deserialization), else scikit-learn's own load. None if it has no
    ``predict_proba``."""
    try:
        loaded = pyfunc.get_raw_model()
    except NotImplementedError:  # another flavor's pyfunc, beside a scikit-learn flavor
        loaded = None
    if not hasattr(loaded, "classes_"):
        import mlflow.sklearn

        loaded = mlflow.sklearn.load_model(str(model))
    return loaded if hasattr(loaded, "predict_proba") and hasattr(loaded, "classes_") else None


@contextlib.contextmanager
def allow_pickle():
    """MLflow refuses to deserialize unless told to: told only around a verified load."""
    with _allow_lock:
        before = os.environ.get(ALLOW_PICKLE)
        os.environ[ALLOW_PICKLE] = "true"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(ALLOW_PICKLE, None)
            else:
                os.environ[ALLOW_PICKLE] = before


def _flat(predicted) -> np.ndarray:
    if isinstance(predicted, pd.DataFrame):
        predicted = predicted.iloc[:, 0]
    return np.asarray(predicted).reshape(len(predicted), -1)[:, 0]
