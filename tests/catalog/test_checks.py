"""The contract checks, against components that break them on purpose."""

import textwrap

import pytest

from loopline.catalog import checks
from loopline.catalog.folder import MalformedComponent, read
from loopline.core.images import platform
from loopline.core.settings import load_settings

pytestmark = pytest.mark.slow  # the example check runs on the session's Prefect engine

GOOD = f'''
from kfp import dsl
from kfp.dsl import Dataset, Input, Output


@dsl.component(base_image="{platform()}")
def shout(text: str, out: Output[Dataset], times: int = 1) -> str:
    """Upper-cases text.

    Args:
        text: The words.
        out: Where the result is written too.
        times: How often to repeat them.
    """
    with open(out.path, "w") as fh:
        fh.write(text.upper() * times)
    return text.upper() * times
'''
EXAMPLE = '[example.inputs]\ntext = "hi"\ntimes = 2\n'


def folder(tmp_path, source=GOOD, meta=EXAMPLE):
    where = tmp_path / "shout"
    where.mkdir(exist_ok=True)
    (where / "component.py").write_text(textwrap.dedent(source))
    if meta is not None:
        (where / "component.toml").write_text(meta)
    return read(where)


def run(tmp_path, engine, env=None, **kwargs):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home"), **(env or {})})
    report = checks.check(folder(tmp_path, **kwargs), settings, engine=engine)
    return report, {r.name: r for r in report.results}


def test_a_good_component_passes_every_check_in_order(tmp_path, engine):
    report, results = run(tmp_path, engine)
    assert report.passed, checks.describe(report)
    assert [r.name for r in report.results] == list(checks.ORDER)
    assert "Output, out" in results["example"].message


@pytest.mark.parametrize(
    ("change", "check", "message"),
    [
        (("text: str,", "text,"), "typed", "input text of shout has no type"),
        (
            ('    """Upper-cases text.', '    _ = """Upper-cases text.'),
            "documented",
            "shout has no docstring",
        ),
        (
            ("        times: How often to repeat them.\n", ""),
            "documented",
            "input times is not described",
        ),
        (
            ("text: str,", "api_token: str, text: str,"),
            "no_secret_inputs",
            "api_token looks like a secret",
        ),
        (
            (f'base_image="{platform()}"', 'base_image="python:3.11"'),
            "base_image",
            "python:3.11 is not allowed",
        ),
        (
            (
                f'base_image="{platform()}"',
                f'base_image="{platform()}", packages_to_install=["dill>=0.3"]',
            ),
            "pinned",
            "unpinned dill>=0.3; pin each to one version, for example dill==X.Y.Z",
        ),
        (
            ("    return text.upper() * times", "    raise ValueError('no')"),
            "example",
            "the example failed",
        ),
    ],
)
def test_each_broken_contract_fails_its_named_check(tmp_path, engine, change, check, message):
    report, results = run(tmp_path, engine, source=GOOD.replace(*change))
    assert results[check].passed is False, checks.describe(report)
    assert not report.passed
    if message:
        assert message in results[check].message


def test_another_base_image_passes_once_the_platform_team_allows_it(tmp_path, engine):
    source = GOOD.replace(f'base_image="{platform()}"', 'base_image="python:3.11"')
    _, results = run(tmp_path, engine, {"LOOPLINE_ALLOWED_IMAGES": "python:3.11"}, source=source)
    assert results["base_image"].passed


@pytest.mark.parametrize(
    ("effect", "shown"),
    [
        (
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
            "except OSError:\n    pass\n",
            "network access",
        ),
        ("open({target!r}, 'w').write('x')\n", "writes a file"),
        ("import subprocess\nsubprocess.run(['touch', {target!r}])\n", "starts a process"),
    ],
)
def test_an_import_that_reaches_out_is_caught_and_stopped(tmp_path, engine, effect, shown):
    target = tmp_path / "written-at-import"
    source = effect.format(target=str(target)) + GOOD
    report, results = run(tmp_path, engine, source=source, meta=None)
    assert results["side_effects"].passed is False and shown in results["side_effects"].message
    assert not target.exists(), "the import was allowed to act"


def test_no_example_is_a_failed_check_that_says_what_to_add(tmp_path, engine):
    _, results = run(tmp_path, engine, meta='name = "shout"\n')
    assert results["example"].passed is False and "[example.inputs]" in results["example"].message


def test_an_example_naming_an_input_the_component_lacks_fails(tmp_path, engine):
    _, results = run(tmp_path, engine, meta=EXAMPLE + "colour = 3\n")
    assert "gives colour, which the component does not take" in results["example"].message


@pytest.mark.parametrize(
    ("source", "meta", "message"),
    [
        ("def broken(:\n", None, "line 1"),
        (GOOD + GOOD.replace("def shout", "def whisper"), None, "holds 2 @dsl.component"),
        ("x = 1\n", None, "holds 0 @dsl.component"),
        (GOOD, "name = [unclosed", "fix the TOML"),
        (GOOD, 'name = "Bad Name"', "lower-case letters"),
        (GOOD + "DATA = " + repr("x" * 300_000) + "\n", None, "a component's source is at most"),
    ],
)
def test_a_malformed_folder_is_refused_before_any_check(tmp_path, source, meta, message):
    with pytest.raises(MalformedComponent, match=message):
        folder(tmp_path, source=source, meta=meta)


def test_a_folder_without_component_py_says_how_to_make_one(tmp_path):
    with pytest.raises(MalformedComponent, match="loopline component new NAME"):
        read(tmp_path)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_token", True),
        ("db_password", True),
        ("aws_secret_access_key", True),
        ("key", True),
        ("apikey", True),
        ("credentials", True),
        ("sort_key", False),
        ("tokenizer", False),
        ("passage", False),
        ("keys_to_keep", False),
    ],
)
def test_secret_looking_names_and_their_false_friends(name, secret):
    assert bool(checks.SECRET.search(name)) is secret
