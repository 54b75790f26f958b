"""loopline's own networks as MLflow Models: the built-in case of the one model contract.

A trained network's folder (safetensors weights, the architecture as JSON, the input
schema) also holds an ``MLmodel`` file, so it is an MLflow Model like a user's:

- a ``python_function`` flavor whose loader is this module: it rebuilds the network from
  JSON and reads safetensors, so loading it unpickles nothing;
- a tensor signature, ``float32`` rows of the schema's features in, a class label out;
- ``metadata: {loopline: {task: classification}}``.

:func:`loopline.ml.model_contract.read_contract` reads it as it reads any model;
registration records the folder's sha256 manifest, and :func:`load_registered` checks it
before every load, as :func:`loopline.ml.mlflow_model.load` does for a user's model.
``mlflow.pyfunc.load_model`` answers with it too. Serving keeps its batched tensor path
(:class:`loopline.serving.champion.LoadedModel`) for a tensor signature.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from loopline.core.layout import INPUT_SCHEMA
from loopline.ml.dataset import DatasetSchema
from loopline.ml.model_contract import verify_digest

MLMODEL = "MLmodel"


def write_mlmodel(folder: Path, schema: DatasetSchema) -> None:
    """Make the network in ``folder`` an MLflow Model. Deterministic (no time, no uuid):
    the same network's folder hashes the same, so a re-run registers no new version."""

    def tensor(dtype: str, width: int) -> str:
        return json.dumps(
            [{"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": [-1, width]}}]
        )

    spec = {
        "flavors": {
            "python_function": {
                "loader_module": __name__,
                "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
            }
        },
        "signature": {
            "inputs": tensor("float32", len(schema.features)),
            "outputs": json.dumps([{"type": "string", "name": "label"}]),
        },
        "metadata": {"loopline": {"task": "classification", "classes": schema.classes}},
    }
    (Path(folder) / MLMODEL).write_text(yaml.safe_dump(spec, sort_keys=True))


def load_registered(folder: Path, digest: str | None):
    """The registered network in ``folder``, ``(module, spec)``, after its files are
    checked against the registry's ``digest``. A version registered before digests were
    recorded has none; its files are safetensors and JSON, which load without running code."""
    from loopline.ml.weights import load_model

    if digest:
        verify_digest(folder, digest)
    return load_model(folder)


class _Network:
    """What ``mlflow.pyfunc.load_model`` returns for a network: labels for float rows."""

    def __init__(self, folder: Path):
        from loopline.ml.weights import load_model

        self.net, _ = load_model(folder)
        self.schema = DatasetSchema.from_json((folder / INPUT_SCHEMA).read_text())

    def predict(self, model_input, params=None) -> np.ndarray:
        import torch

        rows = np.ascontiguousarray(np.asarray(model_input, dtype=np.float32))
        with torch.inference_mode():
            index = self.net(torch.from_numpy(rows)).argmax(dim=1).numpy()
        return np.asarray(self.schema.classes, dtype=object)[index]


def _load_pyfunc(path: str) -> _Network:
    """MLflow's loader hook (``loader_module``)."""
    return _Network(Path(path))
