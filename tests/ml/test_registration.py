"""Registering a user's MLflow Model behind the gate (loopline.ml.registration): the
contract refused up front, the gate by task, re-runs, and tampered files never loaded."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.errors import UsageError
from loopline.core.layout import DIGEST_TAG
from loopline.ml.mlflow_model import MODEL, load
from loopline.ml.model_contract import ModelContractError, ModelTampered
from loopline.ml.registration import EvaluationRowsError, register_model_step
from loopline.storage.registry import Registry, model_folder


def frame(rows: int, seed: int, *, flip: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    colour = rng.choice(["red", "blue"], rows)
    label = np.where(x + (colour == "red") > 0.5, "yes", "no")
    noisy = rng.random(rows) < flip
    label = np.where(noisy, np.where(label == "yes", "no", "yes"), label)
    return pd.DataFrame({"x": x, "colour": colour, "label": label})


def save(
    folder: Path,
    data: pd.DataFrame,
    *,
    task="classification",
    signed=True,
    fmt="skops",
    requirements=("scikit-learn",),
):
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    x = data[["x", "colour"]]
    encode = ColumnTransformer([("c", OneHotEncoder(), ["colour"])], remainder="passthrough")
    model = make_pipeline(encode, LogisticRegression()).fit(x, data["label"])
    mlflow.sklearn.save_model(
        model,
        folder,
        serialization_format=fmt,
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model))
        if fmt == "skops"
        else None,
        signature=infer_signature(x, model.predict(x)) if signed else None,
        pip_requirements=list(requirements),
        metadata={"loopline": {"task": task}},
    )
    return folder


def rows(tmp_path: Path, name: str, data: pd.DataFrame) -> Path:
    path = tmp_path / f"{name}.parquet"
    data.to_parquet(path, index=False)
    return path


def register(settings, tmp_path, model, evaluation, train, name="m", **extra):
    return register_model_step(
        model,
        evaluation,
        train,
        tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}",
        task=extra.pop("task", "classification"),
        label_column="label",
        model_name=name,
        run_id="test",
        settings=settings,
        **extra,
    )


@pytest.fixture
def data(tmp_path):
    return rows(tmp_path, "eval", frame(600, 1)), rows(tmp_path, "train", frame(1500, 0))


def test_a_good_model_is_champion_a_worse_one_is_refused_and_a_rerun_adds_nothing(
    settings, tmp_path, data
):
    evaluation, train = data
    good = save(tmp_path / "good", frame(1500, 0))
    first = register(settings, tmp_path, good, evaluation, train)
    assert first["promoted"] and first["version"] == "1"
    assert first["metrics"]["accuracy"] > 0.8
    # Trained on labels that are 45% wrong: worse on the same rows, and refused.
    worse = save(tmp_path / "worse", frame(1500, 0, flip=0.45))
    second = register(settings, tmp_path, worse, evaluation, train)
    assert not second["promoted"] and second["version"] == "2"
    assert "not significantly better" in second["decision"]["reasons"][0]
    again = register(settings, tmp_path, good, evaluation, train)
    assert again["version"] == "1" and not again["promoted"]
    assert "same files as v1" in again["decision"]["reasons"][0]
    champion = Registry(settings).champion("m")
    assert champion.version == "1" and champion.tags["loopline.format"] == "mlflow"
    card = json.loads((model_folder(settings, champion) / "card.json").read_text())
    assert card["classes"] == ["no", "yes"] and card["label_column"] == "label"


def test_bad_input_is_refused_before_anything_is_registered(settings, tmp_path, data):
    evaluation, train = data
    unsigned = save(tmp_path / "unsigned", frame(300, 0), signed=False)
    with pytest.raises(ModelContractError, match="no signature") as raised:
        register(settings, tmp_path, unsigned, evaluation, train)
    assert raised.value.exit_code == 2
    labels = save(tmp_path / "labels", frame(300, 0))
    with pytest.raises(ModelContractError, match="declared regression, but the model answers"):
        register(settings, tmp_path, labels, evaluation, train, task="regression")
    partial = rows(tmp_path, "partial", frame(100, 3).drop(columns=["colour"]))
    with pytest.raises(EvaluationRowsError, match="evaluation rows lack column.s. colour"):
        register(settings, tmp_path, labels, partial, train)
    with pytest.raises(UsageError, match="does not exist"):
        register(settings, tmp_path, labels, tmp_path / "missing.parquet", train)
    assert Registry(settings).champion("m") is None


def test_a_tampered_champion_is_never_loaded_and_never_replaced(settings, tmp_path, data):
    evaluation, train = data
    first = register(settings, tmp_path, save(tmp_path / "v1", frame(1500, 0)), evaluation, train)
    champion = Registry(settings).champion("m")
    folder = model_folder(settings, champion)
    # Swap the champion's model for a pickle that would leave a mark if it were loaded.
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Mark(str(marker)))
    target = next((folder / MODEL).glob("model.*"))
    target.write_bytes(payload)
    with pytest.raises(ModelTampered, match="not the model that was registered"):
        load(folder, champion.tags[DIGEST_TAG])
    better = save(tmp_path / "v2", frame(3000, 5))
    second = register(settings, tmp_path, better, evaluation, train)
    assert first["promoted"] and not second["promoted"]
    assert "cannot be compared" in second["decision"]["reasons"][0]
    assert not marker.exists()
    assert Registry(settings).champion("m").version == "1"


def test_a_champion_loads_once_and_its_requirements_are_checked_at_registration(
    settings, tmp_path, data, capfd, monkeypatch
):
    """A server loads the champion's files once (scikit-learn's flavor's pyfunc gives the
    probabilities too), and leaves MLflow's check of the installed packages against the
    model's requirements (1.2 s a start) to registration, which warns of a mismatch."""
    import skops.io

    evaluation, train = data
    pinned = save(tmp_path / "v1", frame(1500, 0), requirements=["scikit-learn==0.20.0"])
    capfd.readouterr()  # MLflow warns when saving too: only registration's warning counts
    assert register(settings, tmp_path, pinned, evaluation, train)["promoted"]
    # MLflow's warning (its logger writes to stderr itself), at registration.
    assert "required: scikit-learn==0.20.0" in capfd.readouterr().err
    loads = []
    real_load = skops.io.load
    monkeypatch.setattr(skops.io, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    champion = Registry(settings).champion("m")
    served = load(model_folder(settings, champion), champion.tags[DIGEST_TAG])
    assert len(loads) == 1 and "scikit-learn==0.20.0" not in capfd.readouterr().err
    answers = served.predict(served.frame([{"x": 2.0, "colour": "red"}]))
    assert served.classes == ("no", "yes") and answers.labels == ["yes"]
    assert answers.probabilities[0, 1] > 0.5


class _Mark:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_a_regressor_is_judged_on_its_errors(settings, tmp_path):
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression, Ridge

    def table(n, seed):
        r = np.random.default_rng(seed)
        x = r.normal(size=(n, 2))
        return pd.DataFrame(
            {"a": x[:, 0], "b": x[:, 1], "label": 3 * x[:, 0] - x[:, 1] + r.normal(0, 0.3, n)}
        )

    train, evaluation = table(800, 0), table(400, 1)
    paths = rows(tmp_path, "train", train), rows(tmp_path, "eval", evaluation)
    for name, estimator in (
        ("linear", LinearRegression()),
        ("shrunk", Ridge(alpha=5000.0)),
    ):
        fitted = estimator.fit(train[["a", "b"]], train["label"])
        mlflow.sklearn.save_model(
            fitted,
            tmp_path / name,
            serialization_format="skops",
            signature=infer_signature(train[["a", "b"]], fitted.predict(train[["a", "b"]])),
            pip_requirements=["scikit-learn"],
        )
    first = register(
        settings, tmp_path, tmp_path / "linear", paths[1], paths[0], name="r", task="regression"
    )
    second = register(
        settings, tmp_path, tmp_path / "shrunk", paths[1], paths[0], name="r", task="regression"
    )
    assert first["promoted"] and first["metrics"]["mae"] < 0.4
    assert not second["promoted"] and second["decision"]["metric"] == "mae"
    assert second["decision"]["evidence"]["lower_is_better"]
