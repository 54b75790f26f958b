"""Duplicate or concurrent drift events for one window make one trigger, claimed once."""

from concurrent.futures import ThreadPoolExecutor

from monitoring.state import MonitorState


def test_one_trigger_per_window_and_one_claim_under_races(tmp_path):
    state = MonitorState(tmp_path)

    def add(_):
        return state.add_trigger("m", "1", 1000.0, ["data drift"], "report.html")

    with ThreadPoolExecutor(8) as pool:
        added = [t for t in pool.map(add, range(16)) if t is not None]
    assert len(added) == 1 and added[0].state == "pending"
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: state.claim(added[0].id), range(16)))
    assert claims.count(True) == 1
    assert state.trigger(added[0].id).state == "running"
    # Another window, or another version, is another trigger.
    assert state.add_trigger("m", "1", 2000.0, ["x"], "") is not None
    assert state.add_trigger("m", "2", 1000.0, ["x"], "") is not None
    state.finish(added[0].id, "promoted", {"version": "2"})
    assert state.triggers("m", "promoted")[0].result == {"version": "2"}
    assert state.last_started("m") is not None
