"""`make demo`: the whole loop on embedded data.

Train v1 on digits through the pipeline -> serve it with BentoML -> replay normal traffic
(no drift) -> replay shifted traffic (inverted digits) -> Evidently flags drift -> labels
for the shifted traffic arrive -> the retraining pipeline trains v2, which must beat v1 on
the recent labelled data -> the running server switches to v2 -> a closing summary.
The demo keeps its own LOOPLINE_HOME under ``<home>/demo``, wiped at the start.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loopline.cli.views import summary
from loopline.cli.views.monitor import render_monitor
from loopline.cli.views.run import RunView
from loopline.core import engine_env, processes
from loopline.core.settings import Settings, load_settings
from loopline.ml.dataset import read_schema, read_split
from loopline.monitoring.monitor import MonitorResult, run_monitor
from loopline.monitoring.policy import Policy
from loopline.pipelines.local import prefect_server
from loopline.pipelines.local.engines import run_pipeline
from loopline.serving.server import Server, free_port, start_server
from loopline.storage.registry import Registry

MODEL = "digits-classifier"
DEMO_ARGUMENTS = {"dataset": "digits", "model_name": MODEL, "epochs": 20, "workers": 2}
REVIEW_EVERY = 10  # the reviewer labels every tenth of the labeller's items
POLICY = Policy(
    drift_share=0.5,
    min_rows=150,
    min_labels=300,
    cooldown_s=0,
    retrain_engine="inprocess",
    retrain_epochs=30,
)


@dataclasses.dataclass
class Traffic:
    request_ids: list[str]
    labels: list[str]  # the truth, known to the demo, later sent as feedback
    answers: list[dict]

    def accuracy(self) -> float:
        predicted = [a["predictions"][0]["label"] for a in self.answers]
        return float(np.mean([p == t for p, t in zip(predicted, self.labels, strict=True)]))

    def versions(self) -> set[str]:
        return {a["model_version"] for a in self.answers}


def run_demo(settings: Settings, console: Console) -> int:
    """The whole loop; every process it starts (Prefect, Ray, BentoML) is stopped at the end,
    on Ctrl-C and on SIGTERM too."""
    settings = _fresh_home(settings)
    engine_env.prepare_logs(settings)
    try:
        with processes.sigterm_as_interrupt():
            return _demo(settings, console)
    finally:
        prefect_server.stop(settings)


def _demo(settings: Settings, console: Console) -> int:
    started = time.monotonic()
    console.rule(
        "1/6 train v1: digits -> validate -> Ray training (2 workers) -> evaluate -> gate -> Bento"
    )
    with RunView(console) as view:
        result = run_pipeline("training", DEMO_ARGUMENTS, settings, listener=view)
    summary.render(summary.collect(result, settings), console)
    if not result.succeeded:
        console.print(f"[red]demo failed[/]: {result.error}")
        return 1
    dataset = result.artifact("ingest", "dataset")
    console.rule("2/6 serve the champion with BentoML")
    server = start_server(
        settings, port=free_port(), log_path=settings.logs / "serve.log", poll_s="1"
    )
    try:
        server.wait_ready()
        console.print(
            f"serving at {server.url} (Swagger UI {server.url}/, metrics {server.url}/metrics)"
        )
        return _loop(settings, console, server, dataset, started)
    finally:
        server.stop()


def _loop(
    settings: Settings, console: Console, server: Server, dataset: Path, started: float
) -> int:
    schema = read_schema(dataset)
    test, train = read_split(dataset, "test", schema), read_split(dataset, "train", schema)
    classes = schema.classes
    console.rule("3/6 normal traffic, then a monitoring pass")
    normal = _replay(server.url, test.x, test.y, classes, "normal", console)
    first = _monitor(settings, console)
    console.rule("4/6 shifted traffic (inverted digits), then a monitoring pass")
    shifted = _replay(server.url, 1.0 - train.x[:600], train.y[:600], classes, "shifted", console)
    second = _monitor(settings, console)
    console.rule("5/6 labels for the shifted traffic arrive; monitoring starts retraining")
    labels = [
        {"request_id": r, "label": lb}
        for r, lb in zip(shifted.request_ids, shifted.labels, strict=True)
    ]
    send_labels(server.url, settings, labels, console)
    third = _monitor(settings, console)
    v2 = _wait_for_switch(server.url, Registry(settings).champion(MODEL).version, console)
    console.rule("6/6 the same kind of shifted traffic, now answered by the new champion")
    after = _replay(server.url, 1.0 - test.x, test.y, classes, "shifted (held out)", console)
    _closing(settings, console, normal, shifted, after, [first, second, third], started)
    return (
        0 if v2 != "1" and third.retraining and third.retraining[-1]["state"] == "promoted" else 1
    )


def label_keys() -> dict[str, str]:
    """The demo's two labelling keys, as settings: a labeller's, and a reviewer's whose
    sample of labels vouches for the rest. Fresh each run, never printed."""
    return {
        "LOOPLINE_LABEL_KEYS": f"labeller={secrets.token_urlsafe(24)},"
        f"reviewer={secrets.token_urlsafe(24)}",
        "LOOPLINE_LABEL_REVIEWERS": "reviewer",
    }


def send_labels(url: str, settings: Settings, labels: list[dict], console: Console) -> None:
    """The labeller labels everything; the reviewer every tenth item, as a labelling
    team's audit would."""
    keys = dict(entry.split("=", 1) for entry in (settings.labels.keys or "").split(","))
    answers = {}
    for name, part in (("labeller", labels), ("reviewer", labels[::REVIEW_EVERY])):
        answer = httpx.post(
            f"{url}/feedback", json={"labels": part}, headers={"X-API-Key": keys[name]}, timeout=60
        )
        answer.raise_for_status()
        answers[name] = answer.json()
    console.print(
        f"feedback: {answers['labeller']['stored']} labels from 'labeller'; "
        f"{len(labels[::REVIEW_EVERY])} of them reviewed by 'reviewer' "
        f"({answers['reviewer']['conflicts']} disagreements)"
    )


def _fresh_home(settings: Settings) -> Settings:
    """``<home>/demo``, emptied; set in the environment too, for the pipeline's steps and
    the server, with the demo's labelling keys."""
    home = settings.home / "demo"
    os.environ.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        LOOPLINE_MODEL_NAME=MODEL,
        **label_keys(),
    )
    demo = load_settings()
    prefect_server.stop(demo)  # a server left by an interrupted demo must not see its files go
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    engine_env.apply(demo)  # Prefect's state in the demo's home too
    return demo


def _replay(
    url: str, x: np.ndarray, y: np.ndarray, classes: list[str], name: str, console: Console
) -> Traffic:
    """One request per row, 8 at a time, as production clients would send them."""
    labels = [classes[int(i)] for i in y]
    with httpx.Client(timeout=60) as http, Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{name}: {len(x)} requests", total=len(x))

        def send(row: np.ndarray) -> dict:
            answer = http.post(f"{url}/predict", json={"instances": [row.round(5).tolist()]})
            answer.raise_for_status()
            bar.advance(task)
            return answer.json()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, x))
    traffic = Traffic([a["request_id"] for a in answers], labels, answers)
    console.print(
        f"{name}: {len(x)} requests answered by v{', v'.join(sorted(traffic.versions()))}, "
        f"accuracy {traffic.accuracy():.3f}"
    )
    return traffic


def _monitor(settings: Settings, console: Console) -> MonitorResult:
    with console.status("monitoring: Evidently drift over the newest window..."):
        result = run_monitor(settings, POLICY)
    render_monitor(result, console)
    return result


def _wait_for_switch(url: str, version: str, console: Console, timeout: float = 60) -> str:
    """Until the server answers with the registry's champion ``version``."""
    probe = {"instances": [[0.0] * 64]}
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for the server to switch to v{version}..."):
        while time.monotonic() < deadline:
            serving = httpx.post(f"{url}/predict", json=probe, timeout=30).json()["model_version"]
            if serving == version:
                console.print(f"the server now answers with v{serving}")
                return serving
            time.sleep(0.5)
    console.print(f"[red]the server still answers with v{serving}[/]")
    return serving


def _closing(settings, console, normal, shifted, after, checks, started) -> None:
    table = Table(title="loopline demo: the closed loop", show_header=True)
    table.add_column("what")
    table.add_column("result")
    places: list[tuple[str, str]] = []  # printed whole below the table, so they can be copied
    table.add_row("v1 on normal traffic", f"accuracy {normal.accuracy():.3f}")
    table.add_row("v1 on shifted traffic", f"accuracy {shifted.accuracy():.3f}")
    table.add_row(
        f"v{', v'.join(sorted(after.versions()))} on held-out shifted traffic",
        f"accuracy {after.accuracy():.3f}",
    )
    for number, label, check in zip(
        (1, 2, 3), ("normal", "shifted", "labels"), checks, strict=True
    ):
        drifted = check.drift["drifted_share"] if check.drift else None
        table.add_row(
            f"check {number} ({label})",
            f"{check.status}"
            + (f", drifted share {drifted:.0%}" if drifted is not None else "")
            + (f", trigger {check.trigger}" if check.trigger else ""),
        )
        places += [
            (f"check {number} report ({kind})", path) for kind, path in check.reports.items()
        ]
    for run in checks[-1].retraining:
        table.add_row(
            "retraining",
            f"{run['state']}" + (f" -> v{run['version']}" if run.get("version") else ""),
        )
        if run.get("decision_file"):
            places.append(("gate decision", run["decision_file"]))
    champion = Registry(settings).champion(MODEL)
    table.add_row("champion now", f"v{champion.version} ({champion.tags.get('gate.reasons', '')})")
    table.add_row("took", f"{time.monotonic() - started:.0f} s")
    console.print(table)
    places += [
        ("prediction log", settings.database_shown),
        ("Evidently", f"evidently ui --workspace {settings.home / 'monitoring' / 'workspace'}"),
        ("Bentos", f"BENTOML_HOME={settings.bentoml_home} bentoml list"),
        ("MLflow", f"mlflow ui --backend-store-uri {settings.tracking_uri}"),
    ]
    console.print("[bold]where everything went[/]")
    for what, where in places:
        console.print(f"  {what}: {where}", soft_wrap=True)
