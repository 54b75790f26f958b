"""Components that declare packages get them in an environment of their own (uv), made
once per requirement set; loopline's own environment never changes."""

from __future__ import annotations

import importlib.util

import pytest

from loopline.pipelines.ir import load
from loopline.pipelines.local import component_envs
from loopline.pipelines.local.kfp_local import installs_anything
from tests.pipelines import package_pipelines as p
from tests.pipelines.feature_pipelines import chain


def command_of(pipeline, executor: str) -> list[str]:
    return load(pipeline).spec["deploymentSpec"]["executors"][executor]["container"]["command"]


def test_requirements_are_read_from_the_command_without_kfp_itself():
    wanted = component_envs.requirements(command_of(p.with_packages, "exec-toolz-version"))
    assert wanted.packages == ("toolz==0.12.1",) and wanted.index_urls == ()
    assert not component_envs.requirements(command_of(chain, "exec-add"))


def test_index_urls_are_kept_and_change_the_environment():
    script = [
        "sh",
        "-c",
        "python3 -m pip install --quiet --index-url https://a/simple "
        "--extra-index-url https://b/simple --trusted-host a 'toolz==0.12.1' && "
        "python3 -m pip install 'kfp==2.17.3' '--no-deps' && \"$0\" \"$@\"",
    ]
    wanted = component_envs.requirements(script)
    assert wanted.packages == ("toolz==0.12.1",)
    assert wanted.index_urls == ("https://a/simple", "https://b/simple")
    plain = component_envs.Requirements(("toolz==0.12.1",))
    assert wanted.key != plain.key


def test_kfp_local_gets_a_virtual_environment_only_when_a_component_installs_something():
    assert installs_anything(load(p.with_packages))
    assert not installs_anything(load(chain))


@pytest.mark.slow
def test_a_components_packages_are_installed_once_and_never_into_loopline(engine):
    assert importlib.util.find_spec("toolz") is None
    first = engine.run(p.with_packages, {}, enable_cache=False)
    assert first.succeeded, first.error
    assert first.outputs == {"Output": "0.12.1"}
    assert importlib.util.find_spec("toolz") is None  # loopline's environment is unchanged
    envs = engine.settings.home / component_envs.ENVS
    (made,) = [e for e in envs.iterdir() if (e / component_envs.READY).exists()]
    ready = (made / component_envs.READY).stat().st_mtime_ns
    again = engine.run(p.with_packages, {}, enable_cache=False)
    assert again.succeeded and again.outputs == {"Output": "0.12.1"}
    # The environment is reused, not made again (its marker is written last, once).
    assert (made / component_envs.READY).stat().st_mtime_ns == ready


@pytest.mark.slow
def test_a_package_that_cannot_be_installed_fails_its_task_and_names_the_package(engine):
    result = engine.run(p.with_a_missing_package, {}, enable_cache=False)
    assert not result.succeeded and result.failed_task == "impossible"
    assert "loopline-no-such-package-0a1b2c" in result.error
