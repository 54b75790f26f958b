"""Plain PyTorch vs loopline's train step (Ray Train, 1 worker) on the same model and data.

Run: ``.venv/bin/python -m benchmarks.train_overhead [--epochs 10] [--device cpu|cuda]
[--scale N] [--skip-ray]``.
Prints a table and writes ``benchmarks/results/train_overhead-<device>.json``.

Four ways, one run, same digits split, CNN, Adam 1e-3, batch 64, no augmentation:
1. plain: a hand-written PyTorch loop, timed as fit is, from reading the splits;
2. loopline in-process: ``loopline.ml.training_loop.fit`` (checkpoint every epoch, early stopping
   bookkeeping, AMP on CUDA) without Ray;
3. loopline train step, ``workers=auto`` (the pipeline's default; in-process on one
   machine): the whole step with MLflow, checkpoints, lineage and the model artifact;
4. loopline + Ray: ``loopline.ml.steps.train_step`` with 1 Ray worker: ray.init, TorchTrainer,
   checkpoints reported to Ray, MLflow metrics, the model artifact.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from loopline.core.settings import load_settings
from loopline.ml.augment import random_affine
from loopline.ml.dataset import Split, read_schema, read_split, write_dataset
from loopline.ml.models import build_model
from loopline.ml.sources import ingest
from loopline.ml.training_loop import LocalSession, TrainConfig, fit

RESULTS = Path(__file__).parent / "results"


def plain_pytorch(data: Path, config: TrainConfig, device: str) -> float:
    """A hand-written loop over the same model and data; returns wall seconds. Timed as
    loopline's fit is: from reading the splits to the last epoch's end."""
    started = time.perf_counter()
    schema = read_schema(data)
    train = read_split(data, "train", schema)
    x, y = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
    torch.manual_seed(config.seed)
    model = build_model(config.spec_for(schema)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    amp = device == "cuda" and config.amp
    for _ in range(config.epochs):
        model.train()
        for batch in torch.randperm(len(y), device=device).split(config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def loopline_in_process(data: Path, config: TrainConfig, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fit(config, data, LocalSession(Path(tmp), device=device))
        return time.perf_counter() - started


def loopline_step_auto(data: Path, config: TrainConfig, device: str) -> dict | None:
    """The whole train step as the pipeline runs it by default (``workers=auto``: one
    machine, so in-process): MLflow run and metrics, checkpoints, lineage, serving files
    and the model artifact, besides the epochs. None where MLflow is not installed (the GPU
    device image): the step's fixed overhead is measured on the CPU machine instead."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return None
    from loopline.ml.steps import train_step

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"LOOPLINE_HOME": tmp})
        runs = {}
        for name, seed in (("cold", config.seed + 1), ("warm", config.seed)):
            # cold: a new home (the MLflow store is created); warm: the home a user has
            started = time.perf_counter()
            summary = train_step(
                data,
                Path(tmp) / name,
                dataclasses.replace(config, seed=seed),
                run_id="bench",
                workers=-1,
                model_name="bench",
                settings=settings,
                use_gpu=device == "cuda",
            )
            runs[name] = time.perf_counter() - started
        history = json.loads((Path(tmp) / "warm" / "training.json").read_text())["history"]
    epoch_s = sum(len_train(data) / h["samples_per_s"] for h in history)
    return {
        "train_step_s": runs["warm"],
        "cold_train_step_s": runs["cold"],
        "epochs_compute_s": epoch_s,
        "fixed_overhead_s": runs["warm"] - epoch_s,
        "epochs_run": summary["epochs_run"],
    }


def loopline_ray(data: Path, config: TrainConfig, use_gpu: bool) -> dict:
    import ray

    from loopline.ml.steps import train_step

    started = time.perf_counter()
    ray.init(address="local", log_to_driver=False)  # never a stale cluster from /tmp/ray
    init_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"LOOPLINE_HOME": tmp})
        fit_started = time.perf_counter()
        summary = train_step(
            data,
            Path(tmp) / "model",
            config,
            run_id="bench",
            workers=1,
            model_name="bench",
            settings=settings,
            use_gpu=use_gpu,
        )
        step_s = time.perf_counter() - fit_started
        history = json.loads((Path(tmp) / "model" / "training.json").read_text())["history"]
    ray.shutdown()
    epoch_s = sum(len_train(data) / h["samples_per_s"] for h in history)
    return {
        "ray_init_s": init_s,
        "train_step_s": step_s,
        "epochs_compute_s": epoch_s,
        "fixed_overhead_s": step_s - epoch_s,
        "epochs_run": summary["epochs_run"],
    }


def scaled_digits(folder: Path, scale: int) -> Path:
    """Digits upsampled to 28x28 and repeated ``scale`` times with random warps (MNIST-sized)."""
    ingest("digits", folder, seed=0)
    if scale <= 1:
        return folder
    schema = read_schema(folder)
    generator = torch.Generator().manual_seed(0)
    splits = {}
    for name in ("train", "val", "test"):
        split = read_split(folder, name, schema)
        images = F.interpolate(
            torch.from_numpy(split.x).reshape(-1, 1, 8, 8), size=28, mode="bilinear"
        )
        copies = scale if name == "train" else 1
        warped = [
            random_affine(images, generator=generator) if i else images for i in range(copies)
        ]
        splits[name] = Split(
            x=torch.cat(warped).reshape(len(warped) * len(images), -1).clamp(0, 1).numpy(),
            y=np.tile(split.y, copies),
        )
    schema.input_shape = [1, 28, 28]
    schema.features = [f"px_{i}" for i in range(28 * 28)]
    schema.rows = {k: len(v.y) for k, v in splits.items()}
    write_dataset(folder, schema, splits)
    return folder


def len_train(data: Path) -> int:
    return read_schema(data).rows["train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-ray", action="store_true", help="no Ray on this machine")
    parser.add_argument("--scale", type=int, default=1, help="MNIST-sized data: 28x28, N copies")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the two loops")
    parser.add_argument(
        "--stream",
        choices=["auto", "on", "off"],
        default="auto",
        help="loopline's ways read the splits whole (off) or stream them (on)",
    )
    args = parser.parse_args()
    # patience > epochs: every way runs every epoch, so throughputs compare like for like.
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        augment=False,
        patience=args.epochs + 1,
        stream=args.stream,
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = scaled_digits(Path(tmp) / "digits", args.scale)
        samples = len_train(data) * args.epochs
        plain_pytorch(data, TrainConfig(epochs=1), args.device)  # warm-up (CUDA context, kernels)
        results = {
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, "
            + (torch.cuda.get_device_name() if args.device == "cuda" else "CPU"),
            "command": "python -m benchmarks.train_overhead "
            + f"--epochs {args.epochs} --device {args.device} --scale {args.scale} "
            + f"--batch-size {args.batch_size} --stream {args.stream} --repeat {args.repeat}"
            + (" --skip-ray" if args.skip_ray else ""),
            "samples": samples,
        }
        # Alternated and repeated: on a small VM one run's noise is larger than the gap.
        plain, fit_s = [], []
        for _ in range(args.repeat):
            plain.append(plain_pytorch(data, config, args.device))
            fit_s.append(loopline_in_process(data, config, args.device))
        results |= {
            "plain_runs_s": plain,
            "loopline_in_process_runs_s": fit_s,
            "plain_s": statistics.median(plain),
            "loopline_in_process_s": statistics.median(fit_s),
            "auto": loopline_step_auto(data, config, args.device),
        }
        if args.device == "cuda":  # what mixed precision buys, on both ways
            fp32 = dataclasses.replace(config, amp=False)
            results["plain_fp32_s"] = plain_pytorch(data, fp32, args.device)
            results["loopline_in_process_fp32_s"] = loopline_in_process(data, fp32, args.device)
        if not args.skip_ray:
            results["ray"] = loopline_ray(data, config, use_gpu=args.device == "cuda")
    report(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"train_overhead-{args.device}-scale{args.scale}-{args.stream}.json").write_text(
        json.dumps(results, indent=2)
    )


def report(r: dict) -> None:
    rows = [
        ("plain PyTorch", r["plain_s"]),
        ("loopline fit, in-process", r["loopline_in_process_s"]),
    ]
    if r["auto"]:
        rows.append(("loopline train step, workers=auto, warm", r["auto"]["train_step_s"]))
    if "ray" in r:
        rows.append(("loopline train step, Ray 1 worker", r["ray"]["train_step_s"]))
    print(f"{r['machine']}\n{r['command']}\n")
    print(
        f"plain runs {[round(v, 2) for v in r['plain_runs_s']]}, in-process runs "
        f"{[round(v, 2) for v in r['loopline_in_process_runs_s']]} (medians below)"
    )
    print(f"{'way':36} {'seconds':>8} {'samples/s':>10} {'ratio':>6}")
    for name, seconds in rows:
        ratio = seconds / r["plain_s"]
        print(f"{name:36} {seconds:8.2f} {r['samples'] / seconds:10.0f} {ratio:6.2f}x")
    if auto := r["auto"]:
        print(
            f"\nworkers=auto (in-process here): {auto['fixed_overhead_s']:.2f} s in the train "
            f"step beyond the epochs' own compute ({auto['epochs_compute_s']:.2f} s), in a home "
            f"that has an MLflow store; the first step in a new home took "
            f"{auto['cold_train_step_s']:.2f} s."
        )
    if "ray" in r:
        ray = r["ray"]
        print(
            f"\nRay fixed cost: ray.init {ray['ray_init_s']:.1f} s, plus "
            f"{ray['fixed_overhead_s']:.1f} s in the train step beyond the epochs' own "
            f"compute ({ray['epochs_compute_s']:.2f} s)."
        )


if __name__ == "__main__":
    main()
