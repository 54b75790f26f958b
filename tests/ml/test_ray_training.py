"""Ray Train: a training run killed mid-way resumes from its last checkpoint, and a worker
killed mid-run is replaced within the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

SCRIPT = """
import json, os, sys
from pathlib import Path
from loopline.ml.ray_training import train_with_ray
from loopline.ml.train_config import TrainConfig
folder, state = train_with_ray(
    TrainConfig(epochs=int(sys.argv[4]), patience=100, checkpoint_seconds=0),
    Path(sys.argv[1]), workers=2,
    storage=Path(sys.argv[2]), run_name="resume-test", target=Path(sys.argv[3]),
    ray_address=os.environ["RAY_ADDRESS"], max_failures=2,
)
print("STATE", json.dumps({"epoch": state.epoch, "resumed": state.resumed_from_epoch,
                          "epochs": [h["epoch"] for h in state.history]}))
"""


def start(digits_dir, storage, target, epochs=6):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(digits_dir), str(storage), str(target), str(epochs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def recorded_checkpoint(run_dir: Path) -> bool:
    """Ray resumes only from checkpoints its controller wrote into the run's snapshot.

    A checkpoint folder appears before the controller registers it, so a kill between the
    two (likely on a loaded machine) would leave nothing to resume from.
    """
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return snapshot.get("latest_checkpoint_result") is not None


def wait_for_checkpoint(process, run_dir: Path) -> None:
    deadline = time.monotonic() + 300
    while not recorded_checkpoint(run_dir):
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "Ray recorded no checkpoint"
        time.sleep(0.2)


def state_of(out: str) -> dict:
    return json.loads(out.split("STATE ")[-1].splitlines()[0])


def test_killed_training_resumes_from_its_checkpoint(digits_dir, tmp_path, ray_address):
    storage = tmp_path / "ray"
    first = start(digits_dir, storage, tmp_path / "a")
    wait_for_checkpoint(first, storage / "resume-test")
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = start(digits_dir, storage, tmp_path / "b")
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out[-3000:]
    state = state_of(out)
    assert state["resumed"] is not None and 1 <= state["resumed"] < 6, out[-4000:]
    assert state["epoch"] == 6 and state["epochs"] == list(range(6))


def test_a_worker_killed_mid_run_is_replaced_within_the_run(digits_dir, tmp_path, ray_address):
    """The issue's case: "A worker health check failed" used to fail the whole run."""
    storage = tmp_path / "ray"
    run = start(digits_dir, storage, tmp_path / "a", epochs=6)
    wait_for_checkpoint(run, storage / "resume-test")
    workers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
    ]
    assert workers, "no Ray Train worker process found"
    workers[0].kill()
    out, _ = run.communicate(timeout=400)
    assert run.returncode == 0, out[-3000:]  # the same run finished
    state = state_of(out)
    assert state["resumed"] is not None, out[-4000:]  # the new worker group restored it
    assert state["epoch"] == 6 and state["epochs"] == list(range(6))


def test_a_clusters_workers_train_on_data_the_driver_no_longer_has(
    digits_dir, tmp_path, ray_address
):
    """On Kubeflow the driver is the train task's pod: the cluster's workers cannot read its
    disk. Here the dataset folder is deleted as soon as it has been handed to Ray, so the
    run can only finish if the workers got the data through the object store."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    script = SCRIPT.replace(
        "from loopline.ml.ray_training import train_with_ray",
        "import shutil\nimport loopline.ml.ray_training as rt\nfrom loopline.ml.ray_training import train_with_ray\n"
        "original = rt.ship\n"
        "def ship_then_delete(folder):\n"
        "    files = original(folder)\n"
        "    shutil.rmtree(folder)\n"
        "    return files\n"
        "rt.ship = ship_then_delete",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(data),
            str(tmp_path / "ray"),
            str(tmp_path / "out"),
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert not data.exists()
    assert state_of(done.stdout)["epoch"] == 2


def test_shipped_files_unpack_byte_for_byte_and_stay_in_their_folder(digits_dir, tmp_path):
    from loopline.ml.ray_training import ship, unpack

    files = ship(digits_dir)
    assert files and all("/" not in name for name in files)
    unpack({**files, "../escape.txt": b"x"}, tmp_path)
    for name, content in files.items():
        assert (tmp_path / name).read_bytes() == content
    assert not (tmp_path.parent / "escape.txt").exists()
    assert (tmp_path / "escape.txt").read_bytes() == b"x"
