"""A monitoring pass adds its snapshot to the Evidently workspace without reading the
snapshots before it: a workspace with a long history costs a pass nothing more."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd

from loopline.core.settings import load_settings
from loopline.monitoring.drift import detect_drift
from loopline.monitoring.monitor import _add_to_workspace, monitor_folder


def small_drift():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.normal(0, 1, (300, 3)), columns=["a", "b", "c"])
    current = reference + np.array([0.0, 0.0, 2.0])
    return detect_drift(reference, current, ["a", "b", "c"], drift_share=0.5, max_rows=1000)


def test_history_is_not_read_and_evidently_reads_what_is_written(tmp_path):
    from evidently.ui.storage.local.base import LocalState
    from evidently.ui.workspace import Workspace

    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    drift = small_drift()
    assert drift.drifted_columns == ["c"]
    _add_to_workspace(settings, "m", drift)  # creates the project
    folder = monitor_folder(settings) / "workspace"
    state = LocalState(str(folder))
    [project] = state.list_projects()
    # A long history, every file of it unreadable: a pass that opened them would fail.
    snapshots = folder / str(project) / "snapshots"
    for _ in range(50):
        (snapshots / f"{uuid.uuid4()}.json").write_text("{ not json")
    before = set(snapshots.iterdir())
    _add_to_workspace(settings, "m", drift)
    [added] = set(snapshots.iterdir()) - before
    assert added.suffix == ".json" and not list(snapshots.glob(".*"))  # no partial left
    stored = state.read_snapshot(project, added.stem)  # Evidently's own reader
    assert len(stored.metric_results) == len(drift.snapshot.to_snapshot_model().metric_results)
    # And `evidently ui` finds both passes once the history is readable again.
    for path in snapshots.glob("*.json"):
        if path.read_text().startswith("{ not"):
            path.unlink()
    workspace = Workspace.create(str(folder))
    [found] = workspace.search_project("loopline m")
    assert len(workspace.list_runs(found.id)) == 2
