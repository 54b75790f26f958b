"""A data scientist's path through the catalog, as whole `loopline` commands: new, check
(fails on a missing type, passes once fixed), publish 1.0.0, use it in a pipeline and run
it, publish 1.1.0 with an optional input, a breaking change refused as 1.2.0 and accepted
as 2.0.0, and the pipeline's lock file keeping 1.x."""

import json
import os
import subprocess

import pytest

from tests.conftest import VENV_BIN

pytestmark = pytest.mark.slow

PIPELINE = """
from kfp import dsl

from loopline import catalog

normalize = catalog.load("normalize@^1")


@dsl.pipeline
def scaled(scale: float = 4.0) -> list:
    return normalize(values=[1.0, 3.0, 2.0], scale=scale).outputs["Output"]
"""


def test_new_check_publish_use_evolve_and_lock(tmp_path, prefect_api):
    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path / "home")}

    def loopline(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(VENV_BIN / "loopline"), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == expect, f"{args}: {done.returncode}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr
        return done

    loopline("component", "new", "normalize")  # 1
    own_test = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "normalize"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert own_test.returncode == 0, own_test.stdout  # the generated test runs as generated
    source = tmp_path / "normalize" / "component.py"
    good = source.read_text()

    source.write_text(good.replace("scale: float = 1.0", "scale=1.0"))  # 2
    failed = loopline("component", "check", "normalize", "--json", expect=1)
    report = {c["name"]: c for c in json.loads(failed.stdout)["checks"]}
    assert report["typed"]["passed"] is False and "input scale" in report["typed"]["message"]
    source.write_text(good)
    assert json.loads(loopline("component", "check", "normalize", "--json").stdout)["passed"]

    loopline("component", "publish", "normalize", "--version", "1.0.0", "--changelog", "first")
    (tmp_path / "pipe.py").write_text(PIPELINE)  # 3
    loopline("compile", "pipe.py", "-o", "pipe.yaml")
    lock = tmp_path / "pipe.catalog.lock"
    assert json.loads(lock.read_text())["components"]["normalize"]["version"] == "1.0.0"
    ran = json.loads(loopline("run", "pipe.py", "--json").stdout)
    assert ran["outputs"] == {"Output": [0.0, 4.0, 2.0]}

    offset = good.replace(  # 4: an optional input
        "scale: float = 1.0)", "scale: float = 1.0, offset: float = 0.0)"
    ).replace(
        "        scale: The value",
        "        offset: Added to every result.\n        scale: The value",
    )
    offset = offset.replace("* scale for v in values]", "* scale + offset for v in values]")
    source.write_text(offset)
    loopline("component", "publish", "normalize", "--version", "1.1.0", "--changelog", "offset")

    no_scale = (
        offset.replace(", scale: float = 1.0", "")
        .replace(  # 5: breaking
            "        scale: The value the largest number becomes.\n", ""
        )
        .replace("* scale + offset", "+ offset")
    )
    source.write_text(no_scale)
    meta = tmp_path / "normalize" / "component.toml"
    meta.write_text(meta.read_text().replace("scale = 10.0\n", ""))
    refused = loopline("component", "publish", "normalize", "--version", "1.2.0", expect=2)
    assert "input scale was removed" in refused.stderr and "2.0.0" in refused.stderr
    loopline("component", "publish", "normalize", "--version", "2.0.0", "--changelog", "no scale")

    loopline("compile", "pipe.py", "-o", "pipe.yaml")  # 6
    assert json.loads(lock.read_text())["components"]["normalize"]["version"] == "1.0.0"
    lock.unlink()  # resolved afresh: the newest 1.x, never 2.0.0
    loopline("compile", "pipe.py", "-o", "pipe.yaml")
    assert json.loads(lock.read_text())["components"]["normalize"]["version"] == "1.1.0"

    listed = json.loads(loopline("component", "list", "--json").stdout)
    assert [(c["name"], c["version"]) for c in listed] == [("normalize", "2.0.0")]
    shown = json.loads(loopline("component", "show", "normalize@^1", "--json").stdout)
    assert shown["versions"] == ["1.0.0", "1.1.0", "2.0.0"] and shown["version"] == "1.1.0"
    assert shown["used_by"] == [{"pipeline": str(lock.resolve()), "version": "1.1.0"}]
    loopline("component", "deprecate", "normalize@1.1.0", "--message", "move to 2.x")
    warned = loopline("run", "pipe.py")
    assert "normalize 1.1.0" in warned.stderr and "deprecated: move to 2.x" in warned.stderr
    page = (tmp_path / "home" / "catalog" / "index.html").read_text()
    assert "deprecated: move to 2.x" in page and "input scale was removed" not in page
    assert str(lock.resolve()) in page
