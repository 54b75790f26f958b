import numpy as np
import torch
from torch import nn

from loopline.ml.dataset import Split
from loopline.ml.evaluation import (
    evaluate,
    html_report,
    plot_confusion_matrix,
    plot_training_curves,
)


class AlwaysZero(nn.Module):
    def forward(self, x):
        logits = torch.zeros(len(x), 3)
        logits[:, 0] = 1
        return logits


def test_metrics_of_a_constant_classifier():
    split = Split(x=np.zeros((10, 2), np.float32), y=np.array([0] * 5 + [1] * 3 + [2] * 2))
    result = evaluate(AlwaysZero(), split, ["a", "b", "c"])
    assert result.accuracy == 0.5
    assert result.per_class["a"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 5}
    assert result.per_class["b"]["recall"] == 0.0
    assert result.macro_recall == 1 / 3
    assert result.confusion_matrix == [[5, 0, 0], [3, 0, 0], [2, 0, 0]]


def test_plots_and_report(tmp_path, digits_dir):
    from loopline.ml.dataset import read_schema

    split = Split(x=np.zeros((4, 2), np.float32), y=np.array([0, 0, 1, 2]))
    result = evaluate(AlwaysZero(), split, ["a", "b", "c"])
    history = [
        {
            "epoch": e,
            "train_loss": 1 / (e + 1),
            "val_loss": 1.2 / (e + 1),
            "train_accuracy": 0.5,
            "val_accuracy": 0.6,
        }
        for e in range(4)
    ]
    curves = plot_training_curves(history, tmp_path / "curves.png")
    matrix = plot_confusion_matrix(result, tmp_path / "cm.png")
    for png in (curves, matrix):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html_report(result, read_schema(digits_dir), [curves, matrix], "cnn")
    assert page.count("data:image/png;base64,") == 2
    assert "<td>a</td><td>0.500</td><td>1.000</td>" in page
