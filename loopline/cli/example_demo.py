"""`loopline demo --example NAME`: the closed loop for a model the user brought.

An example is a project folder (``examples/NAME``) with its own KFP pipeline, components
and MLflow Model, plus ``data.py`` (``MODEL_NAME``, ``normal`` and ``shifted`` traffic,
``WORSE`` parameters, ``DRIFTED`` columns, a ``BAD_REQUEST``) and ``monitoring.yaml``.
The loop: the user's pipeline trains and registers v1 -> ``bentoml serve`` -> a request
of the wrong type gets a 4xx naming the column -> normal traffic and a monitoring pass
-> shifted traffic with its labels -> drift on the shifted columns -> retraining through
the user's pipeline -> the gate promotes v2 and the server switches while a client keeps
sending (no request dropped) -> a deliberately worse model is refused.
The example keeps its own LOOPLINE_HOME under ``<home>/examples/NAME``, wiped at the start.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import threading
import time
from pathlib import Path
from types import ModuleType

import httpx
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loopline.cli.demo import label_keys, send_labels
from loopline.cli.views.monitor import render_monitor
from loopline.cli.views.run import RunView
from loopline.core import engine_env, processes
from loopline.core.errors import UsageError
from loopline.core.package import installed_root
from loopline.core.settings import Settings, load_settings
from loopline.monitoring.monitor import Monitor, MonitorResult
from loopline.monitoring.policy import load_policy
from loopline.pipelines.local import prefect_server
from loopline.pipelines.local.engines import run_pipeline
from loopline.serving.server import Server, free_port, start_server
from loopline.storage.registry import reader

TRAIN_ROWS = 3000
NORMAL_ROWS = (
    900  # Evidently judges numbers by Wasserstein past 1,000 reference rows: noisy on fewer
)
SHIFTED_ROWS = 900
BATCH = 10  # instances per request


@dataclasses.dataclass
class Outcome:
    """What each step of an example's loop gave; the tests assert on it."""

    v1: dict = dataclasses.field(default_factory=dict)
    bad_request: dict = dataclasses.field(default_factory=dict)
    checks: list[MonitorResult] = dataclasses.field(default_factory=list)
    retraining: list[dict] = dataclasses.field(default_factory=list)
    switched_to: str | None = None
    during_switch: dict = dataclasses.field(default_factory=dict)  # sent, failed
    worse: dict = dataclasses.field(default_factory=dict)
    champion: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            self.v1.get("promoted") is True
            and 400 <= self.bad_request.get("status", 0) < 500
            and bool(self.retraining)
            and self.retraining[-1]["state"] == "promoted"
            and self.switched_to == self.retraining[-1]["version"]
            and self.during_switch.get("failed") == 0
            and self.worse.get("promoted") is False
            and self.champion == self.switched_to
        )


def find_example(name: str) -> Path:
    """``examples/NAME`` in the current directory or beside the installed package."""
    for root in (Path.cwd(), installed_root()):
        folder = root / "examples" / name
        if (folder / "pipeline.py").is_file():
            return folder
    found = sorted(
        p.parent.name for p in (Path.cwd() / "examples").glob("*/pipeline.py") if p.is_file()
    )
    raise UsageError(
        f"no example {name!r} (examples/{name}/pipeline.py); the examples here: "
        f"{', '.join(found) or 'none (run it from the repository root)'}",
        "--example",
    )


def run_example(name: str, settings: Settings, console: Console) -> int:
    folder = find_example(name)
    settings = _fresh_home(settings, folder)
    engine_env.prepare_logs(settings)
    try:
        with processes.sigterm_as_interrupt():
            outcome = example_loop(folder, settings, console)
    finally:
        prefect_server.stop(settings)
    return 0 if outcome.passed else 1


def example_loop(folder: Path, settings: Settings, console: Console) -> Outcome:
    """The whole loop for the example in ``folder``, in ``settings``' home."""
    started = time.monotonic()
    data = _module(folder / "data.py")
    outcome = Outcome()
    work = settings.home / "example-data"
    work.mkdir(parents=True, exist_ok=True)
    first = work / "v1.parquet"
    data.normal(TRAIN_ROWS, 0).to_parquet(first, index=False)
    console.rule(f"1/6 train v1 with the project's own pipeline ({folder / 'pipeline.py'})")
    outcome.v1 = _train(folder, settings, console, {"dataset": str(first)})
    if not outcome.v1.get("promoted"):
        console.print(f"[red]v1 was not registered as champion[/]: {outcome.v1}")
        return outcome
    console.rule("2/6 serve the champion with BentoML")
    server = start_server(
        settings, port=free_port(), log_path=settings.logs / "serve.log", poll_s="0.5"
    )
    try:
        server.wait_ready()
        console.print(f"serving at {server.url} (Swagger UI {server.url}/)")
        _loop(folder, data, settings, console, server, outcome, work)
    finally:
        server.stop()
    outcome.seconds = round(time.monotonic() - started, 1)
    _closing(console, outcome, settings)
    return outcome


def _loop(folder, data, settings, console, server: Server, outcome: Outcome, work: Path):
    bad = data.BAD_REQUEST
    answer = httpx.post(f"{server.url}/predict", json={"instances": [bad["instance"]]})
    outcome.bad_request = {"status": answer.status_code, "error": answer.json().get("error")}
    console.print(f"a request of the wrong type: {answer.status_code} {answer.json()}")
    monitor = Monitor(settings, load_policy(settings))
    try:
        console.rule("3/6 normal traffic, then a monitoring pass")
        _send(server.url, data.normal(NORMAL_ROWS, 1), data.LABEL, console, "normal")
        outcome.checks.append(_check(monitor, console, retrain=False))
        console.rule("4/6 shifted traffic, and its labels; monitoring retrains with your pipeline")
        shifted = data.shifted(SHIFTED_ROWS, 2)
        ids = _send(server.url, shifted, data.LABEL, console, "shifted")
        labels = [
            {"request_id": r, "item": i, "label": str(v)}
            for (r, i), v in zip(ids, shifted[data.LABEL], strict=True)
        ]
        send_labels(server.url, settings, labels, console)
        console.rule("5/6 the gate judges the retrained model; the server switches")
        with _Client(server.url, data.normal(50, 3), data.LABEL) as client:
            check = _check(monitor, console, retrain=True)
            outcome.checks.append(check)
            outcome.retraining = check.retraining
            champion = reader(settings).champion(data.MODEL_NAME)
            outcome.switched_to = _wait_for(server.url, client, champion.version, console)
        outcome.during_switch = {"sent": client.sent, "failed": client.failed}
        console.print(f"during the switch: {client.sent} requests, {client.failed} failed")
    finally:
        monitor.close()
    console.rule("6/6 a deliberately worse model must be refused")
    retraining = next(iter(sorted((settings.home / "retraining").rglob("dataset.parquet"))), None)
    source = retraining or work / "v1.parquet"
    outcome.worse = _train(folder, settings, console, {"dataset": str(source), **data.WORSE})
    outcome.champion = reader(settings).champion(data.MODEL_NAME).version


def _train(folder: Path, settings: Settings, console: Console, arguments: dict) -> dict:
    with RunView(console) as view:
        result = run_pipeline(folder / "pipeline.py", arguments, settings, listener=view)
    if not result.succeeded:
        console.print(f"[red]the pipeline failed[/]: {result.error}")
        return {"promoted": None, "error": result.error}
    decision = next(
        (o for o in result.task_outputs.values() if {"promoted", "version"} <= set(o)), {}
    )
    console.print(
        f"registered v{decision.get('version')}: "
        + ("promoted to champion" if decision.get("promoted") else "refused by the gate")
    )
    return {"promoted": decision.get("promoted"), "version": decision.get("version")}


def _send(url: str, frame: pd.DataFrame, label: str, console: Console, name: str) -> list:
    """The rows, ``BATCH`` per request; (request id, item) per row, in order."""
    rows = frame.drop(columns=[label]).to_dict("records")
    found = []
    with httpx.Client(timeout=60) as http, Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{name}: {len(rows)} rows", total=len(rows))
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            answer = http.post(f"{url}/predict", json={"instances": chunk})
            answer.raise_for_status()
            request = answer.json()["request_id"]
            found += [(request, i) for i in range(len(chunk))]
            bar.advance(task, len(chunk))
    console.print(f"{name}: {len(rows)} rows answered")
    return found


class _Client(threading.Thread):
    """A client that keeps sending while the champion changes; it counts failures."""

    def __init__(self, url: str, frame: pd.DataFrame, label: str):
        super().__init__(daemon=True)
        self.url, self.rows = url, frame.drop(columns=[label]).to_dict("records")
        self.sent = self.failed = 0
        self.version: str | None = None
        self._done = threading.Event()

    def __enter__(self) -> _Client:
        self.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._done.is_set():
                row = self.rows[self.sent % len(self.rows)]
                try:
                    answer = http.post(f"{self.url}/predict", json={"instances": [row]})
                    ok = answer.status_code == 200
                    self.version = answer.json()["model_version"] if ok else self.version
                except httpx.HTTPError:
                    ok = False
                self.sent, self.failed = self.sent + 1, self.failed + (not ok)
                time.sleep(0.05)


def _check(monitor: Monitor, console: Console, *, retrain: bool) -> MonitorResult:
    with console.status("monitoring: drift by column type over the newest window..."):
        result = monitor.run(retrain=retrain)
    render_monitor(result, console)
    return result


def _wait_for(url: str, client: _Client, version: str, console: Console, timeout=60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and client.version != version:
        time.sleep(0.2)
    console.print(f"the server answers with v{client.version}")
    return client.version


def _fresh_home(settings: Settings, folder: Path) -> Settings:
    home = settings.home / "examples" / folder.name
    data = _module(folder / "data.py")
    os.environ.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        LOOPLINE_MODEL_NAME=data.MODEL_NAME,
        LOOPLINE_MONITOR_CONFIG=str(folder / "monitoring.yaml"),
        **label_keys(),
    )
    fresh = load_settings()
    prefect_server.stop(fresh)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    engine_env.apply(fresh)
    return fresh


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"loopline_example_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closing(console: Console, outcome: Outcome, settings: Settings) -> None:
    table = Table(title="your model through the closed loop")
    table.add_column("what")
    table.add_column("result")
    table.add_row("v1", "champion" if outcome.v1.get("promoted") else str(outcome.v1))
    table.add_row("a request of the wrong type", f"{outcome.bad_request}")
    for number, check in enumerate(outcome.checks, 1):
        drifted = (check.drift or {}).get("drifted_columns", [])
        table.add_row(
            f"check {number}",
            f"{check.status}" + (f", drifted: {', '.join(drifted)}" if drifted else ""),
        )
    for run in outcome.retraining:
        table.add_row("retraining", f"{run['state']} v{run.get('version')}")
    table.add_row("during the switch", f"{outcome.during_switch}")
    table.add_row("a worse model", "refused" if outcome.worse.get("promoted") is False else "?")
    champion = reader(settings).champion(settings.model_name)
    reasons = champion.tags.get("gate.reasons", "") if champion else ""
    table.add_row("champion now", f"v{outcome.champion}: {reasons}")
    table.add_row("took", f"{outcome.seconds:.0f} s")
    console.print(table)
    console.print(
        f"  home: {settings.home}\n  MLflow: mlflow ui --backend-store-uri {settings.tracking_uri}",
        soft_wrap=True,
    )
