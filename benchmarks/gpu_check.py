"""GPU check (run on a CUDA machine): loopline's training loop with AMP reaches the same
accuracy as in fp32, and records which precision ran; then a pretrained ResNet-18 backbone
(trained here, no downloads) is fine-tuned with mixed precision.

Run: ``python -m benchmarks.gpu_check`` (the device script ``benchmarks/gpu_check.sh``
runs this, then ``benchmarks.train_overhead --device cuda``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from loopline.ml.dataset import read_schema, read_split
from loopline.ml.evaluation import evaluate
from loopline.ml.models import build_model
from loopline.ml.sources import ingest
from loopline.ml.training_loop import BEST, LocalSession, TrainConfig, fit
from loopline.ml.weights import load_model, save_model


def train_and_score(data: Path, folder: Path, *, amp: bool, device: str, **config) -> dict:
    session = LocalSession(folder / "checkpoints", device=device)
    config = TrainConfig(**{"epochs": 15, **config, "amp": amp})
    started = time.perf_counter()
    state = fit(config, data, session)
    seconds = time.perf_counter() - started
    schema = read_schema(data)
    spec = config.spec_for(schema)
    model_dir = folder / "model"
    model = build_model(spec)
    model.load_state_dict(load_file(str(session.latest_checkpoint() / BEST)))
    save_model(model_dir, model, spec)
    loaded, _ = load_model(model_dir)  # the serving path: safetensors, CPU
    result = evaluate(loaded, read_split(data, "test", schema), schema.classes)
    return {
        "amp": amp,
        "arch": spec.arch,
        "pretrained": bool(config.pretrained),
        "seconds": seconds,
        "epochs": state.epoch,
        "test_accuracy": result.accuracy,
        "weights": str(model_dir / "model.safetensors"),
    }


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        ingest("digits", data, seed=0)
        runs = [
            train_and_score(data, Path(tmp) / name, amp=amp, device=device)
            for name, amp in (("amp", True), ("fp32", False))
        ]
        resnet = {"arch": "resnet18", "input_size": 64, "epochs": 6, "batch_size": 128}
        backbone = train_and_score(data, Path(tmp) / "resnet", amp=True, device=device, **resnet)
        runs.append(backbone)
        runs.append(
            train_and_score(
                data,
                Path(tmp) / "transfer",
                amp=True,
                device=device,
                **{**resnet, "epochs": 3, "probe_epochs": 1, "pretrained": backbone["weights"]},
            )
        )
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "bf16": device == "cuda" and torch.cuda.is_bf16_supported(),
        "torch": torch.__version__,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"gpu_check-{device}.json").write_text(json.dumps(report, indent=2))
    assert all(r["test_accuracy"] > 0.9 for r in runs), runs


if __name__ == "__main__":
    main()
