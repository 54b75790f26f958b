"""The work behind each built-in KFP component, callable (and tested) without KFP.

Each step reads input artifact folders, writes its output folder with ``lineage.json``,
and returns a small JSON-able summary that the component also puts in KFP metadata.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from components import lineage
from components.dataset import read_frame, read_schema, read_split
from components.evaluation import (
    Evaluation,
    evaluate,
    html_report,
    plot_confusion_matrix,
    plot_training_curves,
)
from components.gate import decide
from components.registry import METRIC_TAG, Registry
from components.settings import Settings
from components.sources import ingest
from components.training import BEST, LocalSession, TrainConfig, TrainState, fit
from components.validation import DataValidationError, ValidationConfig, validate, write_reports
from components.weights import ARCHITECTURE, WEIGHTS, load_model

ERROR = "error.txt"
TRAINING = "training.json"
EVALUATION = "evaluation.json"
DECISION = "decision.json"
INPUT_SCHEMA = "input_schema.json"
REFERENCE = "reference.parquet"
REFERENCE_ROWS = 5000
MODEL_PATH = "model"  # where a run's model files sit among its MLflow artifacts


def reports_failure(step: Callable) -> Callable:
    """On failure, leave the message beside the step's output for the run summary to show.

    The step still raises: KFP marks the task failed and stops the pipeline.
    """
    signature = inspect.signature(step)

    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except Exception as exc:
            task_dir = Path(signature.bind(*args, **kwargs).arguments["out"]).parent
            task_dir.mkdir(parents=True, exist_ok=True)
            (task_dir / ERROR).write_text(f"{type(exc).__name__}: {exc}\n")
            raise

    return wrapper


@reports_failure
def ingest_step(
    source: str, out: Path, *, run_id: str, label_column: str, image_size: int, seed: int
) -> dict:
    schema = ingest(source, out, label_column=label_column, image_size=image_size, seed=seed)
    source_path = Path(source).expanduser()
    origin = lineage.content_hash(source_path) if source_path.exists() else f"builtin:{source}"
    params = {
        "source": source,
        "label_column": label_column,
        "image_size": image_size,
        "seed": seed,
    }
    record = lineage.record(
        out, run_id=run_id, step="ingest", inputs={"source": origin}, parameters=params
    )
    return {"rows": schema.rows, "classes": len(schema.classes), "lineage": record}


@reports_failure
def validate_step(dataset: Path, out: Path, *, run_id: str, config: ValidationConfig) -> dict:
    """Run every check, write the reports, then raise if any check failed."""
    checks = validate(dataset, config)
    reports = write_reports(dataset, checks, out)
    lineage.record(
        out,
        run_id=run_id,
        step="validate",
        inputs={"dataset": lineage.content_hash(dataset)},
        parameters=asdict(config),
    )
    failures = [c for c in checks if not c.passed]
    if failures:
        raise DataValidationError(failures)
    return {"passed": True, "reports": reports}


@reports_failure
def train_step(
    dataset: Path,
    out: Path,
    config: TrainConfig,
    *,
    run_id: str,
    workers: int,
    model_name: str,
    settings: Settings,
    use_gpu: bool | None = None,
) -> dict:
    """Train on ``workers`` Ray workers (0: in this process, without Ray) into ``out``."""
    schema = read_schema(dataset)
    spec = config.spec_for(schema)
    data_hash = lineage.content_hash(dataset)
    params = {**asdict(config), "arch": spec.arch, "workers": workers}
    # Same data and parameters -> same checkpoint location, so a killed run resumes.
    key = hashlib.sha256(json.dumps([data_hash, params], sort_keys=True).encode()).hexdigest()
    registry = Registry(settings)
    mlflow_run = registry.start_run(
        model_name, params=params, tags={"loopline.run_id": run_id, "loopline.dataset": data_hash}
    )
    tracking = {"mlflow_run_id": mlflow_run, "tracking_uri": settings.tracking_uri}
    with tempfile.TemporaryDirectory() as tmp:
        if workers == 0:
            state, checkpoint = _train_in_process(
                config, dataset, settings.ray_storage / f"local-{key[:16]}", use_gpu, tracking
            )
        else:
            from components.ray_training import train_with_ray

            checkpoint, state = train_with_ray(
                config,
                dataset,
                workers=workers,
                storage=settings.ray_storage,
                run_name=f"train-{key[:16]}",
                target=Path(tmp),
                use_gpu=use_gpu,
                ray_address=settings.ray_address,
                **tracking,
            )
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkpoint / BEST, out / WEIGHTS)  # early stopping: best weights win
    (out / ARCHITECTURE).write_text(spec.to_json())
    _write_serving_files(dataset, out, seed=config.seed)
    summary = {
        "arch": spec.arch,
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss,
        "stopped_early": state.stopped_early,
        "resumed_from_epoch": state.resumed_from_epoch,
        "mlflow_run_id": mlflow_run,
        "history": state.history or [],
    }
    (out / TRAINING).write_text(json.dumps(summary, indent=2))
    summary["lineage"] = lineage.record(
        out, run_id=run_id, step="train", inputs={"dataset": data_hash}, parameters=params
    )
    summary["model_uri"] = registry.log_files(mlflow_run, out, MODEL_PATH)
    return {k: v for k, v in summary.items() if k != "history"}


def _write_serving_files(dataset: Path, out: Path, *, seed: int) -> None:
    """What travels with the model: its input schema (serving validates requests against
    it) and a sample of its training data (the drift reference for monitoring)."""
    shutil.copy(dataset / "schema.json", out / INPUT_SCHEMA)
    train = read_frame(dataset, "train")
    train.sample(n=min(len(train), REFERENCE_ROWS), random_state=seed).to_parquet(
        out / REFERENCE, index=False
    )


def _train_in_process(
    config: TrainConfig, dataset: Path, folder: Path, use_gpu: bool | None, tracking: dict
) -> tuple[TrainState, Path]:
    import torch

    gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    session = LocalSession(folder, device="cuda" if gpu else "cpu")
    state = fit(config, dataset, session, **tracking)
    return state, session.latest_checkpoint()


@reports_failure
def evaluate_step(
    model: Path, dataset: Path, out: Path, *, run_id: str, settings: Settings
) -> dict:
    net, spec = load_model(model)
    schema = read_schema(dataset)
    result = evaluate(net, read_split(dataset, "test", schema), schema.classes)
    training = json.loads((model / TRAINING).read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / EVALUATION).write_text(result.to_json())
    plots = [plot_confusion_matrix(result, out / "confusion_matrix.png")]
    if training["history"]:
        plots.insert(0, plot_training_curves(training["history"], out / "training_curves.png"))
    (out / "report.html").write_text(html_report(result, schema, plots, spec.arch))
    registry = Registry(settings)
    registry.log_metrics(
        training["mlflow_run_id"], {f"test_{k}": v for k, v in result.headline().items()}
    )
    registry.log_files(training["mlflow_run_id"], out, "evaluation")
    record = lineage.record(
        out,
        run_id=run_id,
        step="evaluate",
        inputs={"model": lineage.content_hash(model), "dataset": lineage.content_hash(dataset)},
        parameters={},
    )
    return {
        "metrics": result.headline(),
        "report": str(out / "report.html"),
        "plots": [str(p) for p in plots],
        "lineage": record,
    }


@reports_failure
def register_step(
    model: Path,
    dataset: Path,
    evaluation: Path,
    out: Path,
    *,
    run_id: str,
    model_name: str,
    settings: Settings,
) -> dict:
    """Create a registry version, then move ``champion`` only if the gate says so."""
    registry = Registry(settings)
    training = json.loads((model / TRAINING).read_text())
    challenger = Evaluation.from_json((evaluation / EVALUATION).read_text())
    schema = read_schema(dataset)
    champion = registry.champion(model_name)
    champion_metrics, incompatible = None, None
    if champion is not None:
        champion_metrics, incompatible = _score_champion(registry, champion, dataset)
    decision = decide(
        metric=settings.gate_metric,
        margin=settings.gate_margin,
        challenger=challenger.headline(),
        champion=champion_metrics,
        champion_version=champion.version if champion else None,
        incompatible=incompatible,
    )
    model_lineage = lineage.read(model)
    existing = registry.find_version(model_name, model_lineage["content_hash"])
    if existing is not None:  # idempotent: the same model files are one version
        decision = _already_registered(decision, existing, champion)
    tags = {
        "loopline.run_id": run_id,
        "loopline.dataset": model_lineage["inputs"]["dataset"],
        "loopline.code_version": model_lineage["code_version"],
        "loopline.content_hash": model_lineage["content_hash"],
        "loopline.arch": training["arch"],
        "loopline.schema": json.dumps(
            {"input_shape": schema.input_shape, "classes": schema.classes}
        ),
        "gate.promoted": str(decision.promote).lower(),
        "gate.reasons": "; ".join(decision.reasons),
        **{f"{METRIC_TAG}{k}": f"{v:.6f}" for k, v in challenger.headline().items()},
    }
    source = registry.artifact_uri(training["mlflow_run_id"], MODEL_PATH)
    version = existing or registry.create_version(
        model_name, source=source, run_id=training["mlflow_run_id"], tags=tags
    )
    if decision.promote:
        registry.promote(model_name, version.version)
    result = {
        "model_name": model_name,
        "version": version.version,
        "promoted": decision.promote,
        "decision": decision.to_dict(),
        "metrics": challenger.headline(),
        "mlflow_run_id": training["mlflow_run_id"],
        "tracking_uri": settings.tracking_uri,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / DECISION).write_text(json.dumps(result, indent=2))
    result["lineage"] = lineage.record(
        out,
        run_id=run_id,
        step="register",
        inputs={
            "model": model_lineage["content_hash"],
            "evaluation": lineage.content_hash(evaluation),
        },
        parameters={"metric": decision.metric, "margin": decision.margin, "model_name": model_name},
    )
    return result


def _already_registered(decision, existing, champion):
    """A re-registered model keeps its version; it is promoted only if nothing is champion."""
    if champion is None:
        decision.reasons = [f"same files as v{existing.version}, and there is no champion"]
        return decision
    decision.promote = False
    decision.reasons = [
        f"same files as v{existing.version} (already registered); champion stays v{champion.version}"
    ]
    return decision


def _score_champion(registry: Registry, champion, dataset: Path) -> tuple[dict | None, str | None]:
    """The champion's metrics on this run's test set, or why it cannot be scored."""
    schema = read_schema(dataset)
    try:
        net, spec = load_model(registry.download(champion))
    except Exception as exc:  # a missing or corrupt file must not crash the gate
        return None, f"its model files cannot be loaded ({exc})"
    if list(spec.input_shape) != list(schema.input_shape) or spec.num_classes != schema.num_classes:
        return None, (
            f"it takes input {spec.input_shape} with {spec.num_classes} classes, this data "
            f"{schema.input_shape} with {schema.num_classes}; register under another model name"
        )
    return evaluate(net, read_split(dataset, "test", schema), schema.classes).headline(), None
