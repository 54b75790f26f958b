"""Imports a component file inside the sandbox and reports on it, on REPORT_FD (a
descriptor opened outside the sandbox), never on its output.

Run by :func:`loopline.catalog.folder.probe` as
``python -I -m loopline.catalog.probe MODE FILE MARKER REPORT_FD``, twice:

- ``import``, traced (:mod:`loopline.core.sandbox`): just before the import it opens
  MARKER, a path that does not exist, so the tracer outside knows where the file's own
  calls begin (:mod:`loopline.catalog.effects`). It compiles nothing, so every call after
  the marker is the file's. It exits as any interpreter does: the file's atexit handlers
  and threads run to their end, still traced.
- ``compile``: the caller's copy of the file with only its imports and the component
  function; each ``@dsl.component`` is compiled into an in-memory file (KFP wants a
  ``.yaml`` path: a link to it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys


def main(mode: str, path: str, marker: str, report_fd: int) -> None:
    """``import``: open MARKER, import the file, report whether it imported (the tracer
    outside judges the rest). ``compile``: import the file (its imports and component
    function alone, written by the caller) and report each component compiled."""
    import kfp.compiler  # loaded before the marker: only the file's own calls are judged
    from kfp.dsl.python_component import PythonComponent

    sys.dont_write_bytecode = True
    result: dict = {"components": {}, "import_error": None, "compile_error": None}
    spec = importlib.util.spec_from_file_location("loopline_component_probe", path)
    module = importlib.util.module_from_spec(spec)
    if mode == "import":
        with contextlib.suppress(OSError):
            os.close(os.open(marker, os.O_RDONLY))
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # the user's code: report it, whatever it raised
        result["import_error"] = f"{type(exc).__name__}: {exc}"
        result["line"] = _line(exc, path)
        _report(report_fd, result)
    if mode == "compile":
        memory = os.memfd_create("component-yaml")
        target = f"/tmp/{os.path.basename(marker)}.yaml"  # KFP wants a .yaml name
        os.symlink(f"/proc/self/fd/{memory}", target)
        found = {n: v for n, v in vars(module).items() if isinstance(v, PythonComponent)}
        for name, component in found.items():
            try:
                kfp.compiler.Compiler().compile(component, target)
                result["components"][name] = os.pread(memory, 1 << 24, 0).decode()
            except Exception as exc:
                result["components"][name] = None
                result["compile_error"] = f"{type(exc).__name__}: {exc}"
    _report(report_fd, result)


def _report(fd: int, result: dict) -> None:
    # One line from the start (JSON escapes its newlines), read up to its newline: what
    # the file may have written there before is overwritten or cut off.
    os.pwrite(fd, json.dumps(result).encode() + b"\n", 0)
    sys.exit(0)


def _line(exc: BaseException, path: str) -> int | None:
    import traceback

    if isinstance(exc, SyntaxError):
        return exc.lineno
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return frames[-1].lineno if frames else None


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
