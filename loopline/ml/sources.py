"""Where datasets come from: built-in sets, CSV/Parquet files, image folders, MNIST IDX.

Each loader returns a :class:`RawDataset`; :func:`ingest` splits it by seed and writes
loopline's dataset format. Loaders keep problems (missing values, unknown labels) in the
data so that validation can report them instead of hiding them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from loopline.core.errors import UsageError
from loopline.ml import mnist
from loopline.ml.builtin_datasets import BUILTIN
from loopline.ml.dataset import LABEL, MISSING_LABEL, DatasetSchema, Split, write_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


class SourceError(UsageError):
    """The dataset reference cannot be read; the message says what to change."""


@dataclass
class RawDataset:
    name: str
    kind: str
    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    input_shape: list[int]
    features: list[str]
    value_range: list[float] | None


def load(ref: str, *, label_column: str = LABEL, image_size: int = 28) -> RawDataset:
    """Load a built-in name or a path (CSV, Parquet, image folder, MNIST IDX folder)."""
    if ref == "digits":
        return _digits()
    if ref == "breast_cancer":
        return _breast_cancer()
    path = Path(ref).expanduser()
    if not path.exists():
        raise SourceError(
            f"dataset {ref!r} is neither a built-in ({', '.join(BUILTIN)}) nor an existing "
            "path; pass a built-in name, a .csv/.parquet file, an image folder or an MNIST folder."
        )
    if path.suffix.lower() in {".csv", ".parquet", ".pq"}:
        return _table(path, label_column)
    if mnist.is_idx_dir(path):
        images, labels = mnist.load_dir(path)
        return _images(path.name, images[:, None] / 255.0, labels, [str(i) for i in range(10)])
    if path.is_dir():
        return _image_folder(path, image_size)
    raise SourceError(f"{path} has an unsupported type; use .csv, .parquet or a folder.")


def _digits() -> RawDataset:
    bunch = load_digits()
    images = bunch.images[:, None] / 16.0  # pixel intensities are 0..16
    return _images("digits", images, bunch.target, [str(c) for c in bunch.target_names])


def _breast_cancer() -> RawDataset:
    bunch = load_breast_cancer()
    names = [str(n) for n in bunch.feature_names]  # scikit-learn's own: "mean radius"
    return RawDataset(
        name="breast_cancer",
        kind="tabular",
        x=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.int64),
        classes=[str(c) for c in bunch.target_names],
        input_shape=[len(names)],
        features=names,
        value_range=None,
    )


def _images(name: str, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> RawDataset:
    n, c, h, w = images.shape
    return RawDataset(
        name=name,
        kind="image",
        x=images.reshape(n, -1).astype(np.float32),
        y=np.asarray(labels, dtype=np.int64),
        classes=classes,
        input_shape=[c, h, w],
        features=[f"px_{i}" for i in range(c * h * w)],
        value_range=[0.0, 1.0],
    )


def _table(path: Path, label_column: str) -> RawDataset:
    try:
        frame = pd.read_parquet(path) if path.suffix != ".csv" else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise SourceError(f"cannot read {path}: {exc}. Check that the file is valid.") from exc
    if label_column not in frame.columns:
        raise SourceError(
            f"{path} has no label column {label_column!r} (columns: {', '.join(map(str, frame.columns[:10]))}); "
            "pass --label-column with the right name."
        )
    if frame.empty:
        raise SourceError(
            f"{path} has a header but no rows; add data rows (one example per row) and run again."
        )
    labels = frame.pop(label_column)
    if LABEL in frame.columns:  # the dataset format's label column: it would overwrite it
        raise SourceError(
            f"{path}: a feature column is named {LABEL!r}, the name loopline stores the "
            f"label under, while the label column is {label_column!r}; rename that feature, "
            f"or pass --label-column {LABEL} if it is the label."
        )
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise SourceError(
            f"{path}: feature columns {', '.join(non_numeric)} are not numeric; "
            "encode them as numbers or drop them before ingesting."
        )
    classes = sorted(labels.dropna().unique().tolist(), key=str)
    index = {value: i for i, value in enumerate(classes)}
    y = labels.map(lambda v: index.get(v, MISSING_LABEL)).to_numpy(dtype=np.int64)
    names = [str(c) for c in frame.columns]  # the file's own names, kept
    return RawDataset(
        name=path.stem,
        kind="tabular",
        x=frame.to_numpy(dtype=np.float32),
        y=y,
        classes=[str(c) for c in classes],
        input_shape=[len(names)],
        features=names,
        value_range=None,
    )


def _image_folder(folder: Path, size: int) -> RawDataset:
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise SourceError(f"{folder} has no class sub-folders; put each class's images in one.")
    files = [
        (f, label)
        for label, d in enumerate(class_dirs)
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise SourceError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    modes = set()
    pictures = []
    for file, _ in files:
        try:
            with Image.open(file) as img:
                img.load()
                modes.add("L" if img.mode in {"1", "L", "LA", "I", "I;16"} else "RGB")
                pictures.append(img.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise SourceError(f"{file} is not a readable image ({exc}); remove or fix it.") from exc
    mode = "RGB" if "RGB" in modes else "L"
    arrays = [np.asarray(p.convert(mode).resize((size, size)), dtype=np.float32) for p in pictures]
    stack = np.stack(arrays) / 255.0
    stack = stack[:, None] if mode == "L" else stack.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in files])
    return _images(folder.name, stack, labels, [d.name for d in class_dirs])


def split(
    raw: RawDataset, *, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> dict[str, Split]:
    """A stratified train/val/test split that depends only on the data order and ``seed``."""
    idx = np.arange(len(raw.y))
    counts = np.bincount(raw.y[raw.y >= 0])
    stratify = raw.y if counts.size and counts.min() >= 3 else None
    rest, test = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    rest_stratify = None if stratify is None else raw.y[rest]
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        random_state=seed,
        stratify=rest_stratify,
    )
    return {
        name: Split(x=raw.x[np.sort(part)], y=raw.y[np.sort(part)])
        for name, part in (("train", train), ("val", val), ("test", test))
    }


def ingest(
    ref: str,
    out: Path,
    *,
    label_column: str = LABEL,
    image_size: int = 28,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DatasetSchema:
    """Load ``ref``, split it by ``seed`` and write the dataset format into ``out``."""
    raw = load(ref, label_column=label_column, image_size=image_size)
    parts = split(raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    train = parts["train"].x
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(train, axis=0)).tolist()
        std = np.nan_to_num(np.nanstd(train, axis=0)).tolist()
    schema = DatasetSchema(
        name=raw.name,
        kind=raw.kind,
        features=raw.features,
        classes=raw.classes,
        input_shape=raw.input_shape,
        value_range=raw.value_range,
        feature_mean=mean,
        feature_std=std,
        rows={k: len(v.y) for k, v in parts.items()},
        source=ref,
    )
    write_dataset(out, schema, parts)
    return schema
