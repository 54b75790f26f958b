import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from loopline.ml.dataset import SPLITS, read_schema, read_split
from loopline.ml.sources import SourceError, ingest, load


def test_digits_are_real_8x8_images_scaled_to_unit_range(digits_dir):
    schema = read_schema(digits_dir)
    assert schema.kind == "image"
    assert schema.input_shape == [1, 8, 8]
    assert schema.classes == [str(i) for i in range(10)]
    assert sum(schema.rows.values()) == 1797
    train = read_split(digits_dir, "train")
    assert train.x.shape[1] == 64
    assert train.x.min() >= 0.0 and train.x.max() <= 1.0


def test_split_is_stratified_and_stable_by_seed(tmp_path):
    first = ingest("digits", tmp_path / "a", seed=3)
    ingest("digits", tmp_path / "b", seed=3)
    other = ingest("digits", tmp_path / "c", seed=4)
    for split in SPLITS:
        a = pd.read_parquet(tmp_path / "a" / f"{split}.parquet")
        pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "b" / f"{split}.parquet"))
    assert not pd.read_parquet(tmp_path / "a" / "test.parquet").equals(
        pd.read_parquet(tmp_path / "c" / "test.parquet")
    )
    assert first.rows == other.rows  # stratified: same sizes whatever the seed
    test_counts = np.bincount(read_split(tmp_path / "a", "test").y)
    assert test_counts.min() >= 25  # every class present in the test split


def test_breast_cancer_is_tabular_with_train_statistics(tmp_path):
    schema = ingest("breast_cancer", tmp_path / "bc")
    assert schema.kind == "tabular"
    assert len(schema.features) == 30 == len(schema.feature_mean)
    train = read_split(tmp_path / "bc", "train")
    np.testing.assert_allclose(train.x.mean(axis=0), schema.feature_mean, rtol=1e-4)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_files_with_a_label_column(tmp_path, suffix):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a b", "c", "d"])
    frame["kind"] = ["cat", "dog", "eel"] * 20
    path = tmp_path / f"data{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    raw = load(str(path), label_column="kind")
    assert raw.classes == ["cat", "dog", "eel"]
    assert raw.features == ["a b", "c", "d"]  # the file's own names, kept
    np.testing.assert_array_equal(raw.y[:3], [0, 1, 2])


def test_missing_labels_are_kept_for_validation_to_report(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", None, "b"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert load(str(tmp_path / "d.csv")).y.tolist() == [0, -1, 1]


def test_table_errors_name_the_problem_and_the_fix(tmp_path):
    pd.DataFrame({"x": [1.0], "y": [0]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(SourceError, match="--label-column"):
        load(str(tmp_path / "d.csv"))
    pd.DataFrame({"x": ["a"], "label": [0]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(SourceError, match="x are not numeric"):
        load(str(tmp_path / "s.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="cannot read"):
        load(str(tmp_path / "bad.parquet"))
    with pytest.raises(SourceError, match="neither a built-in"):
        load(str(tmp_path / "missing.csv"))
    # A header and no rows says so, instead of "feature columns ... are not numeric".
    (tmp_path / "header.csv").write_text(",".join(f"f{i}" for i in range(64)) + ",label\n")
    with pytest.raises(SourceError, match="has a header but no rows"):
        load(str(tmp_path / "header.csv"))


def _image_folder(root, size=12):
    rng = np.random.default_rng(1)
    for name, level in (("dark", 40), ("light", 200)):
        (root / name).mkdir(parents=True)
        for i in range(5):
            pixels = np.clip(rng.normal(level, 10, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.png")
    return root


def test_image_folder_one_subfolder_per_class_resized(tmp_path):
    raw = load(str(_image_folder(tmp_path / "imgs")), image_size=8)
    assert raw.classes == ["dark", "light"]
    assert raw.input_shape == [1, 8, 8]
    assert raw.x.shape == (10, 64)
    dark, light = raw.x[raw.y == 0].mean(), raw.x[raw.y == 1].mean()
    assert dark < 0.3 < 0.6 < light


def test_unreadable_image_is_named(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(SourceError, match="broken.png"):
        load(str(root))


def test_a_csvs_column_names_are_kept_and_named_instances_may_use_either_form(tmp_path):
    """The CSV's `mean radius` stays `mean radius` in the model's input schema; a client
    may send it so, or as `mean_radius` (what loopline once renamed it to), and the
    schema lists that alias."""
    from loopline.ml.dataset import DatasetSchema, read_schema
    from loopline.serving.requests import RequestError, parse

    frame = pd.DataFrame({"mean radius": np.arange(60.0), "area (se)": np.ones(60)})
    frame["diagnosis"] = ["B", "M"] * 30
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    ingest(str(tmp_path / "cancer.csv"), tmp_path / "ds", label_column="diagnosis")
    schema = read_schema(tmp_path / "ds")
    assert schema.features == ["mean radius", "area (se)"]
    written = json.loads((tmp_path / "ds" / "schema.json").read_text())
    assert written["aliases"] == {"mean_radius": "mean radius", "area_se": "area (se)"}
    assert DatasetSchema.from_json(json.dumps(written)).features == schema.features

    def rows(instance: dict) -> list:
        payload = json.dumps({"instances": [instance]}).encode()
        return parse(payload, "application/json", schema).tolist()

    assert rows({"mean radius": 12.5, "area (se)": 2}) == [[12.5, 2.0]]
    assert rows({"mean_radius": 12.5, "area_se": 2}) == [[12.5, 2.0]]
    assert rows({"mean_radius": 12.5, "area (se)": 2}) == [[12.5, 2.0]]
    with pytest.raises(RequestError, match="'mean radius' is given twice"):
        rows({"mean_radius": 1, "mean radius": 1, "area_se": 2})
    with pytest.raises(RequestError, match="unknown field"):
        rows({"radius": 1, "area_se": 2})


def test_a_feature_named_like_the_stored_label_is_refused(tmp_path):
    frame = pd.DataFrame({"label": [0.0, 1.0], "x": [1.0, 2.0], "kind": ["a", "b"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(SourceError, match="rename that feature"):
        load(str(tmp_path / "d.csv"), label_column="kind")
