"""Which predictions a monitoring pass judges: from the end of the last judged window, for
the serving champion, whatever version that window judged (no model files are read: the
windows here stay below min_rows, so the pass only reports them)."""

import numpy as np

from loopline.core.settings import load_settings
from loopline.monitoring import monitor as monitor_module
from loopline.monitoring.monitor import Monitor
from loopline.monitoring.policy import Policy
from loopline.storage.predictions import Answer
from loopline.storage.registry import VersionInfo


class Champion:
    """The registry reader's one answer: the version ``loopline rollback`` left champion."""

    version = "1"

    def champion(self, name):
        return VersionInfo(name, self.version, "", "", {})


def log_rows(monitor: Monitor, version: str, n: int) -> None:
    for i in range(n):
        answer = Answer(
            f"{version}-{monitor.log.last_seq()}-{i}",
            version,
            np.zeros((1, 2), np.float32),
            ["0"],
            np.ones((1, 1)),
        )
        monitor.log.append(answer)


def test_after_a_rollback_the_restored_version_is_judged_from_the_rollback_on(
    tmp_path, monkeypatch
):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    champion = Champion()
    monkeypatch.setattr(monitor_module, "reader", lambda settings: champion)
    monitor = Monitor(settings, Policy(min_rows=10_000))
    name = settings.model_name
    try:
        log_rows(monitor, "1", 30)  # v1 serves 1-30, judged
        monitor.state.record_check(name, "1", 1, 30, 30, "drift", {})
        champion.version = "2"  # promoted
        log_rows(monitor, "2", 20)  # v2 serves 31-50, judged
        monitor.state.record_check(name, "2", 31, 50, 20, "ok", {})
        champion.version = "1"  # `loopline rollback`: v1 again
        log_rows(monitor, "1", 5)  # 51-55
        result = monitor.run(retrain=False)
    finally:
        monitor.close()
    assert result.champion_version == "1"
    assert result.window == {"first_seq": 51, "last_seq": 55, "rows": 5}  # not 1-30 again
