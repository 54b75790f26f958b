"""What an in-process retraining reports of its run: the flow run's id once Prefect holds
it, never a run name where an id belongs."""

from loopline.core.settings import load_settings
from loopline.monitoring import retrain
from loopline.pipelines.local.results import RunResult
from loopline.storage.checks import Trigger

TRIGGER = Trigger(
    7, "pets-classifier", "2", 101, ["data drift: 80%"], "drift.html", "running", 0.0, 0.0, None
)


def test_a_retraining_recorded_later_reports_its_name_and_no_flow_run_id(tmp_path, monkeypatch):
    """A run that went before the home's server was up is recorded by the supervisor
    later: its flow run's id is not known yet, and its name is reported as a name."""
    ran = []

    def run_pipeline(source, arguments, settings, **options):
        ran.append(arguments)  # a deferred run's result, as the recorded engine returns it
        return RunResult(True, "retraining", "retraining-20261204-1", tmp_path / "run")

    monkeypatch.setattr(retrain, "champion_hyperparameters", lambda *args: {})
    monkeypatch.setattr(retrain, "run_pipeline", run_pipeline)
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    outcome = retrain.start_retraining(settings, TRIGGER, engine="inprocess")
    assert ran and outcome["run_id"] is None
    assert outcome["run_name"] == "retraining-20261204-1"
