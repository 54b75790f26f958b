"""The mlflow-database Job's SQL, run as the Job runs it (psql) against a real PostgreSQL:
it creates MLflow's role and database, runs again without harm, and MLflow builds its
whole schema there as that role."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.test_manifests import ROOT
from tests.postgres import Postgres, PostgresMissing, tool

SQL = ROOT / "infra" / "k8s" / "base" / "mlflow" / "create-database.sql"


def test_the_job_creates_mlflows_database_once_and_mlflow_builds_its_store_there():
    try:
        server = Postgres()  # its own: the session's server has a database named mlflow
    except PostgresMissing as exc:
        pytest.skip(str(exc))
    try:
        server.start()
        _create_and_build(server.url)
    finally:
        server.remove()


def _create_and_build(postgres: str) -> None:
    admin = f"{postgres}/postgres"
    for _ in range(2):  # a Job may run again: nothing fails, nothing is duplicated
        done = subprocess.run(
            [tool("psql"), "-v", "ON_ERROR_STOP=1", "-v", "password=s3cret", "-d", admin, "-f", str(SQL)],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    owner = subprocess.run(
        [tool("psql"), "-At", "-d", admin, "-c",
         "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    assert owner == "mlflow"
    store = postgres.replace("postgresql://loopline@", "postgresql+psycopg://mlflow@") + "/mlflow"
    upgraded = subprocess.run(
        [str(Path(sys.executable).with_name("mlflow")), "db", "upgrade", store],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert upgraded.returncode == 0, upgraded.stderr[-2000:]
    tables = subprocess.run(
        [tool("psql"), "-At", "-d", store.replace("+psycopg", ""), "-c",
         "SELECT count(*) FROM pg_tables WHERE tableowner = 'mlflow'"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    assert int(tables) > 20  # registered_models, model_versions, aliases, ...
