"""What the terminal shows while a pipeline runs: a line per finished step (with its time
and whether the cache served it) and a progress bar per running training.

It listens to the DAG orchestrator (:class:`loopline.pipelines.local.results.RunListener`) and polls each running
step's progress file; steps' own output goes to their ``task.log`` files, so nothing else
writes to the terminal.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopline.core import progress
from loopline.pipelines.local.results import PROGRESS, Status, TaskRecord

MARKS = {Status.SUCCEEDED: "[green]✓[/]", Status.FAILED: "[red]✗[/]", Status.SKIPPED: "[dim]-[/]"}


class RunView:
    def __init__(self, console: Console, *, poll_s: float = 0.25):
        self.console = console
        self.poll_s = poll_s
        self.bars = Progress(
            TextColumn("  [bold]{task.fields[step]}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._running: dict[str, tuple[Path, int | None]] = {}  # step -> (progress file, bar)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="run-view", daemon=True)

    def __enter__(self) -> RunView:
        self.bars.start()
        self._poller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._poller.join()
        self.bars.stop()

    # RunListener
    def task_started(self, name: str, folder: Path) -> None:
        with self._lock:
            self._running[name] = (folder / PROGRESS, None)

    def task_finished(self, record: TaskRecord) -> None:
        with self._lock:
            _, bar = self._running.pop(record.name, (None, None))
            if bar is not None:
                self.bars.remove_task(bar)
        how = "from cache" if record.cached else f"{record.seconds:.1f} s"
        if record.status is not Status.SUCCEEDED:
            how = record.status
        self.bars.console.print(f"  {MARKS[record.status]} {escape(record.name):<28} {how}")

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                for name, (path, bar) in list(self._running.items()):
                    state = progress.read(path)
                    if state is None:
                        continue
                    if bar is None:
                        bar = self.bars.add_task("", total=state["total"], step=name)
                        self._running[name] = (path, bar)
                    self.bars.update(
                        bar,
                        completed=state["done"],
                        total=state["total"],
                        description=escape(state["description"]),
                    )
