"""Imports a component file in a separate process and reports what the import did.

Run as ``python -m loopline.catalog.probe FILE``; prints one JSON object: the
``@dsl.component`` functions found, each compiled to KFP component YAML, and every file
write, network access or process start the import attempted. An audit hook sees each
one, records it and stops it with PermissionError (the file may catch that and go on,
so later attempts are listed too). Being its own process, a
hostile or broken file cannot touch the caller.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

NETWORK = {
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.sendto",
    "socket.bind",
    "urllib.Request",
    "http.client.connect",
}
PROCESSES = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork"}
FILES = {
    "os.mkdir",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.symlink",
    "os.truncate",
    "shutil.copyfile",
    "shutil.rmtree",
    "os.chmod",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main(path: str) -> None:
    import kfp.compiler  # noqa: F401  (loaded before the hook: only the file is watched)
    from kfp.dsl.python_component import PythonComponent

    seen: list[str] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:
        if not watching[0]:
            return
        if event in NETWORK:
            seen.append(f"network access ({event} {_short(args)})")
        elif event in PROCESSES:
            seen.append(f"starts a process ({event} {_short(args)})")
        elif event in FILES:
            seen.append(f"changes files ({event} {_short(args)})")
        elif event == "open" and _writes(args):
            seen.append(f"writes a file ({args[0]})")
        else:
            return
        # Recorded, and stopped: checking a component must not let it act on this machine.
        raise PermissionError(f"loopline component check: {seen[-1]} while importing")

    sys.dont_write_bytecode = True
    result: dict = {"effects": seen, "components": {}, "import_error": None, "compile_error": None}
    spec = importlib.util.spec_from_file_location("loopline_component_probe", path)
    module = importlib.util.module_from_spec(spec)
    sys.addaudithook(hook)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # the user's code: report it, whatever it raised
        watching[0] = False
        result["import_error"] = f"{type(exc).__name__}: {exc}"
        _line(exc, path, result)
        print(json.dumps(result))
        return
    watching[0] = False
    found = {n: v for n, v in vars(module).items() if isinstance(v, PythonComponent)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, component in found.items():
            target = Path(tmp) / f"{name}.yaml"
            try:
                kfp.compiler.Compiler().compile(component, str(target))
                result["components"][name] = target.read_text()
            except Exception as exc:
                result["components"][name] = None
                result["compile_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result))


def _writes(args: tuple) -> bool:
    path, mode, flags = (list(args) + [None, None, None])[:3]
    if isinstance(path, int):  # an already open descriptor
        return False
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _short(args: tuple) -> str:
    return repr(args)[:120]


def _line(exc: BaseException, path: str, result: dict) -> None:
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    line = exc.lineno if isinstance(exc, SyntaxError) else frames[-1].lineno if frames else None
    result["line"] = line


if __name__ == "__main__":
    main(sys.argv[1])
