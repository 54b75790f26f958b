"""Ray Train adapter: runs :func:`loopline.ml.training_loop.fit` on N workers with TorchTrainer.

Local Ray by default (``ray.init()``); ``LOOPLINE_RAY_ADDRESS``/``RAY_ADDRESS`` points at a
cluster. A run's name is derived from its inputs, so rerunning a killed training resumes
from the last checkpoint Ray Train recorded under the same storage path and name.

Ray is imported where it is used: importing it costs seconds, and the pure helpers here
(``keep_token_in``, ``ship``, ``unpack``) run, and are tested, without it. A training that
runs in-process (the default on one machine) does not import this module at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from loopline.core import progress
from loopline.ml.training_loop import TrainConfig, TrainState, fit, read_state


class RaySession:
    """The :class:`TrainSession` seam over ``ray.train``'s worker context."""

    def __init__(self, progress_file: str | None = None) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        checkpoint = ray.train.get_checkpoint()
        # Checkpoints on a cluster live in object storage; as_directory fetches a copy.
        self._restored = Path(checkpoint.to_directory()) if checkpoint else None
        self._progress_file = progress_file

    def prepare_model(self, model: nn.Module, *, partly_frozen: bool = False) -> nn.Module:
        import ray.train.torch

        # Frozen layers send no gradients; DDP must be told to expect that.
        kwargs = {"find_unused_parameters": True} if partly_frozen else None
        return ray.train.torch.prepare_model(
            model, move_to_device=False, parallel_strategy_kwargs=kwargs
        )

    def latest_checkpoint(self) -> Path | None:
        return self._restored

    def report(self, metrics: dict, write: Callable[[Path], None] | None) -> None:
        import ray.train

        if write is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:  # Ray copies it into its storage
            write(Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def progress(self, total: int, initial: int):
        if self.rank != 0:
            return _Silent()
        if self._progress_file:  # the driver's runner draws the bar from this file
            return progress.FileProgress(self._progress_file, total, initial)
        from ray.experimental.tqdm_ray import tqdm

        bar = tqdm(total=total, desc="training epochs")
        bar.update(initial)
        return bar


def _check_capacity(workers: int, use_gpu: bool, *, local: bool) -> None:
    """A local Ray would wait forever for workers it cannot place; say so instead."""
    import ray

    resource = "GPU" if use_gpu else "CPU"
    available = int(ray.cluster_resources().get(resource, 0))
    if local and workers > available:
        raise ValueError(
            f"--workers {workers} needs {workers} {resource}s but local Ray has {available}; "
            f"use --workers {max(available, 1)} or set RAY_ADDRESS to a larger cluster."
        )


class _Silent:
    def update(self, n: int = 1) -> None: ...
    def set_description(self, desc: str) -> None: ...
    def close(self) -> None: ...


def _worker_loop(loop_config: dict) -> None:
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    with contextlib.ExitStack() as stack:
        data_dir = loop_config.get("data_dir")
        if data_dir is None:  # shipped through the object store (a remote cluster)
            import ray

            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="data-"))
            data_dir = unpack(ray.get(loop_config["data"]), Path(scratch))
        fit(
            TrainConfig(**loop_config["train"]),
            Path(data_dir),
            RaySession(loop_config.get("progress_file")),
            mlflow_run_id=loop_config.get("mlflow_run_id"),
            tracking_uri=loop_config.get("tracking_uri"),
        )


def keep_token_in(home: Path) -> None:
    """Ray 2.60 protects a new local cluster with a token that it writes to ~/.ray; give it
    one in loopline's home instead, unless the user has their own."""
    names = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
    if any(n in os.environ for n in names) or (Path.home() / ".ray" / "auth_token").exists():
        return
    path = home / "ray" / "auth_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # a concurrent first training made it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as token:
            token.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    os.environ["RAY_AUTH_MODE"] = "token"


def ship(data_dir: Path) -> dict[str, bytes]:
    """The dataset's files, to put in Ray's object store: on a remote cluster the workers
    cannot read the driver's disk (on Kubeflow, the train task's pod)."""
    return {p.name: p.read_bytes() for p in sorted(Path(data_dir).iterdir()) if p.is_file()}


def unpack(files: dict[str, bytes], folder: Path) -> Path:
    for name, content in files.items():
        (folder / Path(name).name).write_bytes(content)  # a bare name: nothing outside
    return folder


def train_with_ray(
    config: TrainConfig,
    data_dir: Path,
    *,
    workers: int,
    storage: str | Path,
    run_name: str,
    target: Path,
    use_gpu: bool | None = None,
    ray_address: str | None = None,
    mlflow_run_id: str | None = None,
    tracking_uri: str | None = None,
    max_failures: int = 2,
) -> tuple[Path, TrainState]:
    """Fit on ``workers`` Ray workers; copy the final checkpoint into ``target``.

    A worker that dies (killed, preempted, out of memory) makes Ray Train restart the
    worker group from the last checkpoint, up to ``max_failures`` times in this run.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Ray Train's controller polls workers every 2 s and each checkpointed report waits
    # for a poll; 0.25 s halves the cost of short epochs (benchmarks/train_overhead.md).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    if not ray.is_initialized():
        # "local" starts a fresh local Ray: without it ray.init() joins whatever cluster
        # /tmp/ray last recorded, and waits forever if that cluster has died.
        ray.init(address=ray_address or "local")
    if use_gpu is None:  # GPUs the cluster has now; one that scales them up from zero
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0  # needs LOOPLINE_TRAIN_GPU=on
    _check_capacity(workers, use_gpu, local=ray_address is None)
    # A local Ray's workers read the folder; a cluster's get the files through Ray.
    data = (
        {"data_dir": str(Path(data_dir).resolve())}
        if ray_address is None
        else {"data": ray.put(ship(data_dir))}
    )
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "train": asdict(config),
            **data,
            "mlflow_run_id": mlflow_run_id,
            "tracking_uri": tracking_uri,
            "progress_file": progress.target(),
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=run_name,
            # A folder here, or a URI (s3://...) that every Ray node reaches.
            storage_path=str(storage) if "://" in str(storage) else str(Path(storage).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name} finished without a checkpoint.")
    result.checkpoint.to_directory(str(target))
    return Path(target), read_state(Path(target))
