"""A pipeline whose first step leaves a thread that prints after the step has returned, as
Ray's log monitor does after a training: the line must not reach the terminal."""

from kfp import dsl


@dsl.component
def leave_a_printer() -> int:
    import sys
    import threading
    import time

    def late() -> None:
        time.sleep(0.5)
        print("LATE LINE FROM A FINISHED STEP", file=sys.stderr, flush=True)

    threading.Thread(target=late, daemon=True).start()
    return 1


@dsl.component
def wait(x: int) -> int:
    import time

    time.sleep(3)
    return x


@dsl.pipeline
def late_output() -> int:
    leave_a_printer()  # its worker is idle when the line comes: `wait` runs on the other
    return wait(x=2).output
