"""Each check catches a dataset made to break it; every failure is listed at once."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from loopline.ml.dataset import LABEL, read_schema
from loopline.ml.sources import ingest
from loopline.ml.steps import validate_step
from loopline.ml.validation import (
    DataValidationError,
    ValidationConfig,
    summarized_columns,
    validate,
)


def edit(folder, split, change):
    path = folder / f"{split}.parquet"
    frame = change(pd.read_parquet(path))
    frame.to_parquet(path, index=False)


def failed(folder, config=None):
    checks = validate(folder, config or ValidationConfig())
    return {c.name: c for c in checks if not c.passed}


def test_clean_digits_pass_every_check(digits_dir):
    checks = validate(digits_dir)
    assert [c.name for c in checks] == [
        "schema",
        "missing_values",
        "labels",
        "classes",
        "samples_per_class",
        "class_balance",
        "value_range",
        "normalization",
        "duplicates",
        "split_leakage",
    ]
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]


def test_schema_missing_column_and_wrong_dtype(dataset_copy):
    edit(dataset_copy, "train", lambda f: f.drop(columns=["px_3"]))
    edit(dataset_copy, "val", lambda f: f.assign(px_7=f["px_7"].astype(str)))
    check = failed(dataset_copy)["schema"]
    assert "train: missing columns px_3" in check.details
    assert "val: column px_7 has dtype object, not numeric" in check.details


def test_missing_values_counted_per_column(dataset_copy):
    edit(dataset_copy, "train", lambda f: f.assign(px_5=f["px_5"].where(f.index >= 3)))
    assert failed(dataset_copy)["missing_values"].details == ["column px_5: 3 missing values"]


def test_labels_outside_the_classes(dataset_copy):
    edit(dataset_copy, "test", lambda f: f.assign(label=f["label"].where(f.index >= 2, 99)))
    details = failed(dataset_copy)["labels"].details
    assert details and details[0].startswith("2 rows have a label outside the 10 known classes")


def test_a_single_class_is_refused(tmp_path):
    # The case: 400 random rows, all labelled "a", trained to accuracy 1.0.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((400, 8)), columns=[f"f{i}" for i in range(8)])
    frame["label"] = "a"
    frame.to_csv(tmp_path / "one.csv", index=False)
    ingest(str(tmp_path / "one.csv"), tmp_path / "dataset")
    check = failed(tmp_path / "dataset")["classes"]
    assert check.details == [
        "the data holds 1 class(es) (a); a classifier needs examples of at least 2 classes"
    ]


def _drop_class(frame, label, keep_fraction):
    rows = frame[frame["label"] == label]
    return frame.drop(rows.index[int(len(rows) * keep_fraction) :])


def test_too_few_samples_per_class(dataset_copy):
    for split in ("train", "val", "test"):
        edit(dataset_copy, split, lambda f: _drop_class(f, 3, 0.3))
    problems = failed(dataset_copy)
    fix, detail = problems["samples_per_class"].details
    assert detail.startswith("class 3: ") and detail.endswith("need at least 100")
    # The refusal names the fix: the parameter, with a value this data meets.
    fewest = detail.removeprefix("class 3: ").split(" ")[0]
    assert f"--param min_samples_per_class={fewest}" in fix


def test_class_imbalance(dataset_copy):
    for split in ("train", "val", "test"):
        edit(dataset_copy, split, lambda f: _drop_class(f, 8, 0.45))
    problems = failed(dataset_copy, ValidationConfig(min_samples_per_class=10))
    assert set(problems) == {"class_balance"}
    assert "class 8 has" in problems["class_balance"].details[0]
    assert "--param min_class_ratio=0." in problems["class_balance"].details[0]


def test_values_outside_the_declared_range(dataset_copy):
    edit(dataset_copy, "train", lambda f: f.assign(px_10=f["px_10"] * 16))  # unscaled pixels
    problems = failed(dataset_copy)
    assert problems["value_range"].details[0].startswith("column px_10: ")
    assert "scale to [0, 1]" in problems["normalization"].details[0]


def test_constant_tabular_column_cannot_be_normalized(tmp_path):
    folder = tmp_path / "bc"
    ingest("breast_cancer", folder)
    column = read_schema(folder).features[4]
    for split in ("train", "val", "test"):
        edit(folder, split, lambda f: f.assign(**{column: 1.0}))
    assert failed(folder)["normalization"].details == [
        f"column {column}: constant (std 0), drop it"
    ]


def test_duplicate_rows(dataset_copy):
    edit(dataset_copy, "train", lambda f: pd.concat([f, f.iloc[:40]], ignore_index=True))
    problems = failed(dataset_copy)
    assert set(problems) == {"duplicates"}
    assert problems["duplicates"].details[0].startswith("40 duplicate rows")


def test_identical_rows_leaking_across_splits(dataset_copy):
    test_rows = pd.read_parquet(dataset_copy / "test.parquet").iloc[:5]
    edit(dataset_copy, "train", lambda f: pd.concat([f, test_rows], ignore_index=True))
    assert failed(dataset_copy)["split_leakage"].details == [
        "5 identical rows appear in both train and test"
    ]


def test_step_writes_reports_then_raises_listing_every_failure(dataset_copy, tmp_path):
    edit(dataset_copy, "train", lambda f: f.assign(px_5=np.nan))
    edit(dataset_copy, "test", lambda f: f.assign(label=42))
    with pytest.raises(DataValidationError) as info:
        validate_step(dataset_copy, tmp_path / "report", run_id="r1", config=ValidationConfig())
    message = str(info.value)
    assert "missing_values" in message and "column px_5" in message
    assert message.startswith("2 data check(s) failed")
    assert "270 rows have a label outside the 10 known classes" in message
    report = json.loads((tmp_path / "report" / "validation.json").read_text())
    assert report["passed"] is False
    assert "FAILED" in (tmp_path / "report" / "validation.html").read_text()
    assert json.loads((tmp_path / "report" / "lineage.json").read_text())["run_id"] == "r1"


@pytest.mark.slow  # Evidently alone takes 5 s to import
def test_passing_step_adds_evidently_data_summary(digits_dir, tmp_path):
    result = validate_step(digits_dir, tmp_path / "r", run_id="r", config=ValidationConfig())
    summary = (tmp_path / "r" / "data_summary.html").read_text()
    assert result["passed"] and "px_0" in summary  # the summary covers the pixel columns


def test_an_images_summary_shows_a_few_pixels_and_a_tables_every_column(digits_dir):
    image = read_schema(digits_dir)
    columns = summarized_columns(image)
    assert columns[0] == "px_0" and columns[-2] == "px_63" and columns[-1] == LABEL
    assert len(columns) == 9 and len(set(columns)) == 9
    table = dataclasses.replace(image, kind="tabular", features=[f"f{i}" for i in range(70)])
    assert summarized_columns(table) == [f"f{i}" for i in range(64)] + [LABEL]


def test_validation_error_survives_a_process_boundary():
    """Worker processes hand exceptions back pickled; a broken round trip used to look
    like a crashed worker."""
    import pickle

    from loopline.ml.validation import CheckResult, DataValidationError

    error = DataValidationError([CheckResult("duplicates", False, "3 duplicate rows", ["row 1"])])
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.failures[0].name == "duplicates"
