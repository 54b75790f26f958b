"""loopline's one dataset format: Parquet splits plus a recorded schema.

A dataset artifact is a directory holding ``train.parquet``, ``val.parquet``,
``test.parquet`` and ``schema.json``. Features are flat float32 columns (images are
flattened; ``input_shape`` restores them) and ``label`` holds class indices. A table's
features keep the names its file gives them (``mean radius`` stays ``mean radius``); the
schema lists their identifier forms as ``aliases``, which named instances may use too.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
LABEL = "label"
MISSING_LABEL = -1


@dataclass
class DatasetSchema:
    name: str
    kind: str  # "image" or "tabular"
    features: list[str]
    classes: list[str]
    input_shape: list[int]
    value_range: list[float] | None = None
    feature_mean: list[float] = field(default_factory=list)
    feature_std: list[float] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    source: str = ""
    # A model's input schema only: what the model does to a row before its backbone
    # (value range, resize, normalization); the model applies it, in training and serving.
    preprocessing: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property  # read for every named instance a server parses
    def aliases(self) -> dict[str, str]:
        """Other names a named instance may give a feature: its identifier form
        (``mean_radius`` for the CSV's ``mean radius``), which loopline used to rename
        columns to; one that is another feature's name, or two features', is left out."""
        taken = set(self.features)
        forms: dict[str, list[str]] = {}
        for feature in self.features:
            form = identifier(feature)
            if form != feature and form not in taken:
                forms.setdefault(form, []).append(feature)
        return {form: found[0] for form, found in forms.items() if len(found) == 1}

    def to_json(self) -> str:
        data = asdict(self)
        if not data["preprocessing"]:  # what readers before it existed can still read
            del data["preprocessing"]
        if aliases := self.aliases:  # for the reader: derived from features, not read back
            data["aliases"] = aliases
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> DatasetSchema:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}  # a newer writer's extra keys are ignored
        return cls(**{k: v for k, v in data.items() if k in known})


def identifier(name: str) -> str:
    """A column name as an identifier: runs of other characters become ``_``."""
    return re.sub(r"\W+", "_", name.strip()).strip("_") or "feature"


@dataclass
class Split:
    x: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) int64


def write_dataset(folder: Path, schema: DatasetSchema, splits: dict[str, Split]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        frame = pd.DataFrame(split.x, columns=schema.features)
        frame[LABEL] = split.y
        # Row groups of about 16 MB: a streamed read holds one at a time (loopline.ml.streaming).
        rows = max(1024, (16 << 20) // (4 * max(len(schema.features), 1)))
        frame.to_parquet(folder / f"{name}.parquet", index=False, row_group_size=rows)
    (folder / "schema.json").write_text(schema.to_json())


def read_schema(folder: Path) -> DatasetSchema:
    return DatasetSchema.from_json((Path(folder) / "schema.json").read_text())


def read_frame(folder: Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(Path(folder) / f"{split}.parquet")


def read_split(folder: Path, split: str, schema: DatasetSchema | None = None) -> Split:
    schema = schema or read_schema(folder)
    frame = read_frame(folder, split)
    x = frame[schema.features].to_numpy(dtype=np.float32)
    return Split(x=x, y=frame[LABEL].to_numpy(dtype=np.int64))
