"""The model contract: an MLflow Model with a signature and a task that matches its
output, with its files' digests checked before a load. Real MLflow models, saved here."""

import warnings

import numpy as np
import pandas as pd
import pytest

from loopline.ml.model_contract import (
    ModelContractError,
    ModelTampered,
    file_digests,
    read_contract,
    verify,
)

warnings.filterwarnings("ignore")
ROWS = 60


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, ROWS),
            "visits": rng.integers(0, 5, ROWS),
            "plan": rng.choice(["basic", "pro"], ROWS),
            "note": rng.choice(["late again", "all good", "asked for a refund"], ROWS),
        }
    )


def save(folder, model, frame, answers, **options):
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(frame, answers) if answers is not None else None
    # named requirements: inferring them would import every package in the environment
    mlflow.sklearn.save_model(
        model, folder, signature=signature, pip_requirements=["scikit-learn"], **options
    )
    return folder


@pytest.fixture(scope="module")
def classifier(frame, tmp_path_factory):
    from sklearn.linear_model import LogisticRegression

    labels = np.where(frame["age"] > 40, "churn", "stay")
    model = LogisticRegression().fit(frame[["age", "visits"]], labels)
    return save(
        tmp_path_factory.mktemp("m") / "classifier",
        model,
        frame,
        model.predict(frame[["age", "visits"]]),
        serialization_format="skops",
        metadata={"loopline": {"task": "classification", "text_columns": ["note"]}},
    )


def test_a_signed_classifier_enters_with_its_columns_by_kind(classifier):
    contract = read_contract(classifier)
    assert contract.task == "classification" and not contract.pickled
    kinds = {c.name: c.kind for c in contract.columns}
    assert kinds == {"age": "numeric", "visits": "integer", "plan": "categorical", "note": "text"}
    assert contract.text_columns == ["note"] and "sklearn" in contract.flavors


def test_labels_declared_regression_are_refused(classifier):
    with pytest.raises(
        ModelContractError, match="declared regression, but the model answers labels"
    ):
        read_contract(classifier, task="regression")


def test_numbers_declared_classification_and_a_missing_signature_are_refused(frame, tmp_path):
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(frame[["age", "visits"]], frame["age"] * 2.5)
    numbers = model.predict(frame[["age", "visits"]])
    regressor = save(
        tmp_path / "regressor",
        model,
        frame[["age", "visits"]],
        numbers,
        serialization_format="cloudpickle",
    )
    assert read_contract(regressor, task="regression").pickled
    with pytest.raises(
        ModelContractError, match="declared classification, but the model answers numbers"
    ):
        read_contract(regressor, task="classification")
    with pytest.raises(
        ModelContractError, match="task is None; declare classification or regression"
    ):
        read_contract(regressor)
    unsigned = save(tmp_path / "unsigned", model, frame, None)
    with pytest.raises(ModelContractError, match="has no signature"):
        read_contract(unsigned, task="regression")
    with pytest.raises(ModelContractError, match="no MLmodel file"):
        read_contract(tmp_path, task="regression")


def test_a_changed_added_or_linked_file_is_refused_before_a_load(classifier, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(classifier, copy)
    registered = file_digests(copy)
    verify(copy, registered)  # untouched: accepted
    weights = copy / "model.skops"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelTampered, match="changed: model.skops"):
        verify(copy, registered)
    weights.write_bytes(bytes(data[:0]) + (classifier / "model.skops").read_bytes())
    (copy / "extra.pkl").write_bytes(b"cos\nsystem\n")
    with pytest.raises(ModelTampered, match="added: extra.pkl"):
        verify(copy, registered)
    (copy / "extra.pkl").unlink()
    (copy / "elsewhere").symlink_to("/etc/passwd")
    with pytest.raises(ModelContractError, match="is a link"):
        verify(copy, registered)
