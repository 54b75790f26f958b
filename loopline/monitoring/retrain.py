"""Start the retraining pipeline for a trigger, on the engine the configuration names.

``auto`` picks Kubeflow when ``LOOPLINE_KFP_HOST`` is set, else a Prefect deployment run
when ``PREFECT_API_URL`` is set (a worker from ``loopline server`` runs it), else an
in-process run through loopline's Prefect engine. Only the in-process run reports its
outcome here; the others report a submitted run id.
"""

from __future__ import annotations

import json
import os

from loopline.core.layout import TRIGGER_TAG
from loopline.core.settings import Settings
from loopline.monitoring.policy import RETRAIN_ENGINES
from loopline.pipelines.builtin_pipelines import get
from loopline.pipelines.cluster import kubeflow
from loopline.pipelines.cluster.schedules import run_prefect_deployment
from loopline.pipelines.ir import load as load_ir
from loopline.pipelines.local.engines import run_pipeline
from loopline.storage.checks import Trigger
from loopline.storage.registry import reader


def retraining_arguments(trigger: Trigger, epochs: int | None = None) -> dict:
    arguments = {
        "model_name": trigger.model_name,
        "since": trigger.first_seq - 1,  # labels of the predictions numbered after this
        "trigger": json.dumps(
            {
                "trigger_id": trigger.id,
                "champion_version": trigger.model_version,
                "reasons": trigger.reasons,
                "report": trigger.report,
            }
        ),
    }
    if epochs is not None:
        arguments["epochs"] = epochs
    return arguments


def start_retraining(
    settings: Settings, trigger: Trigger, *, engine: str = "auto", epochs: int | None = None
) -> dict:
    """Run or submit the retraining; the result says which, and the outcome when known."""
    arguments = retraining_arguments(trigger, epochs)
    engine = _choose(engine, settings)
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
        "run_id": result.flow_run_id or result.run_name,
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "version": decision.get("version"),
        "error": result.error,
        "decision_file": str(result.artifact("register", "decision") or ""),
    }


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
