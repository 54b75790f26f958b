"""The model a server answers with: the registry's champion, or a pinned version.

Two kinds of model answer through one small interface (:class:`ServedModel`): loopline's
own networks (:class:`LoadedModel`, float rows validated against the recorded input
schema) and any MLflow Model with a signature
(:class:`loopline.serving.signature_model.SignatureModel`, named typed columns). The
registry's ``loopline.format`` tag says which a version is.

A background thread follows the ``champion`` alias. A new version is downloaded and
loaded beside the old one, then swapped in with one reference assignment, so requests in
flight finish on the model they started with and none is dropped. A version that fails
to load is reported and the current model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from loopline.core.layout import DIGEST_TAG, FORMAT_TAG, INPUT_SCHEMA
from loopline.core.settings import Settings
from loopline.ml.dataset import DatasetSchema
from loopline.ml.network_flavor import load_registered
from loopline.serving.labels import check_classes
from loopline.serving.requests import Limits, parse
from loopline.serving.signature_model import SignatureModel
from loopline.storage.registry import VersionInfo, model_folder, reader

log = logging.getLogger("loopline.serving")


class ServedModel(Protocol):
    """What the server asks of a model. ``rows`` are whatever :meth:`parse` returns; the
    batcher joins several requests' rows with :meth:`concat` for one :meth:`answer`."""

    name: str
    version: str

    def parse(self, body: bytes, content_type: str | None, limits: Limits) -> Any: ...
    def concat(self, parts: list) -> Any: ...
    def answer(self, rows) -> tuple[list[str], np.ndarray]: ...
    def logged_inputs(self, rows) -> np.ndarray | list[bytes]: ...
    def prediction(self, label: str, probabilities: np.ndarray) -> dict: ...
    def check_labels(self, labels: list) -> None: ...
    @property
    def classes(self) -> list[str] | None: ...  # the probabilities' order; None: a regressor


@dataclass(frozen=True)
class LoadedModel:
    """One of loopline's own networks."""

    name: str
    version: str
    model: nn.Module
    schema: DatasetSchema
    folder: Path

    @torch.inference_mode()
    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities ``(rows, classes)``, rounded to 6 places (as answered)."""
        x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        return torch.softmax(self.model(x), dim=1).numpy().astype(np.float64).round(6)

    def parse(self, body: bytes, content_type: str | None, limits: Limits) -> np.ndarray:
        return parse(body, content_type, self.schema, limits)

    def concat(self, parts: list[np.ndarray]) -> np.ndarray:
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def answer(self, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
        probabilities = self.probabilities(rows)
        classes = self.schema.classes
        return [classes[i] for i in probabilities.argmax(axis=1).tolist()], probabilities

    def logged_inputs(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def prediction(self, label: str, probabilities: np.ndarray) -> dict:
        return {"label": label, "probabilities": probabilities.tolist()}

    def check_labels(self, labels: list) -> None:
        check_classes(labels, self.schema.classes)

    @property
    def classes(self) -> list[str]:
        return list(self.schema.classes)


def load_version(settings: Settings, info: VersionInfo) -> ServedModel:
    folder = model_folder(settings, info)
    if info.tags.get(FORMAT_TAG) == "mlflow":
        return SignatureModel.load(info, folder)
    model, _ = load_registered(folder, info.tags.get(DIGEST_TAG))
    schema = DatasetSchema.from_json((folder / INPUT_SCHEMA).read_text())
    return LoadedModel(info.name, info.version, model, schema, folder)


class ChampionHolder:
    """The current model, kept in step with the registry by a polling thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        pinned: str | None,
        poll_s: float,
        on_load: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.on_load = on_load  # told each version it switches to
        self.pinned = pinned
        self.poll_s = poll_s
        self.current: ServedModel | None = None
        self.problem: str | None = "the model is still loading"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="champion", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> bool:
        """Load the version the registry names now; True when the model changed."""
        name = self.settings.model_name
        # Polled every few seconds: plain SQL where it can, and a missing store reads as
        # empty without being created (a first training run is migrating it).
        reads = reader(self.settings)
        info = reads.version(name, self.pinned) if self.pinned else reads.champion(name)
        if info is None:
            self.problem = f"model {name!r} has no champion yet; run `loopline run` first"
            return False
        if self.current is not None and self.current.version == info.version:
            return False
        loaded = load_version(self.settings, info)
        previous, self.current = self.current, loaded
        self.problem = None
        if self.on_load is not None:
            self.on_load(loaded.version)
        log.info(
            "serving %s version %s (was %s)",
            name,
            loaded.version,
            previous.version if previous else "none",
        )
        return True

    def _follow(self) -> None:
        reported = None
        while True:
            try:
                self.refresh()
            except Exception as exc:  # keep serving the current model; say why not switched
                self.problem = f"cannot load the registry's model: {exc}"
            if self.problem != reported and self.problem:
                log.warning("%s; serving %s", self.problem, self._serving())
            reported = self.problem
            if self.pinned and self.current is not None:
                return
            if self._stop.wait(self.poll_s):
                return

    def _serving(self) -> str:
        return f"version {self.current.version}" if self.current else "nothing"
