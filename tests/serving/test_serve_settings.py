"""Server settings from LOOPLINE_SERVE_*: defaults, the CPUs a container really has, and
a clear error for a bad value."""

import os

import pytest

from loopline.core.settings import SettingsError, load_settings, usable_cpus
from loopline.serving.tracing import bentoml_tracing


def load_options(env):
    return load_settings(env).serve


def test_the_forward_pass_leaves_one_cpu_to_the_event_loop():
    assert load_options({}).threads == max(1, usable_cpus() - 1)
    assert load_options({"LOOPLINE_SERVE_THREADS": "3"}).threads == 3


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1), ("garbled", None)],
)
def test_a_container_cpu_limit_caps_the_count(tmp_path, cpu_max, expected):
    """A pod limited to 1.5 CPUs on a 64-core node has 2 to use, not 64 (torch counts
    the node's); an unlimited or unreadable quota leaves the affinity's count."""
    quota = tmp_path / "cpu.max"
    quota.write_text(cpu_max + "\n")
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(quota) == (affinity if expected is None else min(affinity, expected))
    assert usable_cpus(tmp_path / "missing") == affinity


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_a_bad_thread_count_names_the_variable(bad):
    with pytest.raises(SettingsError, match="LOOPLINE_SERVE_THREADS"):
        load_options({"LOOPLINE_SERVE_THREADS": bad})


@pytest.mark.parametrize("url", ["/predict", "/feedback", "/metrics", "/predict?x=1"])
def test_with_tracing_off_no_request_opens_a_span(url):
    """BentoML's OpenTelemetry middleware skips the URLs its exclusion list matches (read
    here by OpenTelemetry's own parser); at a sample rate it traces them all again."""
    from _bentoml_sdk.service.config import validate
    from opentelemetry.util.http import ExcludeList

    off = bentoml_tracing(load_options({}))
    assert validate({"tracing": off})  # BentoML takes it as service configuration
    assert ExcludeList(off["excluded_urls"]).url_disabled(f"http://127.0.0.1:3000{url}")
    on = bentoml_tracing(load_options({"LOOPLINE_SERVE_TRACE_SAMPLE_RATE": "0.25"}))
    assert validate({"tracing": on}) and on == {"sample_rate": 0.25}


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "all", "nan"])
def test_a_bad_trace_sample_rate_names_the_variable(bad):
    with pytest.raises(SettingsError, match="LOOPLINE_SERVE_TRACE_SAMPLE_RATE"):
        load_options({"LOOPLINE_SERVE_TRACE_SAMPLE_RATE": bad})
