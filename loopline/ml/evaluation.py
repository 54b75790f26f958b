"""Test-set metrics, plots and an HTML report for one trained model."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torch import nn

from loopline.ml.dataset import DatasetSchema, Split


@dataclass
class Evaluation:
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    classes: list[str]
    samples: int
    # Simple models on the same test rows (loopline.ml.baselines): "baselines" (each a
    # name, scores, seconds, note), "skipped" (why one was left out) and "verdict".
    baselines: dict = field(default_factory=dict)

    def headline(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Evaluation:
        return cls(**json.loads(text))


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.cat([model(b).argmax(1) for b in torch.split(tensor, batch_size)]).numpy()


def evaluate(model: nn.Module, split: Split, classes: list[str]) -> Evaluation:
    return scores(split.y, predict(model, split.x), classes)


def evaluate_chunks(model: nn.Module, chunks, classes: list[str]) -> Evaluation:
    """The same scores over (x, y) chunks (``loopline.ml.streaming``): only the labels and
    predictions are held, never the features."""
    truth, predicted = [], []
    for x, y in chunks:
        truth.append(y)
        predicted.append(predict(model, x))
    return scores(np.concatenate(truth), np.concatenate(predicted), classes)


def scores(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> Evaluation:
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    macro = precision_recall_fscore_support(
        truth, predicted, labels=labels, average="macro", zero_division=0
    )
    return Evaluation(
        accuracy=float(accuracy_score(truth, predicted)),
        macro_precision=float(macro[0]),
        macro_recall=float(macro[1]),
        macro_f1=float(macro[2]),
        per_class={
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        confusion_matrix=confusion_matrix(truth, predicted, labels=labels).tolist(),
        classes=classes,
        samples=len(truth),
    )


def plot_training_curves(history: list[dict], target: Path) -> Path:
    plt = _pyplot()
    epochs = [h["epoch"] + 1 for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("train", "-"), ("val", "--")):
        loss_ax.plot(epochs, [h[f"{key}_loss"] for h in history], style, label=key)
        acc_ax.plot(epochs, [h[f"{key}_accuracy"] for h in history], style, label=key)
    best = min(history, key=lambda h: h["val_loss"])["epoch"] + 1
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.axvline(best, color="grey", linestyle=":", label=f"best epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def plot_confusion_matrix(evaluation: Evaluation, target: Path) -> Path:
    plt = _pyplot()
    matrix = np.array(evaluation.confusion_matrix)
    size = max(4, 0.6 * len(evaluation.classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(evaluation.classes))
    ax.set_xticks(ticks, evaluation.classes, rotation=45)
    ax.set_yticks(ticks, evaluation.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    ax.set_title(f"confusion matrix (accuracy {evaluation.accuracy:.3f})")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def _pyplot():
    """matplotlib's pyplot on the off-screen Agg backend.

    Imported here rather than at the top: the backend must be chosen before pyplot is
    imported, and choosing it when this module is imported would switch it for whoever
    imports the module (a notebook, a test) though only the plots need it; the gate's
    ``predict`` draws nothing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def html_report(
    evaluation: Evaluation, schema: DatasetSchema, plots: list[Path], model_arch: str
) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{m[k]:.3f}</td>" for k in ("precision", "recall", "f1"))
        + f"<td>{m['support']}</td></tr>"
        for name, m in evaluation.per_class.items()
    )
    headline = "".join(f"<li>{k}: <b>{v:.4f}</b></li>" for k, v in evaluation.headline().items())
    baselines = _baselines_html(evaluation)
    images = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in plots
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>loopline evaluation: {html.escape(schema.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:3px 10px;text-align:right}}
img{{max-width:48%;margin:1em 1% 0 0}}</style></head><body>
<h1>Evaluation: {html.escape(model_arch)} on {html.escape(schema.name)}</h1>
<p>{evaluation.samples} held-out test samples.</p><ul>{headline}</ul>{baselines}
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{rows}</table>{images}</body></html>"""


def _baselines_html(evaluation: Evaluation) -> str:
    """The model beside its baselines on the same rows, and the verdict."""
    found = evaluation.baselines.get("baselines") or []
    skipped = evaluation.baselines.get("skipped") or []
    if not found and not skipped:
        return ""
    keys = ("accuracy", "macro_f1")
    model = {k: getattr(evaluation, k) for k in keys}
    rows = [("this model", model, "")] + [(b["name"], b["scores"], b["note"]) for b in found]
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{scores[k]:.4f}</td>" for k in keys)
        + f"<td style=text-align:left>{html.escape(note)}</td></tr>"
        for name, scores, note in rows
    )
    verdict = evaluation.baselines.get("verdict") or {}
    said = ""
    if verdict:
        color = "#176f2c" if verdict["beaten"] else "#b00020"
        said = f'<p style="color:{color}"><b>{html.escape(verdict["summary"])}</b></p>'
    left_out = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    return (
        f"<h2>Baselines on the same {evaluation.samples} test rows</h2>{said}"
        "<table><tr><th>model</th><th>accuracy</th><th>macro F1</th><th></th></tr>"
        f"{body}</table>" + (f"<p>Left out:</p><ul>{left_out}</ul>" if left_out else "")
    )
