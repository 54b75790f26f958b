"""Shared fixtures: one Ray runtime and one Prefect server per session, a private
LOOPLINE_HOME per test, and a check that the session leaves no process behind."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from loopline.core import engine_env, processes
from loopline.core.settings import Settings, load_settings
from loopline.ml.sources import ingest
from loopline.serving.server import free_port

VENV_BIN = Path(sys.executable).parent

# Every process this session starts inherits this mark; any still alive at the end leaked.
SESSION_MARK = "LOOPLINE_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex
# The engines' state (Prefect's database first of all) lives in a session folder, never in
# the user's ~/.prefect; this must be set before anything imports Prefect.
_SESSION_SETTINGS = load_settings({"LOOPLINE_HOME": tempfile.mkdtemp(prefix="loopline-tests-")})
engine_env.apply(_SESSION_SETTINGS)
engine_env.prepare_logs(_SESSION_SETTINGS)


# multiprocessing's helpers of this very process exit with it, by design.
OWN_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _leftovers() -> list[psutil.Process]:
    mark, me = os.environ[SESSION_MARK], os.getpid()
    found = []
    for process in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            if process.pid == me or process.environ().get(SESSION_MARK) != mark:
                continue
            command = " ".join(process.info["cmdline"] or [])
            if process.info["ppid"] == me and any(h in command for h in OWN_HELPERS):
                continue
            found.append(process)
        except psutil.Error:
            continue
    return found


# Tests that start servers, Ray or whole pipelines are slow (`make test-fast` skips them).
# (Modules sharing an expensive session server also name an xdist group, so that
# `make test`'s two workers do not both start it.)
SLOW_FIXTURES = ("served", "loop", "ray_address", "prefect_api", "engine")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # two workers, two cores: no oversubscription


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if set(getattr(item, "fixturenames", ())) & set(SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    uses_ray = (i for i in session.items if "ray_address" in getattr(i, "fixturenames", ()))
    _RAY_HEAD.users = {item.nodeid for item in uses_ray}


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    _RAY_HEAD.finished(nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a server, worker or Ray process it started is still alive."""
    deadline = time.monotonic() + 15  # processes told to stop get a moment to go
    while (survivors := _leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not survivors:  # 446 session folders had gathered in /tmp before this
        shutil.rmtree(_SESSION_SETTINGS.home, ignore_errors=True)
        return
    described = []
    for process in survivors:
        try:
            described.append(f"{process.pid}: {' '.join(process.cmdline())[:160]}")
            process.kill()
        except psutil.Error:
            continue
    session.config.get_terminal_writer().line(
        "these processes outlived the test session (now killed):\n  " + "\n  ".join(described),
        red=True,
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("LOOPLINE_HOME", str(folder))
    for name in ("LOOPLINE_TRACKING_URI", "LOOPLINE_GATE_METRIC", "LOOPLINE_GATE_MARGIN"):
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("digits") / "dataset"
    ingest("digits", folder, seed=0)
    return folder


@pytest.fixture
def dataset_copy(digits_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the digits dataset that a test may break."""
    return Path(shutil.copytree(digits_dir, tmp_path / "dataset"))


def _wait_for_ray(address: str, head: subprocess.Popen, timeout: float = 120) -> None:
    """Ready once a client can see the head's CPUs."""
    probe = "import ray; ray.init(address='%s'); assert ray.cluster_resources().get('CPU')"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        check = subprocess.run(
            [sys.executable, "-c", probe % address], capture_output=True, timeout=60
        )
        if check.returncode == 0:
            return
        time.sleep(1)
    raise TimeoutError(f"Ray head at {address} did not come up in {timeout:.0f} s")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real Prefect server per session (a home server, as `loopline` starts them);
    CLI subprocesses reach it through PREFECT_API_URL."""
    from loopline.pipelines.local import prefect_server

    settings = load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path_factory.mktemp("prefect")),
            # The session's lease keeps it up; a session killed before its teardown leaves
            # a server that stops itself a minute later.
            "LOOPLINE_PREFECT_IDLE": "60s",
            "LOOPLINE_PREFECT_PORT": str(free_port()),  # never a user's server on 4200
        }
    )
    with prefect_server.lease(settings):
        api = prefect_server.ensure(settings).api_url
        from prefect.settings import PREFECT_API_URL, temporary_settings

        os.environ["PREFECT_API_URL"] = api  # for CLI subprocesses
        with temporary_settings({PREFECT_API_URL: api}):  # for this process, as loaded
            yield api
            from prefect.logging.handlers import APILogHandler

            APILogHandler().flush()  # send the last log batch while the server still listens
        os.environ.pop("PREFECT_API_URL", None)
        prefect_server.stop(settings)


@pytest.fixture(scope="session")
def engine_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-home")


@pytest.fixture(scope="session")
def engine(prefect_api: str, engine_home: Path):
    """The Prefect engine with one worker pool for the session."""
    from loopline.pipelines.local.prefect_engine import PrefectEngine

    runner = PrefectEngine(load_settings({"LOOPLINE_HOME": str(engine_home)}))
    yield runner
    runner.close()


class _RayHead:
    """The session's Ray head, stopped as soon as the last test that uses it is done: an
    idle head still costs about 7 % of a core (its dashboard, agents and GCS poll), and the
    tests that use it form one xdist group, which finishes long before the session.

    ``users`` are all collected tests that use it; a worker that runs only some of them
    (tests outside the group) never sees them all finish and keeps the head to the end."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.head: subprocess.Popen | None = None
        self.saved: dict[str, str | None] = {}

    def start(self, token: Path) -> str:
        port, dashboard_port = free_port(), free_port()
        # Ray 2.60 protects clusters with a token: head and clients share a fresh one (a
        # new machine has no ~/.ray/auth_token, and `ray start` does not make one).
        keys = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
        self.saved = {k: os.environ.get(k) for k in keys}
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        # --block keeps the head tied to this process group, so stopping stops this head
        # only (`ray stop` would stop every Ray on the machine).
        self.head = subprocess.Popen(
            [
                str(VENV_BIN / "ray"),
                "start",
                "--head",
                "--block",
                f"--port={port}",
                "--num-cpus=2",
                "--disable-usage-stats",
                f"--dashboard-port={dashboard_port}",
                "--node-ip-address=127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        address = f"127.0.0.1:{port}"
        _wait_for_ray(address, self.head)
        os.environ["RAY_ADDRESS"] = address
        return address

    def finished(self, nodeid: str) -> None:
        if nodeid in self.users:
            self.users.discard(nodeid)
            if not self.users:
                self.stop()

    def stop(self) -> None:
        if self.head is None:
            return
        processes.stop_tree(self.head.pid, grace=3)  # `ray start --block` and every Ray process
        self.head.wait(timeout=30)
        self.head = None
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_RAY_HEAD = _RayHead()


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Ray head for the tests that use it; pipeline subprocesses join it via RAY_ADDRESS."""
    yield _RAY_HEAD.start(tmp_path_factory.mktemp("ray-auth") / "auth_token")
    _RAY_HEAD.stop()


def train_and_register(settings, dataset, folder, config, name=None) -> dict:
    """Train in-process, evaluate and register behind the gate (a real MLflow registry)."""
    from loopline.ml.steps import evaluate_step, register_step, train_step

    name = name or settings.model_name
    model = folder / "model"
    train_step(
        dataset,
        model,
        config,
        run_id="run-" + folder.name,
        workers=0,
        model_name=name,
        settings=settings,
    )
    evaluate_step(model, dataset, folder / "eval", run_id="r", settings=settings)
    return register_step(
        model,
        dataset,
        folder / "eval",
        folder / "decision",
        run_id="r",
        model_name=name,
        settings=settings,
    )


# -- the platform database, on SQLite and on a real PostgreSQL ---------------------------


@pytest.fixture(scope="session")
def postgres() -> str:
    """One real PostgreSQL server for the session, on loopback; its base URL."""
    from tests.postgres import PostgresMissing, running_postgres

    try:
        with running_postgres() as url:
            yield url
    except PostgresMissing as exc:
        pytest.skip(str(exc))


def _mlflow_server_env() -> dict[str, str]:
    """The environment the production manifest gives `mlflow server`."""
    import yaml

    manifest = Path(__file__).parents[1] / "infra" / "k8s" / "base" / "mlflow.yaml"
    [deployment] = [
        d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Deployment"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture(scope="session")
def mlflow_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow tracking server as the production overlay runs it: its store on
    PostgreSQL, artifacts served through it. Its URL; it stops with the session."""
    import urllib.request

    from tests.postgres import new_database

    folder = tmp_path_factory.mktemp("mlflow-server")
    store = new_database(postgres, "mlflow").replace("postgresql://", "postgresql+psycopg://")
    url = f"http://127.0.0.1:{free_port()}"
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", store,
             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1",
             "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **_mlflow_server_env()},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start: {folder}/server.log"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        processes.stop_tree(server.pid)
        server.wait(timeout=30)


@pytest.fixture
def postgres_url(postgres: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    from tests.postgres import new_database

    return new_database(postgres, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same contract tests, once on each database loopline supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'loopline.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database(database_url: str, tmp_path: Path):
    from loopline.storage.database import open_database

    opened = open_database(
        load_settings({"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": database_url}),
        migrate=True,
    )
    yield opened
    opened.close()


def logged(settings: Settings):
    """Everything the settings' prediction log holds, oldest first."""
    from loopline.storage.database import open_for_reading
    from loopline.storage.predictions import PredictionLog

    database = open_for_reading(settings)
    try:
        return PredictionLog(database).read_window()
    finally:
        database.close()


def daemon(command: list[str], log: Path) -> subprocess.Popen:
    """A server the test starts (Prometheus, Alertmanager): its output to ``log``, in its
    own session, gone with this process; stop it with ``processes.stop_tree``."""
    from loopline.core import processes

    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 - the child owns it
        start_new_session=True,
        preexec_fn=processes.die_with_parent,
    )
