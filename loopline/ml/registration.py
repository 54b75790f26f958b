"""Registering a user's MLflow Model behind the gate: the work of ``loopline-register-model``.

1. The model must keep the contract (:func:`loopline.ml.model_contract.read_contract`),
   and the evaluation rows must hold its signature's columns and the label column.
2. Its files go into the registry (a run of the model's MLflow experiment), and are read
   back from there, checked against the digest recorded at that moment, before they load.
3. Beside the model, the registered folder keeps its card (contract, label column,
   classes), its reference (a sample of its training rows with their labels and the
   model's answers: the drift reference, and the rows a retraining starts from) and its
   guardrail (the evaluation rows, plus a share of the champion's own guardrail). The
   guardrail never goes into a retraining's data, so the gate's check on it stays fair.
4. Both models answer the same rows and :func:`loopline.ml.gate.decide` judges them, by
   task; ``champion`` moves only on its verdict, recorded on the version as for
   loopline's own models.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.core import lineage
from loopline.core.errors import UsageError
from loopline.core.layout import (
    DECISION,
    DIGEST_TAG,
    FORMAT_TAG,
    GUARDRAIL,
    PREDICTION,
    REFERENCE,
    TRIGGER_TAG,
)
from loopline.core.settings import Settings
from loopline.ml.gate import METRIC_FUNCTIONS, GateDecision, Rows, decide, decision_tags
from loopline.ml.mlflow_model import (
    CARD,
    MODEL,
    MlflowModel,
    ModelCard,
    load,
    load_verified,
    typed,
)
from loopline.ml.model_contract import file_digests, manifest_digest, read_contract
from loopline.storage.registry import CONTENT_TAG, METRIC_TAG, Registry, model_folder, reader

REGISTERED = "registered"  # the run artifact folder a version's source points at
GUARDRAIL_ROWS = 5000
REFERENCE_ROWS = 5000


class EvaluationRowsError(UsageError):
    """Evaluation rows that cannot judge the model."""


def register_model_step(
    model: Path,
    eval_rows: Path,
    train_rows: Path,
    out: Path,
    *,
    task: str,
    label_column: str,
    model_name: str,
    run_id: str,
    settings: Settings,
    trigger_id: str = "",
) -> dict:
    """Register the MLflow Model in ``model``; move ``champion`` only if the gate says so."""
    contract = read_contract(model, task or None)
    rows = read_rows(eval_rows)
    _check_rows(rows, contract, label_column, "evaluation")
    train = read_rows(train_rows)
    _check_rows(train, contract, label_column, "training")
    content = manifest_digest(file_digests(model))
    reads = reader(settings)
    champion = reads.champion(model_name)
    existing = reads.find_version(model_name, content)
    registry = Registry(settings)
    if existing is not None:
        version, folder = existing, model_folder(settings, existing)
        challenger = load(folder, existing.tags[DIGEST_TAG])
    else:
        version, folder, challenger = _register(
            registry,
            model,
            (rows, train),
            contract,
            label_column,
            model_name,
            content,
            run_id,
            trigger_id,
        )
    metrics = headline(challenger, rows, settings.gate.metric)
    if existing is not None and champion is not None:
        decision = GateDecision(
            False,
            _metric(contract.task, settings),
            {},
            metrics[_metric(contract.task, settings)],
            champion.version,
            reasons=[f"same files as v{existing.version}; champion stays v{champion.version}"],
        )
    else:
        decision = _gate(settings, champion, challenger, rows, metrics)
        registry.set_tags(
            model_name,
            version.version,
            {f"{METRIC_TAG}{k}": f"{v:.6f}" for k, v in metrics.items()},
        )
        registry.set_tags(model_name, version.version, decision_tags(decision))
        if decision.promote:
            registry.promote(model_name, version.version)
    result = {
        "model_name": model_name,
        "version": version.version,
        "promoted": decision.promote,
        "task": contract.task,
        "decision": decision.to_dict(),
        "metrics": metrics,
        "pickled": contract.pickled,
        "registered_folder": str(folder),
        "tracking_uri": settings.tracking_uri,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / DECISION).write_text(json.dumps(result, indent=2, default=str))
    result["lineage"] = lineage.record(
        out,
        run_id=run_id,
        step="register-model",
        inputs={
            "model": content,
            "eval_rows": lineage.content_hash(eval_rows),
            "train_rows": lineage.content_hash(train_rows),
        },
        parameters={"task": contract.task, "label_column": label_column, "model_name": model_name},
    )
    return result


def read_rows(path: Path) -> pd.DataFrame:
    """Rows from a Parquet or CSV file, or a folder of Parquet files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise EvaluationRowsError(f"{path} holds no .parquet file; write the rows as Parquet")
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if not path.is_file():
        raise EvaluationRowsError(f"{path} does not exist; pass the labelled evaluation rows")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        raise EvaluationRowsError(
            f"{path} is not a Parquet file ({exc}); write it with to_parquet"
        ) from None


def headline(model: MlflowModel, rows: pd.DataFrame, metric: str) -> dict[str, float]:
    """The model's headline metrics on labelled ``rows``."""
    answers = model.predict(model.frame(rows[model.card.columns].to_dict("records")))
    truth = rows[model.card.label_column]
    if model.card.task == "regression":
        errors = answers.values - truth.to_numpy(np.float64)
        return {
            "mae": float(np.mean(np.abs(errors))),
            "rmse": float(np.sqrt(np.mean(errors**2))),
        }
    classes = sorted(set(map(str, truth)) | set(answers.labels))
    index = {c: i for i, c in enumerate(classes)}
    true = np.array([index[str(v)] for v in truth])
    predicted = np.array([index[v] for v in answers.labels])
    scores = {"accuracy": METRIC_FUNCTIONS["accuracy"](true, predicted, len(classes))}
    scores[metric] = METRIC_FUNCTIONS[metric](true, predicted, len(classes))
    return {k: float(v) for k, v in scores.items()}


def _register(registry, model, data, contract, label_column, model_name, content, run_id, trigger):
    """Log the files, load them back from the registry, and complete the folder."""
    rows, train = data
    mlflow_run = registry.start_run(
        model_name, params={"task": contract.task}, tags={"loopline.run_id": run_id}
    )
    registry.log_files(mlflow_run, model, f"{REGISTERED}/{MODEL}")
    folder = registry.local_artifacts(mlflow_run, REGISTERED)
    if manifest_digest(file_digests(folder / MODEL)) != content:
        raise RuntimeError("the registry's copy of the model differs from the model's files")
    # The registry's copy, just checked; the classes come from the loaded model itself.
    loaded = load_verified(folder / MODEL, ModelCard(contract, label_column))
    card = ModelCard(contract, label_column, loaded.classes)
    loaded = loaded.with_card(card)
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp)
        (extra / CARD).write_text(card.to_json())
        _reference(loaded, train).to_parquet(extra / REFERENCE, index=False)
        trusted = rows if not trigger else rows.iloc[:0]  # a retraining's rows are feedback
        _guardrail(registry, model_name, trusted, card).to_parquet(extra / GUARDRAIL, index=False)
        registry.log_files(mlflow_run, extra, REGISTERED)
    folder = registry.local_artifacts(mlflow_run, REGISTERED)
    digest = manifest_digest(file_digests(folder))
    tags = {
        FORMAT_TAG: "mlflow",
        DIGEST_TAG: digest,
        CONTENT_TAG: content,
        "loopline.task": contract.task,
        "loopline.run_id": run_id,
        "loopline.pickled": str(contract.pickled).lower(),
        **({TRIGGER_TAG: trigger} if trigger else {}),
    }
    version = registry.create_version(
        model_name,
        source=registry.artifact_uri(mlflow_run, REGISTERED),
        run_id=mlflow_run,
        tags=tags,
    )
    return version, folder, loaded


def _reference(model: MlflowModel, train: pd.DataFrame) -> pd.DataFrame:
    """A sample of the training rows, labelled, with the model's answers."""
    sample = train.sample(n=min(len(train), REFERENCE_ROWS), random_state=0)
    frame = model.frame(sample[model.card.columns].to_dict("records"))
    answers = model.predict(frame)
    frame[model.card.label_column] = sample[model.card.label_column].to_numpy()
    frame[PREDICTION] = answers.values if model.card.task == "regression" else answers.labels
    return frame.reset_index(drop=True)


def _guardrail(registry, model_name: str, rows: pd.DataFrame, card: ModelCard) -> pd.DataFrame:
    """These trusted rows, plus the champion's guardrail: a chain of retrainings keeps the
    reviewed held-out rows in view, and feedback never joins them."""
    keep = [*card.columns, card.label_column]
    parts = [rows[keep]]
    champion = reader(registry.settings).champion(model_name)
    if champion is not None and champion.tags.get(FORMAT_TAG) == "mlflow":
        inherited = model_folder(registry.settings, champion) / GUARDRAIL
        if inherited.exists():
            frame = pd.read_parquet(inherited)
            if set(keep) <= set(frame.columns):
                parts.append(frame[keep])
    guardrail = pd.concat(parts, ignore_index=True)
    return guardrail.sample(n=min(len(guardrail), GUARDRAIL_ROWS), random_state=0)


def _metric(task: str, settings: Settings) -> str:
    return "mae" if task == "regression" else settings.gate.metric


def _gate(settings, champion, challenger: MlflowModel, rows, metrics) -> GateDecision:
    policy, task = settings.gate, challenger.card.task
    score = metrics[_metric(task, settings)]
    if champion is None:
        return decide(policy, challenger_score=score, evidence=None, task=task)
    try:
        if champion.tags.get(FORMAT_TAG) != "mlflow":
            raise ValueError("it is one of loopline's built-in models, not an MLflow Model")
        folder = model_folder(settings, champion)
        held = load(folder, champion.tags[DIGEST_TAG])
        if held.card.task != task or held.card.columns != challenger.card.columns:
            raise ValueError(
                f"it is a {held.card.task} model over columns {held.card.columns}; register "
                "this one under another model name"
            )
    except Exception as exc:  # a tampered or unloadable champion must not crash the gate
        return decide(
            policy,
            challenger_score=score,
            evidence=None,
            champion_version=champion.version,
            incompatible=str(exc),
            task=task,
        )
    # Rows the champion trained on would favour it: a retraining's data holds some (its
    # reference), and the user's split may put them in the test rows.
    fresh = unseen(rows, folder / REFERENCE, challenger.card)
    evidence, classes = _rows(challenger, held, fresh)
    guardrail = None
    if (folder / GUARDRAIL).exists():
        guardrail, more = _rows(challenger, held, pd.read_parquet(folder / GUARDRAIL))
        classes = max(classes, more)
    decision = decide(
        policy,
        challenger_score=score,
        evidence=evidence,
        guardrail=guardrail,
        champion_version=champion.version,
        num_classes=classes,
        task=task,
    )
    if len(fresh) < len(rows):
        decision.reasons.append(
            f"{len(rows) - len(fresh)} of the {len(rows)} evaluation rows were left out: "
            f"champion v{champion.version} trained on them"
        )
    return decision


def unseen(rows: pd.DataFrame, reference: Path, card: ModelCard) -> pd.DataFrame:
    """``rows`` less those in the reference (the champion's training rows), matched on
    the typed signature columns and the label."""
    if not reference.exists():
        return rows
    seen = pd.read_parquet(reference)
    if card.label_column not in seen:
        return rows
    return rows[~_keys(rows, card).isin(set(_keys(seen, card)))]


def _keys(frame: pd.DataFrame, card: ModelCard) -> pd.Series:
    typed_rows = typed(frame[card.columns], card.contract)
    typed_rows[card.label_column] = frame[card.label_column].astype(str).to_numpy()
    return pd.Series(pd.util.hash_pandas_object(typed_rows, index=False).to_numpy())


def _rows(challenger: MlflowModel, champion: MlflowModel, rows: pd.DataFrame):
    records = rows[challenger.card.columns].to_dict("records")
    ours = challenger.predict(challenger.frame(records))
    theirs = champion.predict(champion.frame(records))
    truth = rows[challenger.card.label_column]
    if challenger.card.task == "regression":
        return Rows(truth.to_numpy(np.float64), ours.values, theirs.values), 0
    classes = sorted(set(map(str, truth)) | set(ours.labels) | set(theirs.labels))
    index = {c: i for i, c in enumerate(classes)}
    return (
        Rows(
            np.array([index[str(v)] for v in truth]),
            np.array([index[v] for v in ours.labels]),
            np.array([index[v] for v in theirs.labels]),
        ),
        len(classes),
    )


def _check_rows(rows: pd.DataFrame, contract, label_column: str, which: str) -> None:
    needed = [c.name for c in contract.columns] + [label_column]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise EvaluationRowsError(
            f"the {which} rows lack column(s) {', '.join(missing)}; they need the model's "
            f"signature columns and the label column {label_column!r}"
        )
    if not contract.columns:
        raise EvaluationRowsError(
            "the model takes a tensor; loopline-register-model needs a model whose signature "
            "names its input columns"
        )
    if rows[label_column].isna().any():
        raise EvaluationRowsError(
            f"the label column {label_column!r} of the {which} rows has empty values"
        )
    if contract.task == "regression" and not pd.api.types.is_numeric_dtype(rows[label_column]):
        raise EvaluationRowsError(
            f"the label column {label_column!r} of the {which} rows holds "
            f"{rows[label_column].dtype} values; a regression needs numbers"
        )
    if len(rows) == 0:
        raise EvaluationRowsError(f"the {which} rows are empty")
