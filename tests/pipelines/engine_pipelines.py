"""Pipelines that exercise engine behaviour: concurrency, retries, failures, metrics, images."""

from kfp import dsl, kubernetes
from kfp.dsl import Metrics, Output

from loopline.core.images import PLATFORM_IMAGE
from tests.pipelines.feature_pipelines import add


@dsl.component
def stamp(seconds: float) -> str:
    import time

    start = time.time()
    time.sleep(seconds)
    return f"{start},{time.time()}"


@dsl.component
def flaky(marker: str) -> int:
    from pathlib import Path

    attempts = Path(marker)
    count = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(count))
    if count < 2:
        raise RuntimeError(f"transient failure on attempt {count}")
    return count


@dsl.component
def fail_if_present(x: int, marker: str) -> int:
    import os

    if os.path.exists(marker):
        raise ValueError(f"refusing to run while {marker} exists")
    return x * 10


@dsl.component
def crash(how: str):
    """Dies without a Python exception: the kernel's OOM killer sends SIGKILL."""
    import os
    import signal

    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), {"segfault": signal.SIGSEGV, "oom-kill": signal.SIGKILL}[how])


@dsl.component
def score(metrics: Output[Metrics]):
    metrics.log_metric("accuracy", 0.9)
    metrics.log_metric("f1", 0.8)


@dsl.container_component
def alpine_echo():
    return dsl.ContainerSpec(image="alpine:3.20", command=["echo", "hi"])


@dsl.pipeline
def concurrent(seconds: float = 1.5) -> int:
    """Two independent sleeps; the test reads their start/end stamps from task outputs."""
    left = stamp(seconds=seconds)
    right = stamp(seconds=seconds)
    return add(a=1, b=1).after(left, right).output


@dsl.pipeline
def with_retry(marker: str) -> int:
    return flaky(marker=marker).set_retry(num_retries=2, backoff_duration="0s").output


@dsl.pipeline
def failing(marker: str, x: int = 2) -> int:
    upstream = add(a=x, b=1)
    middle = fail_if_present(x=upstream.output, marker=marker)
    return add(a=middle.output, b=5).output


@dsl.pipeline
def scoring():
    score()


@dsl.pipeline
def foreign_image():
    alpine_echo()


@dsl.component
def touch(path: str):
    open(path, "w").close()


@dsl.pipeline
def crashing(how: str, cleaned: str):
    final = touch(path=cleaned)
    with dsl.ExitHandler(final):
        crash(how=how)


@dsl.pipeline
def cleanup_after_failure(marker: str, cleaned: str):
    final = touch(path=cleaned)
    with dsl.ExitHandler(final):
        fail_if_present(x=1, marker=marker)


@dsl.container_component
def platform_echo(text: str, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image=PLATFORM_IMAGE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$1")" && printf "%s" "$0" > "$1"'],
        args=[text, out],
    )


@dsl.pipeline
def platform_container(text: str = "from the platform image") -> str:
    return platform_echo(text=text).output


@dsl.component
def read_env(name: str) -> str:
    import os

    return os.environ.get(name, "<unset>")


@dsl.pipeline
def from_a_secret(optional: bool = False) -> str:
    task = read_env(name="LOOPLINE_TEST_FROM_SECRET")
    kubernetes.use_secret_as_env(
        task, secret_name="team-secrets", secret_key_to_env={"v": "LOOPLINE_TEST_FROM_SECRET"}
    )
    kubernetes.add_node_selector(task, "nvidia.com/gpu.present", "true")  # a cluster's matter
    return task.output


@dsl.pipeline
def with_a_volume() -> str:
    task = read_env(name="HOME")
    kubernetes.mount_pvc(task, pvc_name="data", mount_path="/data")
    return task.output


@dsl.component
def exit_with(code: int):
    import sys

    sys.exit(code)


@dsl.pipeline
def cleanup_after_exit(code: int, cleaned: str):
    final = touch(path=cleaned)
    with dsl.ExitHandler(final):
        exit_with(code=code)


@dsl.container_component
def bracket(text: str, out: dsl.OutputPath(str), suffix: str = None):
    """Concat and if-present placeholders, as Kubeflow's launcher resolves them."""
    return dsl.ContainerSpec(
        image=PLATFORM_IMAGE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$1")" && printf "%s" "$0" > "$1"'],
        args=[
            dsl.ConcatPlaceholder(
                [
                    "<",
                    text,
                    dsl.IfPresentPlaceholder(input_name="suffix", then=suffix, else_="none"),
                    ">",
                ]
            ),
            out,
        ],
    )


@dsl.container_component
def flags(out: dsl.OutputPath(str), flag: str = None):
    return dsl.ContainerSpec(
        image=PLATFORM_IMAGE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && echo "$@" > "$0"'],
        args=[
            out,
            dsl.IfPresentPlaceholder(input_name="flag", then=["--flag", flag], else_=["--no-flag"]),
        ],
    )


@dsl.component
def pair(a: str, b: str) -> str:
    return f"{a}|{b.strip()}"


@dsl.pipeline
def placeholders(text: str = "hi") -> str:
    first = bracket(text=text)
    second = bracket(text=first.output, suffix="s")
    return pair(a=second.output, b=flags().output).output


@dsl.component
def report_status(status: dsl.PipelineTaskFinalStatus, path: str):
    import json

    with open(path, "w") as fh:
        json.dump(
            {
                "state": status.state,
                "task": status.pipeline_task_name,
                "error": status.error_message,
            },
            fh,
        )


@dsl.pipeline
def final_status_and_ignored_failure(marker: str, report: str, cleaned: str):
    final = report_status(path=report)
    with dsl.ExitHandler(final):
        failed = fail_if_present(x=1, marker=marker)
        touch(path=cleaned).after(failed).ignore_upstream_failure()
