"""The data checklist as checks: every check runs, and a failure lists them all.

Checks: schema and dtypes, missing values, valid labels, at least two classes, samples
per class, class balance, value range, normalization, duplicate rows, and rows leaking
across splits.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.core.errors import LooplineError
from loopline.ml.dataset import LABEL, SPLITS, DatasetSchema, read_frame, read_schema


@dataclass(frozen=True)
class ValidationConfig:
    min_samples_per_class: int = 100
    min_class_ratio: float = 0.5  # smallest class / largest class
    max_duplicate_fraction: float = 0.01


@dataclass
class CheckResult:
    name: str
    passed: bool
    summary: str
    details: list[str] = field(default_factory=list)


class DataValidationError(LooplineError, RuntimeError):
    """One or more data checks failed; the message lists each with its counts."""

    def __init__(self, failures: list[CheckResult]):
        lines = [f"{len(failures)} data check(s) failed:"]
        for check in failures:
            lines.append(f"  - {check.name}: {check.summary}")
            lines.extend(f"      {d}" for d in check.details[:20])
        super().__init__("\n".join(lines))
        self.failures = failures

    def __reduce__(self):  # rebuilt from the checks, so it survives a process boundary
        return type(self), (self.failures,)


def validate(folder: Path, config: ValidationConfig = ValidationConfig()) -> list[CheckResult]:
    schema = read_schema(folder)
    frames = {s: read_frame(folder, s) for s in SPLITS}
    schema_check = check_schema(schema, frames)
    if not schema_check.passed:  # the other checks assume the declared columns exist
        return [schema_check]
    full = pd.concat(frames.values(), ignore_index=True)
    return [
        schema_check,
        check_missing(full),
        check_labels(schema, full),
        check_classes(schema, full),
        check_samples_per_class(schema, full, config.min_samples_per_class),
        check_class_balance(schema, full, config.min_class_ratio),
        check_value_range(schema, full),
        check_normalization(schema, full),
        check_duplicates(schema, full, config.max_duplicate_fraction),
        check_split_leakage(schema, frames),
    ]


def check_schema(schema: DatasetSchema, frames: dict[str, pd.DataFrame]) -> CheckResult:
    details = []
    expected = [*schema.features, LABEL]
    for name, frame in frames.items():
        missing = [c for c in expected if c not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        if missing:
            details.append(f"{name}: missing columns {', '.join(missing[:10])}")
        if extra:
            details.append(f"{name}: unexpected columns {', '.join(map(str, extra[:10]))}")
        for column in set(expected) & set(frame.columns):
            if not pd.api.types.is_numeric_dtype(frame[column]):
                details.append(
                    f"{name}: column {column} has dtype {frame[column].dtype}, not numeric"
                )
    if int(np.prod(schema.input_shape)) != len(schema.features):
        details.append(
            f"input_shape {schema.input_shape} does not match {len(schema.features)} features"
        )
    return _result("schema", details, f"{len(expected)} columns as declared")


def check_missing(full: pd.DataFrame) -> CheckResult:
    counts = full.isna().sum()
    details = [f"column {c}: {n} missing values" for c, n in counts[counts > 0].items()]
    return _result("missing_values", details, "no missing values")


def check_labels(schema: DatasetSchema, full: pd.DataFrame) -> CheckResult:
    labels = full[LABEL]
    bad = labels[(labels < 0) | (labels >= schema.num_classes) | labels.isna()]
    details = []
    if len(bad):
        details.append(
            f"{len(bad)} rows have a label outside the {schema.num_classes} known classes "
            "(missing or unknown); fix or drop them"
        )
    return _result("labels", details, f"all labels in {schema.num_classes} classes")


def check_classes(schema: DatasetSchema, full: pd.DataFrame) -> CheckResult:
    """A classifier needs two classes at least: with one, every prediction is 'right'."""
    present = int((_class_counts(schema, full) > 0).sum())
    details = []
    if present < 2:
        details.append(
            f"the data holds {present} class(es) ({', '.join(schema.classes) or 'none'}); "
            "a classifier needs examples of at least 2 classes"
        )
    return _result("classes", details, f"{present} classes present")


def check_samples_per_class(schema: DatasetSchema, full: pd.DataFrame, minimum: int) -> CheckResult:
    counts = _class_counts(schema, full)
    details = [
        f"class {schema.classes[i]}: {n} samples, need at least {minimum}"
        for i, n in enumerate(counts)
        if n < minimum
    ]
    if details:  # the fix: more data, or a minimum this data meets, by its parameter's name
        fewest = int(min((n for n in counts if n > 0), default=1))
        details.insert(  # first: the report shows the first 20 details only
            0,
            "add rows of the small classes, or accept fewer with "
            f"--param min_samples_per_class={fewest} (loopline run or schedule):",
        )
    return _result("samples_per_class", details, f"every class has >= {minimum} samples")


def check_class_balance(schema: DatasetSchema, full: pd.DataFrame, min_ratio: float) -> CheckResult:
    counts = _class_counts(schema, full)
    ratio = counts.min() / max(counts.max(), 1)
    details = []
    if ratio < min_ratio:
        small, large = int(counts.argmin()), int(counts.argmax())
        details.append(
            f"class {schema.classes[small]} has {counts[small]} samples vs {counts[large]} for "
            f"class {schema.classes[large]} (ratio {ratio:.2f} < {min_ratio}); "
            "collect more of the small class or resample, or accept it with "
            f"--param min_class_ratio={math.floor(ratio * 100) / 100:.2f}"
        )
    return _result("class_balance", details, f"smallest/largest class ratio {ratio:.2f}")


def check_value_range(schema: DatasetSchema, full: pd.DataFrame) -> CheckResult:
    values = full[schema.features]
    details = []
    infinite = np.isinf(values.to_numpy()).sum(axis=0)
    details += [
        f"column {c}: {n} infinite values"
        for c, n in zip(schema.features, infinite, strict=True)
        if n
    ]
    if schema.value_range is not None:
        low, high = schema.value_range
        outside = ((values < low) | (values > high)).sum()
        details += [
            f"column {c}: {n} values outside [{low}, {high}]" for c, n in outside.items() if n
        ]
    expected = "finite" if schema.value_range is None else f"within {schema.value_range}"
    return _result("value_range", details, f"all values {expected}")


def check_normalization(schema: DatasetSchema, full: pd.DataFrame) -> CheckResult:
    """Tabular features are standardized by the model; constant columns cannot be."""
    details = []
    if schema.kind == "tabular":
        std = full[schema.features].std()
        details = [f"column {c}: constant (std 0), drop it" for c, s in std.items() if s == 0]
    elif schema.value_range is not None and len(full):
        peak = float(np.nanmax(full[schema.features].to_numpy()))
        if peak > schema.value_range[1]:
            details.append(
                f"pixel maximum {peak:g} exceeds {schema.value_range[1]}; scale to [0, 1]"
            )
    return _result("normalization", details, "features can be normalized")


def check_duplicates(schema: DatasetSchema, full: pd.DataFrame, max_fraction: float) -> CheckResult:
    duplicated = int(full.duplicated().sum())
    fraction = duplicated / max(len(full), 1)
    details = []
    if fraction > max_fraction:
        details.append(
            f"{duplicated} duplicate rows ({fraction:.1%} > {max_fraction:.1%}); deduplicate"
        )
    return _result("duplicates", details, f"{duplicated} duplicate rows")


def check_split_leakage(schema: DatasetSchema, frames: dict[str, pd.DataFrame]) -> CheckResult:
    hashes = {
        name: set(pd.util.hash_pandas_object(frame[schema.features], index=False))
        for name, frame in frames.items()
    }
    details = []
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            shared = len(hashes[a] & hashes[b])
            if shared:
                details.append(f"{shared} identical rows appear in both {a} and {b}")
    return _result("split_leakage", details, "no identical rows across splits")


def write_reports(folder: Path, checks: list[CheckResult], out: Path) -> dict[str, str]:
    """Write ``validation.json``, ``validation.html`` and Evidently's data summary."""
    out.mkdir(parents=True, exist_ok=True)
    passed = all(c.passed for c in checks)
    (out / "validation.json").write_text(
        json.dumps({"passed": passed, "checks": [asdict(c) for c in checks]}, indent=2)
    )
    (out / "validation.html").write_text(_html(read_schema(folder), checks, passed))
    paths = {"json": str(out / "validation.json"), "html": str(out / "validation.html")}
    if passed:
        paths["data_summary"] = str(_evidently_summary(folder, out / "data_summary.html"))
    return paths


def _evidently_summary(folder: Path, target: Path) -> Path:
    # Evidently takes about 5 s to import; only a validation that passed writes its
    # summary, so the checks themselves, and a failure's report, never wait for it.
    from evidently import Report
    from evidently.presets import DataSummaryPreset

    schema = read_schema(folder)
    frame = read_frame(folder, "train")
    Report([DataSummaryPreset(columns=summarized_columns(schema))]).run(
        frame[schema.features[:MAX_SUMMARY_COLUMNS] + [LABEL]]
    ).save_html(str(target))
    return target


# Evidently's summary costs about 0.1 s a column (a Plotly figure per statistic), and
# 784+ columns would drown it: the dataset's statistics count this many columns at most.
MAX_SUMMARY_COLUMNS = 64
IMAGE_PIXELS_SUMMARIZED = 8


def summarized_columns(schema: DatasetSchema) -> list[str]:
    """The columns the data summary gives a panel each. A pixel's histogram says little
    about an image (the checklist covers classes and duplicates): an image's summary shows
    the label and a few pixels spread over the image, a table's every column."""
    features = schema.features[:MAX_SUMMARY_COLUMNS]
    if schema.kind == "image" and len(features) > IMAGE_PIXELS_SUMMARIZED:
        spread = np.linspace(0, len(features) - 1, IMAGE_PIXELS_SUMMARIZED).round()
        features = [features[int(i)] for i in spread]
    return [*features, LABEL]


def _class_counts(schema: DatasetSchema, full: pd.DataFrame) -> np.ndarray:
    labels = full[LABEL].to_numpy()
    valid = labels[(labels >= 0) & (labels < schema.num_classes)].astype(int)
    return np.bincount(valid, minlength=schema.num_classes)


def _result(name: str, details: list[str], ok_summary: str) -> CheckResult:
    if details:
        return CheckResult(name, False, f"{len(details)} problem(s)", details)
    return CheckResult(name, True, ok_summary)


def _html(schema: DatasetSchema, checks: list[CheckResult], passed: bool) -> str:
    rows = "".join(
        f"<tr class={'ok' if c.passed else 'bad'}><td>{c.name}</td>"
        f"<td>{'pass' if c.passed else 'FAIL'}</td><td>{html.escape(c.summary)}"
        f"<ul>{''.join(f'<li>{html.escape(d)}</li>' for d in c.details)}</ul></td></tr>"
        for c in checks
    )
    verdict = "passed" if passed else "FAILED"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>loopline data validation: {html.escape(schema.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:4px 10px;vertical-align:top}}
.ok td:nth-child(2){{color:#176f2c}}.bad td:nth-child(2){{color:#b00020;font-weight:bold}}</style>
</head><body><h1>Data validation {verdict}: {html.escape(schema.name)}</h1>
<p>{sum(schema.rows.values())} rows ({schema.rows}), {len(schema.features)} features,
{schema.num_classes} classes, kind {schema.kind}.</p>
<table><tr><th>check</th><th>result</th><th>details</th></tr>{rows}</table></body></html>"""
