"""The one model contract: an MLflow Model with a signature and a declared task.

A model enters the loop as an MLflow Model folder (``MLmodel`` beside its files), of any
flavor with a Python loader. Before anything runs, :func:`read_contract` checks what the
loop relies on, reading ``MLmodel`` as YAML (no MLflow import, nothing loaded):

- a signature: input columns with their types (numeric, integer, boolean, categorical
  string, free text) or a tensor, and an output;
- the task, ``classification`` or ``regression``, given at registration or in the
  model's ``metadata: {loopline: {task: ...}}``, and one that matches the output: labels
  (strings) are not a regression, numbers with a fraction are not labels;
- which string columns are free text: ``metadata: {loopline: {text_columns: [...]}}``;
  every other string column is categorical.

Pickled flavors (scikit-learn's pickle and cloudpickle formats, a cloudpickled pyfunc, a
pickled PyTorch module) are code. :func:`file_digests` is recorded at registration and
:func:`verify` refuses a folder whose files changed before every load; a model file from
anywhere but the registry is never unpickled. scikit-learn's ``skops`` format is not a
pickle: prefer it where the model allows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from loopline.core.errors import UsageError

TASKS = ("classification", "regression")
NUMERIC = {"double", "float", "float64", "float32", "float16"}
INTEGER = {"long", "integer", "int64", "int32", "int16", "int8", "uint8"}
LABELS = {"string", "str", "object", "bool", "boolean"}
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".cloudpickle"}
CHUNK = 1 << 20


class ModelContractError(UsageError):
    """A model that cannot enter the loop; the message names the problem and the fix."""


class ModelTampered(UsageError):
    """A registered model's files are not the ones registered."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the signature's type: double, long, boolean, string, ...
    kind: str  # numeric, integer, boolean, categorical or text


@dataclass(frozen=True)
class ModelContract:
    task: str
    flavors: tuple[str, ...]
    columns: tuple[Column, ...]  # empty for a tensor input
    tensor: dict | None  # the input tensor's dtype and shape, for a tensor model
    output: str  # the output's type or dtype
    pickled: bool

    @property
    def text_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "text"]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        raw = json.loads(text)
        columns = tuple(Column(**c) for c in raw.pop("columns"))
        return cls(**{**raw, "columns": columns, "flavors": tuple(raw["flavors"])})


def read_contract(folder: Path, task: str | None = None) -> ModelContract:
    """The contract of the MLflow Model in ``folder``; ModelContractError naming the fix."""
    mlmodel = Path(folder) / "MLmodel"
    if not mlmodel.is_file():
        raise ModelContractError(
            f"{folder} holds no MLmodel file: save the model with an MLflow flavor "
            "(mlflow.sklearn.save_model, mlflow.pytorch.save_model, mlflow.pyfunc.save_model)"
        )
    spec = yaml.safe_load(mlmodel.read_text()) or {}
    flavors = tuple(spec.get("flavors") or {})
    if "python_function" not in flavors:
        raise ModelContractError(
            f"{folder}: the model's flavors ({', '.join(flavors) or 'none'}) have no Python "
            "loader; save it with a flavor that has one, or as an mlflow.pyfunc model"
        )
    signature = spec.get("signature") or {}
    if not signature.get("inputs"):
        raise ModelContractError(
            f"{folder}: the model has no signature; log it with "
            "signature=mlflow.models.infer_signature(X, model.predict(X))"
        )
    if not signature.get("outputs"):
        raise ModelContractError(
            f"{folder}: the model's signature has no output, so its task cannot be checked; "
            "infer it from a prediction: infer_signature(X, model.predict(X))"
        )
    ours = (spec.get("metadata") or {}).get("loopline") or {}
    task = task or ours.get("task")
    if task not in TASKS:
        raise ModelContractError(
            f"{folder}: the task is {task!r}; declare classification or regression "
            "(at registration, or metadata={'loopline': {'task': ...}} when logging)"
        )
    inputs, outputs = json.loads(signature["inputs"]), json.loads(signature["outputs"])
    columns, tensor = _inputs(folder, inputs, set(ours.get("text_columns") or []))
    output = _type(outputs[0])
    _check_task(folder, task, output)
    return ModelContract(task, flavors, columns, tensor, output, _pickled(folder, spec))


def file_digests(folder: Path) -> dict[str, str]:
    """The sha256 of every file under ``folder``, by relative path. A link is refused: a
    model's files are its own."""
    folder = Path(folder)
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ModelContractError(f"{path} is a link; a model folder holds its own files")
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(CHUNK):
                    digest.update(block)
            digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def manifest_digest(digests: dict[str, str]) -> str:
    """One sha256 for a whole folder: of its files' digests, by path. Recorded in the
    registry at registration, where the folder's own files cannot change it."""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def verify_digest(folder: Path, registered: str) -> None:
    """Refuse ``folder`` unless its files digest to the registered manifest digest."""
    if manifest_digest(file_digests(folder)) != registered:
        raise ModelTampered(
            f"{folder} is not the model that was registered (its files' sha256 differ from "
            "the registry's record); it is not loaded. Register the model again from its source"
        )


def verify(folder: Path, registered: dict[str, str]) -> None:
    """Refuse ``folder`` unless its files are exactly the registered ones."""
    found = file_digests(folder)
    changed = sorted(p for p in registered.keys() & found.keys() if registered[p] != found[p])
    added, missing = sorted(found.keys() - registered), sorted(registered.keys() - found)
    if changed or added or missing:
        what = "; ".join(
            f"{label}: {', '.join(paths[:5])}"
            for label, paths in (("changed", changed), ("added", added), ("missing", missing))
            if paths
        )
        raise ModelTampered(
            f"{folder} is not the model that was registered ({what}); it is not loaded. "
            "Register the model again from its source"
        )


def _inputs(folder: Path, inputs: list[dict], text: set[str]):
    if inputs and inputs[0].get("type") == "tensor":
        return (), dict(inputs[0].get("tensor-spec") or {})
    columns = []
    for spec in inputs:
        name, kind = spec.get("name"), _type(spec)
        if name is None:
            raise ModelContractError(f"{folder}: every input column needs a name in the signature")
        columns.append(Column(name, kind, _kind(kind, name in text)))
    unknown = sorted(text - {c.name for c in columns if c.type in LABELS})
    if unknown:
        raise ModelContractError(
            f"{folder}: text_columns names {', '.join(unknown)}, which are not string inputs"
        )
    return tuple(columns), None


def _type(spec: dict) -> str:
    if spec.get("type") == "tensor":
        return str((spec.get("tensor-spec") or {}).get("dtype", "unknown"))
    return str(spec.get("type", "unknown"))


def _kind(kind: str, is_text: bool) -> str:
    if kind in NUMERIC:
        return "numeric"
    if kind in INTEGER:
        return "integer"
    if kind in {"bool", "boolean"}:
        return "boolean"
    return "text" if is_text else "categorical"


def _check_task(folder: Path, task: str, output: str) -> None:
    if task == "regression" and output in LABELS:
        raise ModelContractError(
            f"{folder}: declared regression, but the model answers labels ({output}); "
            "declare classification, or answer numbers"
        )
    if task == "classification" and output in NUMERIC:
        raise ModelContractError(
            f"{folder}: declared classification, but the model answers numbers ({output}); "
            "declare regression, or answer the class labels"
        )


def _pickled(folder: Path, spec: dict) -> bool:
    sklearn = (spec.get("flavors") or {}).get("sklearn") or {}
    if sklearn and sklearn.get("serialization_format", "pickle") != "skops":
        return True
    return any(p.suffix in PICKLE_SUFFIXES for p in Path(folder).rglob("*") if p.is_file())
