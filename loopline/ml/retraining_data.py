"""The retraining dataset: the champion's reference data plus newly labelled production data.

The labelled rows are split by time: the newest share becomes the test split, so the gate
scores the challenger and the champion on the most recent labelled data, which the
challenger never trained on. Items a reviewer labelled (``LOOPLINE_LABEL_REVIEWERS``) are
not trained on at all: they join the guardrail with the champion's, and the gate checks
the challenger there too. The KFP component is :mod:`loopline.components.assemble`.
"""

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from loopline.core import lineage
from loopline.core.errors import LooplineError
from loopline.core.layout import GUARDRAIL, INPUT_SCHEMA, REFERENCE, TRIGGER
from loopline.core.settings import Settings
from loopline.ml.dataset import LABEL, DatasetSchema, Split, write_dataset
from loopline.ml.steps import reports_failure
from loopline.storage.database import open_for_reading
from loopline.storage.feedback import FeedbackStore
from loopline.storage.registry import Registry

MIN_LABELLED = 20


class RetrainingDataError(LooplineError, ValueError):
    """Not enough labelled data to retrain on, or no champion to start from."""


@reports_failure
def assemble_step(
    out: Path,
    *,
    model_name: str,
    since: int,
    trigger: dict,
    settings: Settings,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> dict:
    registry = Registry(settings)
    champion = registry.champion(model_name)
    if champion is None:
        raise RetrainingDataError(f"model {model_name!r} has no champion to retrain")
    folder = registry.download(champion)
    schema = DatasetSchema.from_json((folder / INPUT_SCHEMA).read_text())
    reference = pd.read_parquet(folder / REFERENCE)
    held_out = pd.read_parquet(folder / GUARDRAIL) if (folder / GUARDRAIL).exists() else None
    database = open_for_reading(settings)
    if database is None:
        raise RetrainingDataError("the prediction log is empty: nothing was served yet")
    try:
        store = FeedbackStore(database, settings.labels.conflicts)
        through = trigger.get("labels_through")  # what the label checks judged
        labelled = _unreviewed(store, since, settings, through=through)
        reviewed = store.reviewed(since, settings.labels.reviewers, through=through)
    finally:
        database.close()
    labelled = labelled[labelled["label"].isin(schema.classes)]
    if len(labelled) < MIN_LABELLED:
        raise RetrainingDataError(
            f"{len(labelled)} labelled predictions since the drift window; need {MIN_LABELLED}."
            " Send labels with `loopline feedback` or POST /feedback, then monitor again."
        )
    new = _rows(labelled, schema)  # in the order they were served
    # Neither the champion's training rows nor its held-out guardrail rows are new data.
    judged = _rows(reviewed, schema)  # the same inputs labelled under another key, too
    new = _unseen(new, [reference, held_out, judged], schema.features)
    if len(new) < MIN_LABELLED:
        raise RetrainingDataError(
            f"only {len(new)} labelled predictions are new to the champion's training data; "
            f"need {MIN_LABELLED}"
        )
    splits = _splits(reference, new, schema, test_fraction, seed)
    write_dataset(out, schema, splits)
    (out / TRIGGER).write_text(json.dumps(trigger, indent=2))
    # The new model keeps guarding what the champion guarded, and the reviewed rows.
    trusted = [f for f in (held_out, judged) if f is not None and len(f)]
    if trusted:
        pd.concat(trusted, ignore_index=True).to_parquet(out / GUARDRAIL, index=False)
    summary = {
        "champion_version": champion.version,
        "reference_rows": len(reference),
        "labelled_rows": len(new),
        "reviewed_rows": len(reviewed),
        "rows": {name: len(split.y) for name, split in splits.items()},
        "trigger": trigger,
    }
    summary["lineage"] = lineage.record(
        out,
        run_id=str(trigger.get("run_id", "")),
        step="assemble",
        inputs={"champion": champion.tags.get("loopline.content_hash", champion.version)},
        parameters={"since": since, "test_fraction": test_fraction, "trigger": trigger},
    )
    return summary


def _unreviewed(
    store: FeedbackStore,
    since: int,
    settings: Settings,
    records: bool = False,
    through: int | None = None,
):
    """The labelled predictions after ``since`` that no reviewer labelled: reviewed items
    judge the new model (in its guardrail, and the label checks); it never trains on them.
    ``through``: none labelled after that label event (what the label checks judged)."""
    labelled = store.labelled(since, records=records, through=through)
    reviewed = store.reviewed(since, settings.labels.reviewers, records=records)
    judged = set(zip(reviewed["request_id"], reviewed["item"], strict=True))
    keys = zip(labelled["request_id"], labelled["item"], strict=True)
    return labelled[[k not in judged for k in keys]]


def _rows(labelled: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame | None:
    """Labelled predictions as dataset rows: the features, and the label's class index."""
    labelled = labelled[labelled["label"].isin(schema.classes)]
    if labelled.empty:
        return None
    frame = pd.DataFrame(
        np.stack(labelled["inputs"].to_numpy()).astype(np.float32), columns=schema.features
    )
    frame[LABEL] = labelled["label"].map(schema.classes.index).to_numpy()
    return frame


def _unseen(new: pd.DataFrame, known_frames: list, features: list[str]) -> pd.DataFrame:
    """Distinct labelled rows the champion neither trained on nor holds out. A repeated
    request, or a row labelled again after an earlier retraining took it in, would
    otherwise sit in two splits at once (validation refuses that) and flatter the gate."""
    new = new.drop_duplicates(subset=features)
    known = set()
    for frame in known_frames:
        if frame is not None:
            known |= set(
                pd.util.hash_pandas_object(frame[features].astype(np.float32), index=False)
            )
    hashes = pd.util.hash_pandas_object(new[features], index=False)
    return new[~hashes.isin(known).to_numpy()]


def _splits(
    reference: pd.DataFrame,
    new: pd.DataFrame,
    schema: DatasetSchema,
    test_fraction: float,
    seed: int,
) -> dict[str, Split]:
    """Split by time: test is the newest labelled rows, val the ones before them (with
    reference rows), train the older rest and the reference. The challenger never trains
    on a row it is judged on, and is judged on the traffic it will meet next."""
    n_test = max(1, int(len(new) * test_fraction))
    n_val_new = max(1, int(len(new) * 0.15))
    train_new, val_new, test = (
        new[: len(new) - n_test - n_val_new],
        new[len(new) - n_test - n_val_new : len(new) - n_test],
        new[len(new) - n_test :],
    )
    reference = reference.sample(frac=1.0, random_state=seed)
    n_val_ref = max(1, int(len(reference) * 0.15))
    val = pd.concat([val_new, reference[:n_val_ref]])
    train = pd.concat([train_new, reference[n_val_ref:]]).sample(frac=1.0, random_state=seed)
    return {
        name: _split(frame, schema)
        for name, frame in (("train", train), ("val", val), ("test", test))
    }


def _split(frame: pd.DataFrame, schema: DatasetSchema) -> Split:
    return Split(
        x=frame[schema.features].to_numpy(dtype=np.float32),
        y=frame[LABEL].to_numpy(dtype=np.int64),
    )


def assemble_rows(
    settings: Settings, *, since: int, folder: Path, card, out: Path, through: int | None = None
) -> dict:
    """The retraining file for a model with named columns (an MLflow Model): the labelled
    production rows after prediction ``since``, plus the champion's reference (a labelled
    sample of its training rows; never its guardrail, which the gate keeps apart), in the
    signature's columns and the label column, as one Parquet file at ``out``. The user's
    pipeline splits it as it likes."""
    from loopline.storage.predictions import decode_records

    keep = [*card.columns, card.label_column]
    database = open_for_reading(settings)
    if database is None:
        raise RetrainingDataError("the prediction log is empty: nothing was served yet")
    try:
        store = FeedbackStore(database, settings.labels.conflicts)
        labelled = _unreviewed(store, since, settings, records=True, through=through)
    finally:
        database.close()
    if len(labelled) < MIN_LABELLED:
        raise RetrainingDataError(
            f"only {len(labelled)} labelled predictions since #{since}; send labels to "
            f"/feedback (at least {MIN_LABELLED}) before retraining"
        )
    recent = pd.DataFrame(decode_records(labelled["inputs"]), columns=card.columns)
    truth = labelled["label"].to_numpy()
    recent[card.label_column] = truth.astype(float) if card.task == "regression" else truth
    kept = pd.read_parquet(folder / REFERENCE)[keep] if (folder / REFERENCE).exists() else None
    frame = pd.concat([recent, kept], ignore_index=True) if kept is not None else recent
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return {"rows": len(frame), "labelled": len(recent), "kept": 0 if kept is None else len(kept)}


DATASET = "dataset.parquet"


def share_rows(settings: Settings, path: Path, trigger_id: int) -> str:
    """Upload the retraining file to the tracking server's artifact store, for pipelines
    that run elsewhere (Kubeflow's pods cannot read this machine's disk); its URI."""
    registry = Registry(settings)
    run = registry.start_run(
        "loopline-retraining-data",
        params={"trigger_id": trigger_id},
        tags={"loopline.trigger_id": str(trigger_id)},
    )
    return f"{registry.log_files(run, path.parent, f'trigger-{trigger_id}')}/{path.name}"


def dataset_file(value: str) -> str:
    """A local path for a pipeline's dataset input: a path as given, an artifact URI (what
    a retraining on Kubeflow receives) downloaded through the tracking server first. A
    user's component opens its input with ``pd.read_parquet(dataset_file(dataset))``."""
    if "://" not in value and not value.startswith("mlflow-artifacts:"):
        return value
    if value.startswith("file://"):
        return unquote(urlparse(value).path)
    import mlflow.artifacts

    from loopline.core.settings import load_settings

    return mlflow.artifacts.download_artifacts(
        artifact_uri=value, tracking_uri=load_settings().tracking_uri
    )
