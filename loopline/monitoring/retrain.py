"""Start the retraining pipeline for a trigger, on the engine the configuration names.

loopline's own models retrain with the built-in ``retraining`` pipeline, with the
hyper-parameters the champion was trained with (its ``lineage.json``: architecture,
pretrained weights, freezing, input size, ...), except those the policy sets
(``retrain_epochs``, ``retrain_parameters``) and those that say how the retraining runs
rather than what the model is (``augment``, ``workers``: the pipeline's own). A model of the
user's own (an MLflow Model) retrains with the pipeline ``models:`` names in the policy:
loopline writes the labelled recent rows and the champion's kept rows as one Parquet
file, and passes it to the pipeline's dataset parameter (and the trigger to its
``trigger`` parameter, which the pipeline hands to ``loopline-register-model``).

``auto`` picks Kubeflow when ``LOOPLINE_KFP_HOST`` is set, else a Prefect deployment run
when ``PREFECT_API_URL`` is set (a worker from ``loopline server`` runs it), else an
in-process run through loopline's Prefect engine. Only the in-process run reports its
outcome here; the others report a submitted run id.
"""

from __future__ import annotations

import json
import logging
import os

from loopline.core import lineage
from loopline.core.layout import DIGEST_TAG, TRIGGER_TAG
from loopline.core.settings import Settings
from loopline.ml.hyperparameters import PARAMETERS
from loopline.ml.mlflow_model import registered_card
from loopline.ml.retraining_data import DATASET, assemble_rows, share_rows
from loopline.monitoring.policy import RETRAIN_ENGINES, PolicyError, RetrainPipeline
from loopline.pipelines.builtin_pipelines import get
from loopline.pipelines.cluster import kubeflow
from loopline.pipelines.cluster.schedules import run_prefect_deployment
from loopline.pipelines.ir import PipelineIR
from loopline.pipelines.ir import load as load_ir
from loopline.pipelines.local.engines import run_pipeline
from loopline.storage.checks import Trigger
from loopline.storage.registry import RegistryError, model_folder, reader

log = logging.getLogger("loopline.monitoring")


# The retraining pipeline's own choices: how it trains, not what the model is.
RETRAINING_OWN = ("augment", "workers")


def champion_hyperparameters(settings: Settings, name: str, version: str) -> dict:
    """The hyper-parameters ``version`` of ``name`` was trained with, as its registered
    ``lineage.json`` records them (the architecture resolved: ``resnet18``, not ``auto``),
    less :data:`RETRAINING_OWN`; empty for a version that records none."""
    # No such version, or no lineage in it: the defaults, with a warning. A registry that
    # cannot be read fails the retraining instead of training another kind of model.
    try:
        folder = model_folder(settings, reader(settings).version(name, version))
        recorded = lineage.read(folder).get("parameters", {})
    except (RegistryError, OSError, ValueError, AttributeError) as exc:
        log.warning(
            "%s v%s: its training parameters cannot be read (%s); the retraining uses the "
            "pipeline's defaults and the policy's retrain_parameters",
            name,
            version,
            exc,
        )
        return {}
    names = {p.name for p in PARAMETERS} - set(RETRAINING_OWN)
    return {k: v for k, v in recorded.items() if k in names}


def retraining_arguments(
    trigger: Trigger,
    epochs: int | None = None,
    labels_through: int | None = None,
    *,
    hyperparameters: dict | None = None,
) -> dict:
    """The retraining pipeline's arguments: ``hyperparameters`` (the champion's, with the
    policy's over them), then ``epochs`` when given, and the trigger's own."""
    arguments = {
        **(hyperparameters or {}),
        "model_name": trigger.model_name,
        "since": trigger.first_seq - 1,  # labels of the predictions numbered after this
        "trigger": json.dumps(
            {
                "trigger_id": trigger.id,
                "champion_version": trigger.model_version,
                "reasons": trigger.reasons,
                "report": trigger.report,
                # the last label event the checks judged: no later label is trained on
                "labels_through": labels_through,
            }
        ),
    }
    if epochs is not None:
        arguments["epochs"] = epochs
    return arguments


def check_pipeline(model_name: str, spec: RetrainPipeline) -> PipelineIR:
    """The model's retraining pipeline, refused up front (exit 2) when it lacks the
    dataset parameter or a parameter the policy sets."""
    ir = load_ir(spec.source)
    names = set(ir.parameter_names())
    missing = [spec.dataset_parameter] if spec.dataset_parameter not in names else []
    missing += sorted(set(spec.parameters) - names)
    if missing:
        raise PolicyError(
            f"the retraining pipeline of {model_name!r} ({spec.source}) has no parameter "
            f"{', '.join(missing)}; give it a `{spec.dataset_parameter}: str` input for the "
            "retraining data (or set dataset_parameter in monitoring.yaml), and set only "
            f"parameters it has: {', '.join(sorted(names))}"
        )
    return ir


def start_retraining(
    settings: Settings,
    trigger: Trigger,
    *,
    engine: str = "auto",
    epochs: int | None = None,
    pipeline: RetrainPipeline | None = None,
    labels_through: int | None = None,
    parameters: dict | None = None,
) -> dict:
    """Run or submit the retraining; the result says which, and the outcome when known.
    ``labels_through``: the last label event the label checks judged (None: every label).
    A built-in model retrains with its champion's hyper-parameters, ``parameters`` (the
    policy's ``retrain_parameters``) and ``epochs`` over them."""
    if pipeline is not None:
        return _retrain_with(settings, trigger, pipeline, _choose(engine, settings), labels_through)
    engine = _choose(engine, settings)  # a configuration error first
    recorded = champion_hyperparameters(settings, trigger.model_name, trigger.model_version)
    arguments = retraining_arguments(
        trigger,
        None if "epochs" in (parameters or {}) else epochs,
        labels_through,
        hyperparameters={**recorded, **(parameters or {})},
    )
    if engine == "kubeflow":
        host = settings.monitor.kfp_host
        run_id = kubeflow.submit(
            load_ir(get("retraining")), host, arguments=arguments, settings=settings
        )
        return {"engine": engine, "state": "submitted", "run_id": run_id, "host": host}
    if engine == "deployment":
        run_id = run_prefect_deployment(load_ir(get("retraining")), settings, arguments)
        return {"engine": engine, "state": "submitted", "run_id": run_id}
    result = run_pipeline(get("retraining"), arguments, settings, engine="prefect")
    decision = result.task_outputs.get("register", {})
    if not result.succeeded:
        state = "failed"
    else:
        state = "promoted" if decision.get("promoted") else "refused"
    return {
        "engine": engine,
        "state": state,
        **_recorded_as(result),
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "version": decision.get("version"),
        "error": result.error,
        "decision_file": str(result.artifact("register", "decision") or ""),
    }


def _retrain_with(
    settings, trigger: Trigger, spec: RetrainPipeline, engine: str, labels_through: int | None
) -> dict:
    ir = check_pipeline(trigger.model_name, spec)
    champion = reader(settings).version(trigger.model_name, trigger.model_version)
    folder = model_folder(settings, champion)
    card = registered_card(folder, champion.tags[DIGEST_TAG])
    data = settings.home / "retraining" / f"trigger-{trigger.id}" / DATASET
    rows = assemble_rows(
        settings,
        since=trigger.first_seq - 1,
        through=labels_through,
        folder=folder,
        card=card,
        out=data,
    )
    names = set(ir.parameter_names())
    base = retraining_arguments(trigger, labels_through=labels_through)
    arguments = {
        **{k: v for k, v in base.items() if k in names and k != "since"},
        **spec.parameters,
        spec.dataset_parameter: str(data),
    }
    if engine == "kubeflow":  # the pods read the file from the artifact store, by URI
        arguments[spec.dataset_parameter] = share_rows(settings, data, trigger.id)
        host = settings.monitor.kfp_host
        run_id = kubeflow.submit(ir, host, arguments=arguments, settings=settings)
        return {"engine": engine, "state": "submitted", "run_id": run_id, "host": host}
    if engine == "deployment":
        run_id = run_prefect_deployment(ir, settings, arguments)
        return {"engine": engine, "state": "submitted", "run_id": run_id}
    result = run_pipeline(ir, arguments, settings, engine="prefect")
    version = reader(settings).find_by_tag(trigger.model_name, TRIGGER_TAG, str(trigger.id))
    if not result.succeeded:
        state = "failed"
    elif version is None:
        state, result.error = "failed", "the pipeline registered no model for the trigger"
    else:
        state = "promoted" if version.tags.get("gate.promoted") == "true" else "refused"
    return {
        "engine": engine,
        "state": state,
        "pipeline": spec.source,
        "dataset": {"path": str(data), **rows},
        **_recorded_as(result),
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "version": version.version if version else None,
        "error": result.error,
    }


def _recorded_as(result) -> dict:
    """Where an in-process run is found in Prefect: ``run_id``, its flow run's id, is None
    while the run waits for the home's server to record it (a run that went before the
    server was up), under its ``run_name``; a name in ``run_id`` would look like an id."""
    return {"run_id": result.flow_run_id, "run_name": result.run_name}


def follow_retraining(settings: Settings, trigger: Trigger) -> dict | None:
    """How a submitted run ended (promoted, refused or failed), or None while it runs."""
    ref = dict(trigger.run_ref or {})
    if ref.get("engine") == "kubeflow":
        state = kubeflow.run_state(ref["host"], ref["run_id"])
        ended, failed = state in kubeflow.FINAL_STATES, state != "SUCCEEDED"
    else:
        # Prefect's client takes seconds to import; only following a deployment run needs
        # it, not the one-shot `loopline monitor` (benchmarks/drift.py) or Kubeflow.
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run_state = client.read_flow_run(ref["run_id"]).state
        state = run_state.name if run_state else "UNKNOWN"
        ended = bool(run_state and run_state.is_final())
        failed = not (run_state and run_state.is_completed())
    if not ended:
        return None
    if failed:
        return {**ref, "state": "failed", "error": f"the run ended {state}"}
    version = reader(settings).find_by_tag(trigger.model_name, TRIGGER_TAG, str(trigger.id))
    if version is None:
        return {**ref, "state": "failed", "error": "the run ended without registering a model"}
    promoted = version.tags.get("gate.promoted") == "true"
    return {**ref, "state": "promoted" if promoted else "refused", "version": version.version}


def _choose(engine: str, settings: Settings) -> str:
    if engine not in RETRAIN_ENGINES:
        raise ValueError(f"retraining engine {engine!r}; use one of {', '.join(RETRAIN_ENGINES)}")
    if engine != "auto":
        return engine
    if settings.monitor.kfp_host:
        return "kubeflow"
    if os.environ.get("PREFECT_API_URL"):
        return "deployment"
    return "inprocess"
