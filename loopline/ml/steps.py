"""The work behind each built-in KFP component, callable (and tested) without KFP.

Each step reads input artifact folders, writes its output folder with ``lineage.json``,
and returns a small JSON-able summary that the component also puts in KFP metadata.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import inspect
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from loopline.core import lineage
from loopline.core.errors import LooplineError
from loopline.core.layout import (
    DECISION,
    DIGEST_TAG,
    ERROR,
    EVALUATION,
    GUARDRAIL,
    INPUT_SCHEMA,
    MODEL_PATH,
    REFERENCE,
    TRAINING,
    TRIGGER,
    TRIGGER_TAG,
)
from loopline.core.settings import GATE_METRICS as HEADLINE
from loopline.core.settings import Settings
from loopline.ml.gate import GateDecision, Rows, decide, decision_tags
from loopline.storage.registry import METRIC_TAG, Registry, reader

if TYPE_CHECKING:
    from loopline.ml.training_loop import TrainConfig, TrainState
    from loopline.ml.validation import ValidationConfig

# The modules that bring in the data stack (torch, pandas, scikit-learn, MLflow, Ray) are
# imported inside the steps that use them: a re-run of the register step that only
# confirms an existing registration then starts in a blink (the cached training re-run of
# benchmarks/cli_latency). The gate and the registry reader need neither.

REFERENCE_ROWS = 5000
GUARDRAIL_ROWS = 5000


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
    from loopline.ml.sources import ingest

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
    from loopline.ml.validation import DataValidationError, validate, write_reports

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
    """Train on ``workers`` Ray workers (0: in this process, without Ray; -1: choose, see
    :func:`auto_workers`) into ``out``."""
    from loopline.ml.dataset import read_schema
    from loopline.ml.training_loop import BEST
    from loopline.ml.weights import ARCHITECTURE, WEIGHTS

    use_gpu = settings.train.gpu if use_gpu is None else use_gpu
    schema = read_schema(dataset)
    spec = config.spec_for(schema)
    data_hash = lineage.content_hash(dataset)
    if workers < 0:
        workers = auto_workers(settings, use_gpu)
    config = dataclasses.replace(
        config,
        memory_mb=settings.train.memory_mb,
        checkpoint_seconds=settings.train.checkpoint_seconds,
    )
    params = {**asdict(config), "arch": spec.arch, "workers": workers}
    inputs = {"dataset": data_hash}
    if config.pretrained:  # resolved here: workers get a local file, lineage its digest
        from loopline.ml.transfer import resolve  # fit checks them against the backbone

        weights = resolve(config.pretrained, settings)
        params |= {"pretrained_digest": weights.digest}
        inputs["pretrained"] = f"{weights.source} sha256:{weights.digest}"
        config = dataclasses.replace(config, pretrained=str(weights.path))
    # Same data and parameters -> same checkpoint location, so a killed run resumes (also
    # when the machine's checkpoint interval changed in between).
    identity = {k: v for k, v in params.items() if k != "checkpoint_seconds"}
    key = hashlib.sha256(json.dumps([data_hash, identity], sort_keys=True).encode()).hexdigest()
    registry = Registry(settings)
    mlflow_run = registry.start_run(
        model_name, params=params, tags={"loopline.run_id": run_id, "loopline.dataset": data_hash}
    )
    tracking = {"mlflow_run_id": mlflow_run, "tracking_uri": settings.tracking_uri}
    with tempfile.TemporaryDirectory() as tmp:
        if workers == 0:
            folder = settings.home / "ray" / f"local-{key[:16]}"
            state, checkpoint = _train_in_process(
                config, dataset, folder, use_gpu, tracking, target=Path(tmp)
            )
        else:
            from loopline.ml.ray_training import keep_token_in, train_with_ray

            if settings.ray.address is None:
                keep_token_in(settings.home)
            checkpoint, state = train_with_ray(
                config,
                dataset,
                workers=workers,
                storage=settings.ray_storage,
                run_name=f"train-{key[:16]}",
                target=Path(tmp),
                use_gpu=use_gpu,
                ray_address=settings.ray.address,
                max_failures=settings.train.max_failures,
                **tracking,
            )
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkpoint / BEST, out / WEIGHTS)  # early stopping: best weights win
    (out / ARCHITECTURE).write_text(spec.to_json())
    _write_serving_files(dataset, out, seed=config.seed, spec=spec)
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
        out, run_id=run_id, step="train", inputs=inputs, parameters=params
    )
    summary["model_uri"] = registry.log_files(mlflow_run, out, MODEL_PATH)
    return {k: v for k, v in summary.items() if k != "history"}


def auto_workers(settings: Settings, use_gpu: bool | None) -> int:
    """How many Ray workers a training gets when the user leaves it to loopline.

    One process is enough on one machine with at most one GPU: data-parallel workers
    there split the same cores, and Ray's start-up (5–8 s) and per-epoch reports cost more
    than they give (benchmarks/train_overhead). So it trains in-process, as fast as a plain
    PyTorch loop. A Ray cluster (``LOOPLINE_RAY_ADDRESS``) gets 2 workers, and a machine
    with several GPUs one worker per GPU.
    """
    if settings.ray.address:
        return 2
    if use_gpu is False:
        return 0
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return gpus if gpus > 1 else 0


def _write_serving_files(dataset: Path, out: Path, *, seed: int, spec=None) -> None:
    """What travels with the model: its input schema (serving validates requests against
    it), a sample of its training data (the drift reference for monitoring) and its
    guardrail set (trusted held-out rows the gate checks later challengers on)."""
    import pandas as pd

    from loopline.ml.dataset import read_schema
    from loopline.ml.network_flavor import write_mlmodel
    from loopline.ml.streaming import sample_rows

    schema = read_schema(dataset)
    if spec is not None and spec.normalization:
        schema.preprocessing = {
            "value_range": spec.value_range,
            "input_size": spec.input_size,
            "channels": 3,
            "normalization": spec.normalization,
        }
    (out / INPUT_SCHEMA).write_text(schema.to_json())
    write_mlmodel(out, schema)  # the one model contract: an MLflow Model with a signature
    sample_rows(dataset, "train", REFERENCE_ROWS, seed).to_parquet(out / REFERENCE, index=False)
    # Trusted rows only: reviewed data's test rows, and the guardrail a retraining inherits
    # from its champion. A retraining's own test rows are feedback, which anyone holding
    # a labelling key wrote: they never join it.
    held_out = (
        [] if (dataset / TRIGGER).exists() else [sample_rows(dataset, "test", GUARDRAIL_ROWS, seed)]
    )
    if (dataset / GUARDRAIL).exists():
        held_out.append(pd.read_parquet(dataset / GUARDRAIL))
    if held_out:
        guardrail = pd.concat(held_out, ignore_index=True)
        guardrail.sample(n=min(len(guardrail), GUARDRAIL_ROWS), random_state=seed).to_parquet(
            out / GUARDRAIL, index=False
        )


def _train_in_process(
    config: TrainConfig,
    dataset: Path,
    folder: Path,
    use_gpu: bool | None,
    tracking: dict,
    *,
    target: Path,
) -> tuple[TrainState, Path]:
    """Train in ``folder``, which holds the checkpoints of every training of the same
    data and parameters; the state, and ``target`` with a copy of the best weights.

    One training at a time in ``folder`` (a lock): two at once would each prune the
    other's checkpoints, and resume from a checkpoint the other is writing. The second
    waits, then resumes from the first's final checkpoint: the model it would have trained
    (same data, parameters and seed; the loop re-seeds per epoch), without training it
    again. Trained beside it in a folder of its own instead, it would redo all the work."""
    import torch

    from loopline.ml.training_loop import BEST, LocalSession, fit

    gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes, or the process dies
        session = LocalSession(folder, device="cuda" if gpu else "cpu")
        state = fit(config, dataset, session, **tracking)
        # Copied under the lock: the next training of the folder may prune this one.
        shutil.copy(session.latest_checkpoint() / BEST, target / BEST)
    return state, target


def _baselines(dataset: Path, schema, test, budget: int, metric: str, result) -> dict:
    """The baselines of :mod:`loopline.ml.baselines` on ``test``, fitted on the train
    split when it fits the memory budget, and whether the model beats them on ``metric``."""
    from loopline.ml import streaming
    from loopline.ml.baselines import baselines, verdict
    from loopline.ml.dataset import read_split

    if streaming.in_memory_bytes(dataset, "train", schema) > budget:
        return {"skipped": ["every baseline: the train split is streamed, not in memory"]}
    found, skipped = baselines(schema, read_split(dataset, "train", schema), test)
    return {
        "baselines": [b.to_dict() for b in found],
        "skipped": skipped,
        "verdict": verdict(result.headline(), found, metric),
    }


@reports_failure
def evaluate_step(
    model: Path, dataset: Path, out: Path, *, run_id: str, settings: Settings
) -> dict:
    from loopline.ml import streaming
    from loopline.ml.dataset import read_schema, read_split
    from loopline.ml.evaluation import (
        evaluate,
        evaluate_chunks,
        html_report,
        plot_confusion_matrix,
        plot_training_curves,
    )
    from loopline.ml.weights import load_model

    net, spec = load_model(model)
    schema = read_schema(dataset)
    budget = settings.train.memory_mb * 2**20
    if streaming.in_memory_bytes(dataset, "test", schema) > budget:
        result = evaluate_chunks(net, streaming.chunks(dataset, "test", schema), schema.classes)
        result.baselines = {"skipped": ["every baseline: the data is streamed, not in memory"]}
    else:
        test = read_split(dataset, "test", schema)
        result = evaluate(net, test, schema.classes)
        result.baselines = _baselines(dataset, schema, test, budget, settings.gate.metric, result)
    training = json.loads((model / TRAINING).read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / EVALUATION).write_text(result.to_json())
    plots = [plot_confusion_matrix(result, out / "confusion_matrix.png")]
    if training["history"]:
        plots.insert(0, plot_training_curves(training["history"], out / "training_curves.png"))
    (out / "report.html").write_text(html_report(result, schema, plots, spec.arch))
    registry = Registry(settings)
    scored = {f"test_{k}": v for k, v in result.headline().items()}
    for baseline in result.baselines.get("baselines", []):  # beside the model in MLflow too
        slug = baseline["name"].replace(" ", "_")
        scored |= {f"baseline_{slug}_{k}": v for k, v in baseline["scores"].items()}
    registry.log_metrics(training["mlflow_run_id"], scored)
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
        "baselines": result.baselines.get("verdict", {}),
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
    model_lineage = lineage.read(model)
    reads = reader(settings)
    champion = reads.champion(model_name)
    existing = reads.find_version(model_name, model_lineage["content_hash"])
    scores = json.loads((evaluation / EVALUATION).read_text())
    challenger = {metric: scores[metric] for metric in HEADLINE}
    training = json.loads((model / TRAINING).read_text())
    if existing is not None and champion is not None:
        # The same files again (a re-run): one version, and nothing new to decide.
        decision = GateDecision(
            False,
            settings.gate.metric,
            asdict(settings.gate),
            challenger[settings.gate.metric],
            champion.version,
            reasons=[
                f"same files as v{existing.version} (already registered); "
                f"champion stays v{champion.version}"
            ],
        )
        return _record_decision(
            out,
            run_id,
            model_name,
            existing.version,
            decision,
            challenger,
            training,
            model_lineage,
            evaluation,
            settings,
        )
    registry = Registry(settings)
    decision = _gate(settings, registry, champion, model, dataset, challenger)
    if existing is not None:  # registered before, and there is no champion: crown it
        decision.reasons = [f"same files as v{existing.version}, and there is no champion"]
    version = existing or registry.create_version(
        model_name,
        source=registry.artifact_uri(training["mlflow_run_id"], MODEL_PATH),
        run_id=training["mlflow_run_id"],
        tags={
            **_version_tags(run_id, model_lineage, training, dataset, challenger),
            DIGEST_TAG: _registered_digest(registry, training["mlflow_run_id"], model),
        },
    )
    registry.set_tags(model_name, version.version, decision_tags(decision))
    if decision.promote:
        registry.promote(model_name, version.version)
    return _record_decision(
        out,
        run_id,
        model_name,
        version.version,
        decision,
        challenger,
        training,
        model_lineage,
        evaluation,
        settings,
    )


def _gate(settings: Settings, registry, champion, model: Path, dataset: Path, challenger: dict):
    """The gate's decision: both models predict the test split and the champion's
    guardrail rows (see :mod:`loopline.ml.gate`)."""
    policy = settings.gate
    score = challenger[policy.metric]
    if champion is None:
        return decide(policy, challenger_score=score, evidence=None)
    try:
        evidence, guardrail, classes = _predictions(registry, champion, model, dataset)
    except _Incomparable as exc:
        return decide(
            policy,
            challenger_score=score,
            evidence=None,
            champion_version=champion.version,
            incompatible=str(exc),
        )
    return decide(
        policy,
        challenger_score=score,
        evidence=evidence,
        guardrail=guardrail,
        champion_version=champion.version,
        num_classes=classes,
    )


class _Incomparable(LooplineError):
    """The champion cannot be scored on this data."""


def _predictions(registry, champion, model: Path, dataset: Path):
    import pandas as pd

    from loopline.ml.dataset import LABEL, read_schema, read_split
    from loopline.ml.evaluation import predict
    from loopline.ml.network_flavor import load_registered
    from loopline.ml.weights import load_model

    schema = read_schema(dataset)
    try:
        champion_dir = registry.download(champion)
        champion_net, spec = load_registered(champion_dir, champion.tags.get(DIGEST_TAG))
    except Exception as exc:  # a missing or corrupt file must not crash the gate
        raise _Incomparable(f"its model files cannot be loaded ({exc})") from None
    if list(spec.input_shape) != list(schema.input_shape) or spec.num_classes != schema.num_classes:
        raise _Incomparable(
            f"it takes input {spec.input_shape} with {spec.num_classes} classes, this data "
            f"{schema.input_shape} with {schema.num_classes}; register under another model name"
        )
    challenger_net, _ = load_model(model)
    test = read_split(dataset, "test", schema)
    evidence = Rows(test.y, predict(challenger_net, test.x), predict(champion_net, test.x))
    guardrail = None
    # The champion's guardrail always; a retraining's dataset adds the reviewed rows (and
    # repeats the champion's, dropped as duplicates). A dataset never replaces it.
    parts = [
        pd.read_parquet(d / GUARDRAIL) for d in (champion_dir, dataset) if (d / GUARDRAIL).exists()
    ]
    if parts:
        frame = pd.concat(parts, ignore_index=True).drop_duplicates()
        x, y = frame[schema.features].to_numpy("float32"), frame[LABEL].to_numpy("int64")
        guardrail = Rows(y, predict(challenger_net, x), predict(champion_net, x))
    return evidence, guardrail, schema.num_classes


def _registered_digest(registry: Registry, mlflow_run: str, model: Path) -> str:
    """The manifest digest of the registry's copy of the model, which every later load
    checks; the copy must be the trained files, and they must meet the model contract."""
    from loopline.ml.model_contract import file_digests, manifest_digest, read_contract

    read_contract(model)
    digest = manifest_digest(file_digests(registry.local_artifacts(mlflow_run, MODEL_PATH)))
    if digest != manifest_digest(file_digests(model)):
        raise RuntimeError("the registry's copy of the model differs from the trained files")
    return digest


def _version_tags(run_id, model_lineage, training, dataset: Path, challenger: dict) -> dict:
    from loopline.ml.dataset import read_schema

    schema = read_schema(dataset)
    trigger = dataset / TRIGGER  # a retraining's: which trigger asked for this version
    started_by = json.loads(trigger.read_text()).get("trigger_id") if trigger.exists() else None
    return {
        **({TRIGGER_TAG: str(started_by)} if started_by is not None else {}),
        "loopline.run_id": run_id,
        "loopline.dataset": model_lineage["inputs"]["dataset"],
        "loopline.code_version": model_lineage["code_version"],
        "loopline.content_hash": model_lineage["content_hash"],
        "loopline.arch": training["arch"],
        "loopline.schema": json.dumps(
            {"input_shape": schema.input_shape, "classes": schema.classes}
        ),
        **{f"{METRIC_TAG}{k}": f"{v:.6f}" for k, v in challenger.items()},
    }


def _record_decision(
    out,
    run_id,
    model_name,
    version,
    decision,
    challenger,
    training,
    model_lineage,
    evaluation: Path,
    settings: Settings,
) -> dict:
    result = {
        "model_name": model_name,
        "version": version,
        "promoted": decision.promote,
        "decision": decision.to_dict(),
        "metrics": challenger,
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
        parameters={**decision.policy, "model_name": model_name},
    )
    return result
