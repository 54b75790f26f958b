"""The training loop every worker runs, behind a small session interface.

The loop is engine-free: :class:`TrainSession` is the seam. ``ray_training`` adapts it
to Ray Train (sharding, DDP, checkpoints reported to Ray); :class:`LocalSession` runs the
same loop in-process (tests, benchmarks, a GPU check without a Ray cluster).

A checkpoint holds the current and best weights, the optimizer and the early-stopping
state, so a killed run resumes from it. One is written at the end of an epoch once
``checkpoint_seconds`` have passed since the last, and after the final epoch: a long
epoch is always checkpointed, while a run of 50 ms epochs is not slowed by a write per
epoch (a kill then costs at most that many seconds of training). Randomness is re-seeded
per epoch, so a resumed run matches an uninterrupted one. Checkpoints are
safetensors and JSON only (the optimizer's state too): nothing in them is unpickled, and
an epoch of a small model is not outweighed by pickling its optimizer.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from loopline.core import progress
from loopline.ml import streaming
from loopline.ml.augment import random_affine
from loopline.ml.backbones import STAGES
from loopline.ml.dataset import DatasetSchema, read_schema, read_split
from loopline.ml.model_spec import BACKBONES, ModelSpec
from loopline.ml.models import build_model
from loopline.ml.train_config import TrainConfig
from loopline.ml.transfer import (
    Weights,
    frozen_stages,
    load_backbone,
    parameter_groups,
    set_frozen,
)
from loopline.ml.transfer import read_state as read_weights
from loopline.ml.weights import save_weights, unwrap

STATE = "state.json"
BEST = "best.safetensors"
CURRENT = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"  # the state's tensors; its groups: OPTIMIZER_GROUPS
OPTIMIZER_GROUPS = "optimizer.json"
# How an optimizer steps (Adam's kernel): this machine's choice, never a checkpoint's.
KERNEL_FLAGS = ("fused", "foreach", "capturable")

log = logging.getLogger("loopline.train")


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    best_epoch: int = -1
    best_val_loss: float = float("inf")
    bad_epochs: int = 0
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    history: list[dict] | None = None

    def improved(self, val_loss: float, patience: int) -> bool:
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            return True
        self.bad_epochs += 1
        self.stopped_early = self.bad_epochs >= patience
        return False


class TrainSession(Protocol):
    """What the loop needs from an engine: who am I, where to run, where state goes."""

    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: nn.Module, *, partly_frozen: bool = False) -> nn.Module: ...
    def latest_checkpoint(self) -> Path | None: ...
    def report(self, metrics: dict, write: Callable[[Path], None] | None) -> None:
        """Record an epoch's metrics, and its checkpoint when ``write`` (which fills a
        folder) is given: rank 0 writes it, every rank reports."""

    def progress(self, total: int, initial: int) -> ProgressBar: ...


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> object: ...
    def set_description(self, desc: str) -> object: ...
    def close(self) -> object: ...


def fit(
    config: TrainConfig,
    data_dir: Path,
    session: TrainSession,
    *,
    mlflow_run_id: str | None = None,
    tracking_uri: str | None = None,
) -> TrainState:
    """Train on ``data_dir``'s train split, early-stop on val loss, checkpoint as due."""
    schema = read_schema(data_dir)
    spec = config.spec_for(schema)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    if hasattr(model, "set_normalization"):
        model.set_normalization(schema.feature_mean, schema.feature_std)
    transfer = _Transfer(config, spec)
    transfer.load(model)
    model.to(session.device)
    # The fused kernel: one pass over all parameters per step. A small network's step is
    # otherwise a loop of a dozen tensor ops per parameter, a tenth of its training time.
    optimizer = torch.optim.Adam(
        transfer.groups(model, config.lr),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=session.device.type in ("cpu", "cuda"),
    )
    state, best = _restore(session.latest_checkpoint(), model, optimizer)
    model = session.prepare_model(model, partly_frozen=transfer.freezes)

    loader, val = _data(config, data_dir, schema, session)
    augment = config.augment and schema.kind == "image"
    amp = _amp(config, session.device)
    logger = _MetricLogger(mlflow_run_id, tracking_uri) if session.rank == 0 else None

    bar = session.progress(config.epochs, state.epoch)
    try:
        checkpointed = time.monotonic()
        while state.epoch < config.epochs and not state.stopped_early:
            torch.manual_seed(config.seed * 100_003 + state.epoch * 101 + session.rank)
            loader.set_epoch(state.epoch)
            started = time.perf_counter()
            frozen = transfer.frozen(state.epoch)
            train_loss, train_acc, seen = _train_epoch(
                model, loader, optimizer, session, amp, spec if augment else None, frozen
            )
            val_loss, val_acc, _ = _evaluate(model, val, session, amp)
            metrics = {
                "epoch": state.epoch,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "samples_per_s": seen / (time.perf_counter() - started),
            }
            if state.improved(val_loss, config.patience) or best is None:
                best = _cpu_state(model)
            state.epoch += 1
            state.history = [*(state.history or []), metrics]
            last = state.epoch >= config.epochs or state.stopped_early
            due = last or time.monotonic() - checkpointed >= config.checkpoint_seconds
            write = None
            if due and session.rank == 0:
                write = functools.partial(_write_checkpoint, model=model, best=best, optimizer=optimizer, state=state)  # fmt: skip
            session.report(metrics, write)
            if due:
                checkpointed = time.monotonic()
            if logger:
                logger.log(metrics, flush=due)
            bar.set_description(
                f"epoch {state.epoch} val_loss {val_loss:.3f} val_acc {val_acc:.3f}"
            )
            bar.update(1)
    finally:
        bar.close()
        if logger:  # what the throttle held back, also when an epoch raised
            logger.close()
    return state


def _train_epoch(
    model, loader, optimizer, session, amp, augment_spec, frozen=None
) -> tuple[float, float, int]:
    model.train()
    if frozen is not None:  # a backbone: () unfreezes what a probe epoch froze
        set_frozen(unwrap(model), frozen)
    total_loss = correct = seen = 0.0
    for x, y in loader:
        x, y = x.to(session.device), y.to(session.device)
        if augment_spec is not None:
            shape = augment_spec.input_shape
            x = random_affine(x.reshape(len(x), *shape)).reshape(len(x), -1)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(session.device.type, dtype=amp.dtype, enabled=amp.enabled):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        amp.scaler.scale(loss).backward()
        amp.scaler.step(optimizer)
        amp.scaler.update()
        # Summed on the device: no host round trip per batch.
        total_loss = total_loss + loss.detach().float() * len(y)
        correct = correct + (logits.argmax(1) == y).sum()
        seen += len(y)
    loss_sum, correct, seen = _all_reduce([float(total_loss), float(correct), seen], session)
    return loss_sum / max(seen, 1), correct / max(seen, 1), int(seen)


@torch.inference_mode()
def _evaluate(model, val, session, amp) -> tuple[float, float, int]:
    """Loss and accuracy over this rank's share of ``val()`` batches, summed over ranks."""
    model.eval()
    loss_sum = correct = 0.0
    n = 0
    for xb, yb in val():
        xb, yb = xb.to(session.device), yb.to(session.device)
        with torch.autocast(session.device.type, dtype=amp.dtype, enabled=amp.enabled):
            logits = model(xb)
        # Summed on the device, as in training: one host round trip per evaluation.
        loss_sum = loss_sum + F.cross_entropy(logits.float(), yb, reduction="sum")
        correct = correct + (logits.argmax(1) == yb).sum()
        n += len(yb)
    loss_sum, correct, n = _all_reduce([float(loss_sum), float(correct), n], session)
    return loss_sum / max(n, 1), correct / max(n, 1), int(n)


class _Transfer:
    """What transfer learning changes in the loop: the starting weights, which stages are
    frozen in which epoch, and the backbone's learning rate."""

    def __init__(self, config: TrainConfig, spec: ModelSpec):
        self.config = config
        self.backbone = spec.arch in BACKBONES
        self.arch = spec.arch
        if not self.backbone:
            return
        self.after_probe = frozen_stages(config.freeze)
        self.all = STAGES

    def load(self, model: nn.Module) -> None:
        if not (self.backbone and self.config.pretrained):
            return
        path = Path(self.config.pretrained)  # resolved to a local file by the caller
        weights = Weights(path, self.config.pretrained, "")
        load_backbone(model, read_weights(weights), weights, self.arch)

    @property
    def freezes(self) -> bool:
        return self.backbone and (self.config.probe_epochs > 0 or bool(self.after_probe))

    def frozen(self, epoch: int) -> tuple[str, ...] | None:
        if not self.backbone:
            return None
        return self.all if epoch < self.config.probe_epochs else self.after_probe

    def groups(self, model: nn.Module, lr: float):
        if not self.backbone:
            return model.parameters()
        return parameter_groups(model, lr, self.config.backbone_lr_scale)


def _data(config: TrainConfig, data_dir: Path, schema: DatasetSchema, session: TrainSession):
    """The train batches (with ``set_epoch``) and a callable giving this rank's validation
    batches: read whole, or streamed from Parquet when they would not fit the budget."""
    rank, world = session.rank, session.world_size
    budget = config.memory_mb * 2**20
    size = sum(streaming.in_memory_bytes(data_dir, s, schema) for s in ("train", "val"))
    if config.stream == "on" or (config.stream == "auto" and size > budget):
        train = streaming.TrainStream(
            data_dir, schema, config.batch_size, rank=rank, world=world, seed=config.seed
        )

        def val():
            for x, y in streaming.chunks(data_dir, "val", schema, rank=rank, world=world):
                yield torch.from_numpy(x), torch.from_numpy(y)

        return train, val
    train_split = read_split(data_dir, "train", schema)
    val_split = read_split(data_dir, "val", schema)
    part = slice(rank, None, world)
    # On a GPU the splits move over once, as a plain loop does: no copy per batch.
    device = session.device
    val_x = torch.from_numpy(val_split.x[part]).to(device)
    val_y = torch.from_numpy(val_split.y[part]).to(device)
    batches = _InMemoryBatches(
        train_split.x,
        train_split.y,
        config.batch_size,
        rank=rank,
        world=world,
        seed=config.seed,
        device=device,
    )
    return batches, lambda: zip(torch.split(val_x, 1024), torch.split(val_y, 1024), strict=True)


class _InMemoryBatches:
    """Shuffled batches of this rank's share of in-memory rows, cut by indexing the whole
    tensors (as a plain loop does), not collated row by row. As DistributedSampler does,
    each rank gets the same number of rows; the first ones repeat to even them out."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        rank: int,
        world: int,
        seed: int,
        device: torch.device,
    ):
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.y), generator=generator)
        per_rank = -(-len(order) // self.world)
        order = torch.cat([order, order[: per_rank * self.world - len(order)]])
        mine = order[self.rank :: self.world].to(self.x.device)
        for batch in mine.split(self.batch_size):
            yield self.x[batch], self.y[batch]


def _all_reduce(values: list[float], session: TrainSession) -> list[float]:
    if session.world_size == 1 or not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=session.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@dataclass
class _Amp:
    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler


def _amp(config: TrainConfig, device: torch.device) -> _Amp:
    enabled = config.amp and device.type == "cuda"
    bf16 = enabled and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 or not enabled else torch.float16
    # bf16 keeps fp32's range, so only fp16 needs loss scaling.
    scaler = torch.amp.GradScaler(device.type, enabled=enabled and not bf16)
    return _Amp(enabled, dtype, scaler)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def _write_checkpoint(folder: Path, *, model, best, optimizer, state) -> None:
    save_weights(folder / CURRENT, model)
    save_file(best, str(folder / BEST))
    _save_optimizer(optimizer, folder)
    (folder / STATE).write_text(json.dumps(asdict(state), indent=2))


def _save_optimizer(optimizer, folder: Path) -> None:
    """The optimizer's state as tensors (safetensors) and its groups as JSON."""
    saved = optimizer.state_dict()
    tensors, numbers = {}, {}
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                numbers[f"{index}.{key}"] = value
    save_file(tensors, str(folder / OPTIMIZER))
    meta = {"param_groups": saved["param_groups"], "numbers": numbers}
    (folder / OPTIMIZER_GROUPS).write_text(json.dumps(meta))


def _load_optimizer(optimizer, folder: Path) -> None:
    if (folder / "optimizer.pt").exists():  # written before 0.1.2: tensors only, no code
        saved = torch.load(folder / "optimizer.pt", weights_only=True)
    else:
        meta = json.loads((folder / OPTIMIZER_GROUPS).read_text())
        state: dict[int, dict] = {}
        flat = {**load_file(str(folder / OPTIMIZER)), **meta["numbers"]}
        for name, value in flat.items():
            index, _, key = name.partition(".")
            state.setdefault(int(index), {})[key] = value
        saved = {"state": state, "param_groups": meta["param_groups"]}
    # The kernel flags as this run chose them for its device: a checkpoint written on
    # another (fused on CUDA, none on MPS, or before the fused kernel) would otherwise
    # impose its own. Set before loading: torch places Adam's step counts by them.
    kernel = {k: v for k, v in optimizer.defaults.items() if k in KERNEL_FLAGS}
    saved["param_groups"] = [{**group, **kernel} for group in saved["param_groups"]]
    optimizer.load_state_dict(saved)


def _restore(
    checkpoint: Path | None, model: nn.Module, optimizer
) -> tuple[TrainState, dict | None]:
    if checkpoint is None:
        return TrainState(), None
    unwrap(model).load_state_dict(load_file(str(checkpoint / CURRENT)))
    _load_optimizer(optimizer, checkpoint)
    state = read_state(checkpoint)
    state.resumed_from_epoch = state.epoch
    return state, load_file(str(checkpoint / BEST))


def read_state(checkpoint: Path) -> TrainState:
    return TrainState(**json.loads((Path(checkpoint) / STATE).read_text()))


# How often the per-epoch metrics are sent to MLflow, at most (seconds).
METRICS_EVERY_S = 2.0


class _MetricLogger:
    """Per-epoch metrics to the MLflow run the driver opened (rank 0 only), sent at most
    every ``every`` seconds, with each checkpoint (so a resumed run lacks none of the
    epochs it skips) and when the loop ends, however it ends: a write to the tracking
    store per 50 ms epoch would slow a small training by a tenth."""

    def __init__(self, run_id: str | None, tracking_uri: str | None, every: float | None = None):
        self.run_id, self.every = run_id, METRICS_EVERY_S if every is None else every
        self.pending: list = []
        self.sent = time.monotonic()
        if run_id:
            from mlflow import MlflowClient  # only a tracked run pays for importing MLflow

            self.client = MlflowClient(tracking_uri)

    def log(self, metrics: dict, *, flush: bool) -> None:
        if not self.run_id:
            return
        from mlflow.entities import Metric  # as in __init__: only a tracked run imports MLflow

        now = int(time.time() * 1000)
        step = int(metrics["epoch"])
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items() if k != "epoch"]
        if flush or time.monotonic() - self.sent >= self.every:
            self._send()

    def close(self) -> None:
        """Send what is held back. Best effort: called as the loop ends, also on its way
        out with an error, which a tracking store that does not answer must not hide."""
        if not (self.run_id and self.pending):
            return
        try:
            self._send()
        except Exception as exc:  # noqa: BLE001 - the training's own outcome comes first
            log.warning("%d metric values not sent to MLflow: %r", len(self.pending), exc)

    def _send(self) -> None:
        for start in range(0, len(self.pending), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=self.pending[start : start + 1000])
        self.pending, self.sent = [], time.monotonic()


class LocalSession:
    """Runs :func:`fit` in this process; checkpoints go to ``folder/checkpoint_NNNNNN``,
    the last ``keep`` of them kept (as Ray Train's ``num_to_keep``)."""

    rank = 0
    world_size = 1

    def __init__(self, folder: Path, device: str = "cpu", keep: int = 2):
        self.folder = Path(folder)
        self.device = torch.device(device)
        self.keep = keep
        self.folder.mkdir(parents=True, exist_ok=True)

    def prepare_model(self, model: nn.Module, *, partly_frozen: bool = False) -> nn.Module:
        return model

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.folder.glob("checkpoint_*"))
        return found[-1] if found else None

    def report(self, metrics: dict, write: Callable[[Path], None] | None) -> None:
        if write is None:
            return
        # Written in place under a name latest_checkpoint skips, then renamed: a run killed
        # mid-write leaves the previous epoch's checkpoint as the latest, never a torn one.
        final = self.folder / f"checkpoint_{metrics['epoch']:06d}"
        partial = self.folder / f".partial-{final.name}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        write(partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in sorted(self.folder.glob("checkpoint_*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def progress(self, total: int, initial: int) -> ProgressBar:
        if path := progress.target():
            return progress.FileProgress(path, total, initial)
        return tqdm(total=total, initial=initial, desc="epochs", unit="epoch")
