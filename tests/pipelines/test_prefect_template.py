"""A new home's Prefect server copies a migrated database instead of running Prefect's
migrations (``prefect_template``): the first new home's server keeps its freshly migrated
database, with Prefect's block types, as the template, the next one starts from a copy,
registers no blocks, and its runs work; a truncated or other-revision template is
ignored, the home migrates, and the template is replaced; a folder that cannot be
written means no template and no error. Real servers, no mocks."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import pytest

from loopline.pipelines.local import prefect_template
from loopline.serving.server import free_port
from tests.pipelines.test_prefect_server import (
    ONE_STEP,
    flow_run_names,
    fresh_env,
    left_behind,
    loopline,
    recorded,
    stop_all,
)

pytestmark = pytest.mark.slow


def run_in_new_home(home: Path, template: Path, tmp_path: Path) -> str:
    """A run in the new ``home`` whose server uses ``template``, recorded in that server
    as its only flow run; the server's log."""
    (tmp_path / "plus_one.py").write_text(ONE_STEP.read_text())
    env = fresh_env(
        home,
        LOOPLINE_PREFECT_PORT=str(free_port()),
        LOOPLINE_PREFECT_IDLE="10m",
        LOOPLINE_PREFECT_TEMPLATE=str(template),
    )
    run = loopline("run", str(tmp_path / "plus_one.py"), "--json", env=env)
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    recorded(home, time.monotonic() + 600)
    port = json.loads((home / "prefect" / "server.json").read_text())["port"]
    assert flow_run_names(port) == [json.loads(stdout)["run"]]
    return (home / "logs" / "prefect-server.log").read_text()


def test_a_broken_template_is_replaced_by_the_first_new_home_and_the_next_copies_it(tmp_path):
    """The first new home finds a template under the current key that SQLite cannot read
    whole: it migrates as without one (a missing template takes the same path), and its
    freshly migrated database replaces the broken one. The second new home starts from a
    copy of it. (One test, not two: each first home costs a full migration.)"""
    template = tmp_path / "template"
    template.mkdir()
    homes = [tmp_path / "first", tmp_path / "second"]
    name, head = prefect_template.key()
    slot = template / name
    _truncated(slot, head)
    assert prefect_template.usable(slot, head) is not None
    try:
        log = run_in_new_home(homes[0], template, tmp_path)
        assert f"the template {slot} was not used" in log, log
        assert f"kept as the template {slot}" in log, log
        assert [p.name for p in template.iterdir()] == [name]  # no temporary file left
        assert prefect_template.usable(slot, head) is None
        written = slot.stat()

        log = run_in_new_home(homes[1], template, tmp_path)
        assert f"Prefect database: copied from the template {slot}" in log, log
        assert "migrated" not in log
        copy = (homes[1] / "prefect" / "prefect.db").stat()
        assert copy.st_ino != written.st_ino  # a copy: the home's runs never touch it
        assert slot.stat().st_mtime_ns == written.st_mtime_ns
        # Its blocks came with the copy, the installed collection's too: the server did
        # not register them (Prefect's memo of a registration is not there).
        port = json.loads((homes[1] / "prefect" / "server.json").read_text())["port"]
        assert {"local-file-system", "kubernetes-credentials", "k8s-job"} <= block_types(port)
        assert not (homes[1] / "prefect" / "memo_store.toml").exists()
    finally:
        stop_all(homes, tmp_path)
    assert left_behind(tmp_path) == []


def block_types(port: int) -> set[str]:
    response = httpx.post(f"http://127.0.0.1:{port}/api/block_types/filter", json={}, timeout=30)
    response.raise_for_status()
    return {block["slug"] for block in response.json()}


def _at_revision(path: Path, revision: str, filler_rows: int = 0) -> Path:
    """A SQLite file whose Alembic revision is ``revision``, with some filler rows."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        conn.execute("CREATE TABLE filler (x TEXT)")
        conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * filler_rows)
    conn.close()
    return path


def _truncated(path: Path, head: str) -> None:
    _at_revision(path, head, filler_rows=400)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# The next three judge what the server above does on its way (``prepare`` restores only a
# usable template, and a template it cannot keep is a line in its log, not an error),
# without a server of their own: each would cost a full migration.


def test_a_template_at_another_revision_is_not_usable(tmp_path):
    _, head = prefect_template.key()
    old = _at_revision(tmp_path / "old.db", "0123456789ab")
    problem = prefect_template.usable(old, head)
    assert problem == f"at revision ['0123456789ab'], not Prefect's head {head}"
    home = tmp_path / "home"
    home.mkdir()
    assert prefect_template.restore(old, home / "prefect.db", head) == problem
    assert list(home.iterdir()) == []  # nothing copied, no temporary file left


def test_a_template_without_block_types_is_not_usable(tmp_path):
    """A server that starts from the template does not register blocks: it must hold them."""
    _, head = prefect_template.key()
    bare = _at_revision(tmp_path / "bare.db", head)
    with sqlite3.connect(bare) as conn:
        conn.execute("CREATE TABLE block_type (id TEXT)")
    conn.close()
    assert prefect_template.usable(bare, head) == "no block types registered"


def test_a_template_folder_that_cannot_be_written_is_no_template_and_no_error(tmp_path):
    """The folder cannot be created: its parent is a file (a read-only mode would not
    stop root, who may run the tests). Nothing is written, and the answer says why."""
    _, head = prefect_template.key()
    migrated = _at_revision(tmp_path / "migrated.db", head)
    (tmp_path / "read-only").write_text("a file, not a folder")
    slot = tmp_path / "read-only" / "template" / "prefect.db"
    said = prefect_template.keep(migrated, slot, head)
    assert said.startswith("no template kept ("), said
    assert (tmp_path / "read-only").read_text() == "a file, not a folder"


def test_the_template_lives_in_the_virtual_environment_and_off_turns_it_off(tmp_path):
    from loopline.core.settings import load_settings

    settings = load_settings({"LOOPLINE_HOME": str(tmp_path), "HOME": str(tmp_path / "user")})
    assert settings.prefect.template == Path(sys.prefix) / "var" / "loopline" / "prefect"
    assert load_settings({"LOOPLINE_PREFECT_TEMPLATE": "off"}).prefect.template is None
