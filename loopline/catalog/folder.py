"""A component's folder, as a data scientist hands it in: ``component.py`` with one
``@dsl.component``, and ``component.toml`` with its name, owner and example.

``component.toml`` is optional: without it the name comes from the function, and the
``example`` check says what to add. ``new`` writes a folder that passes every check.
"""

from __future__ import annotations

import ast
import getpass
import json
import sys
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loopline.catalog.references import name_problem
from loopline.core.errors import UsageError
from loopline.core.images import platform
from loopline.core.settings import Settings, sqlite_path

SOURCE = "component.py"
META = "component.toml"


class MalformedComponent(UsageError):
    """The folder cannot be read as a component; the message names the file and the fix."""


@dataclass
class ComponentFolder:
    path: Path
    source: str
    function: ast.FunctionDef
    name: str
    owner: str
    description: str
    example_inputs: dict = field(default_factory=dict)
    example_files: dict = field(default_factory=dict)  # artifact input -> file in the folder
    has_example: bool = False
    source_file: Path | None = None  # default: path / component.py
    # (compiled spec, settings, engine) -> the outputs it produced; instead of the inputs
    example_runner: Callable | None = None

    def __post_init__(self) -> None:
        self.source_file = self.source_file or self.path / SOURCE


@dataclass
class Probe:
    """What importing ``component.py`` in a separate process found."""

    effects: list[str]
    component_yaml: str | None
    import_error: str | None = None  # the file did not import
    compile_error: str | None = None  # it imported; kfp did not compile it


MAX_SOURCE_BYTES = 256 * 1024  # a 20 MB source took 161 s and 717 MB to check and store


def read(path: str | Path) -> ComponentFolder:
    folder = Path(path)
    if folder.is_file() and folder.name == SOURCE:
        folder = folder.parent
    source_file = folder / SOURCE
    if not source_file.is_file():
        raise MalformedComponent(
            f"{folder} has no {SOURCE}; a component folder holds {SOURCE} with one "
            f"@dsl.component (`loopline component new NAME` makes one)"
        )
    size = source_file.stat().st_size
    if size > MAX_SOURCE_BYTES:
        raise MalformedComponent(
            f"{source_file} is {size:,} bytes; a component's source is at most "
            f"{MAX_SOURCE_BYTES:,}: move data into an input and code into a package"
        )
    try:
        source = source_file.read_text()
    except UnicodeDecodeError:
        raise MalformedComponent(f"{source_file} is not UTF-8 text; save it as UTF-8") from None
    try:
        tree = ast.parse(source, filename=str(source_file))
    except SyntaxError as exc:
        raise MalformedComponent(
            f"{source_file}, line {exc.lineno}: {exc.msg}; fix the syntax"
        ) from None
    functions = component_functions(tree)
    if len(functions) != 1:
        raise MalformedComponent(
            f"{source_file} holds {len(functions)} @dsl.component functions; a catalog "
            f"component is exactly one (put helpers inside it, or make several folders)"
        )
    meta = _meta(folder)
    function = functions[0]
    name = meta.get("name") or function.name.replace("_", "-")
    if problem := name_problem(name):
        raise MalformedComponent(f"{folder / META}: {problem}")
    example = meta.get("example", {})
    return ComponentFolder(
        path=folder,
        source=source,
        function=function,
        name=name,
        owner=str(meta.get("owner") or getpass.getuser()),
        description=str(meta.get("description") or ""),
        example_inputs=dict(example.get("inputs", {})),
        example_files=dict(example.get("files", {})),
        has_example="example" in meta,
    )


def probe(folder: ComponentFolder, settings: Settings, timeout_s: float = 120) -> Probe:
    """Import ``component.py`` in a traced sandbox, then compile its component there from
    the file's imports and the component function alone (loopline.catalog.probe).

    What the import did comes from the tracer outside. The compiled YAML comes from a
    run in which none of the file's other code ran (so none of it could rewrite the
    compiler or the report), on a descriptor opened outside, never from the output."""
    from loopline.catalog.effects import TRACED, effects_after
    from loopline.core.sandbox import INSIDE, Sandbox

    marker = f"/tmp/loopline-probe-{uuid.uuid4().hex}"
    source = str(folder.source_file.resolve())
    with Sandbox(hide=platform_places(settings), readable=[folder.path.resolve()]) as box:
        # Run from an empty folder: KFP ships the function alone, so files beside it
        # are not importable in a pod, nor here.
        imported = box.run(_probe("import", source, marker), timeout_s=timeout_s, trace=TRACED)
        effects = effects_after(imported.trace, marker)
        if imported.overflowed:  # what it did past that point is unknown: refused
            effects.append("makes system calls without end (the trace outgrew its limit)")
        found = _report(imported, timeout_s)
        if isinstance(found, str):
            return Probe(effects, None, import_error=found)
        if found["import_error"]:
            where = f"line {found['line']}: " if found.get("line") else ""
            return Probe(effects, None, import_error=where + found["import_error"])
        (box.scratch / SOURCE).write_text(_component_only(folder))
        again = box.run(_probe("compile", str(INSIDE / SOURCE), marker), timeout_s=timeout_s)
        compiled = _report(again, timeout_s)
    if isinstance(compiled, str) or compiled["import_error"]:
        why = compiled if isinstance(compiled, str) else compiled["import_error"]
        return Probe(effects, None, compile_error=(
            f"{why}; the decorator may use only what {SOURCE} imports (the component is "
            "compiled from its imports and its function alone)"))  # fmt: skip
    text = compiled["components"].get(folder.function.name)
    if text is not None and not _ships(text, folder):
        return Probe(effects, None, compile_error=f"the compiled component does not ship "
                     f"{SOURCE}'s {folder.function.name} as written")  # fmt: skip
    return Probe(effects, text, compile_error=compiled["compile_error"])


def _probe(mode: str, source: str, marker: str) -> list[str]:
    return [
        sys.executable,
        "-I",
        "-m",
        "loopline.catalog.probe",
        mode,
        source,
        marker,
        "{report_fd}",
    ]


def _report(done, timeout_s: float) -> dict | str:
    """The probe's report, or why there is none."""
    if done.returncode is None:
        return f"importing it took over {timeout_s:.0f} s"
    try:
        return json.loads(done.report.split(b"\n", 1)[0])
    except ValueError:
        last = (done.output.strip().splitlines() or ["no output"])[-1]
        return f"it ended without a report: {last}"


def _component_only(folder: ComponentFolder) -> str:
    """``component.py`` with only its imports and the component function (decorators
    included), every other line blanked: the same line numbers, the same function text."""
    lines = folder.source.splitlines(keepends=True)
    keep = set()
    for node in ast.parse(folder.source).body:
        if isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.FunctionDef) and node.name == folder.function.name
        ):
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            keep.update(range(first - 1, node.end_lineno))
    return "".join(line if i in keep else "\n" for i, line in enumerate(lines))


def _ships(text: str, folder: ComponentFolder) -> bool:
    """Whether compiled component YAML runs the folder's function, as its source says."""
    import textwrap

    import yaml

    try:
        spec = yaml.safe_load(text)
        executors = spec["deploymentSpec"]["executors"].values()
        program = "\n".join(
            "\n".join(
                map(str, [*e["container"].get("command", []), *e["container"].get("args", [])])
            )
            for e in executors
        )
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return False
    function = textwrap.dedent(ast.get_source_segment(folder.source, folder.function) or "")
    return bool(function.strip()) and function.strip() in program


def platform_places(settings: Settings) -> list[Path]:
    """What submitted code must not see: the platform's home and its database file."""
    places = [settings.home.resolve()]
    database = sqlite_path(settings.database_url)
    if database is not None:
        places.append(database.resolve().parent)
    return places


def component_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and _is_component(n)]


def _is_component(node: ast.FunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if ast.unparse(target) in ("dsl.component", "component", "kfp.dsl.component"):
            return True
    return False


def _meta(folder: Path) -> dict:
    path = folder / META
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MalformedComponent(f"{path}: {exc}; fix the TOML") from None


# -- new ----------------------------------------------------------------------------------

TEMPLATE = '''"""{title}: a catalog component. Edit the function, its docstring and its example."""

from typing import List  # noqa: UP035  (KFP reads typing.List annotations)

from kfp import dsl
from kfp.dsl import Markdown, Output


@dsl.component(base_image="{image}")
def {function}(values: List[float], summary: Output[Markdown], scale: float = 1.0) -> List[float]:  # noqa: UP006
    """Scale values linearly so that the smallest becomes 0 and the largest ``scale``.

    Args:
        values: The numbers to scale; at least one.
        summary: A short Markdown note of the range that was seen.
        scale: The value the largest number becomes.

    Returns:
        The scaled values, in the order given.
    """
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    with open(summary.path, "w") as fh:
        fh.write(f"range seen: {{low}} .. {{high}}\\n")
    return [(v - low) / span * scale for v in values]
'''

META_TEMPLATE = """# The catalog reads this file: the component's name, owner and example.
name = "{name}"
owner = "{owner}"
description = "Scales numbers to [0, scale]."

# `loopline component check` runs the component on these inputs through loopline's
# executor. Artifact inputs go under [example.files], as paths inside this folder.
[example.inputs]
values = [3.0, 1.0, 2.0]
scale = 10.0
"""

TEST_TEMPLATE = '''"""The component's own test: run it with `pytest {folder}`."""

import importlib.util
from pathlib import Path


def load():
    spec = importlib.util.spec_from_file_location("component", Path(__file__).with_name("component.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.{function}.python_func


class Note:
    def __init__(self, path):
        self.path = str(path)


def test_scales_to_the_range(tmp_path):
    result = load()(values=[3.0, 1.0, 2.0], summary=Note(tmp_path / "note.md"), scale=10.0)
    assert result == [10.0, 0.0, 5.0]
    assert "1.0 .. 3.0" in (tmp_path / "note.md").read_text()
'''

README_TEMPLATE = """# {name}

Scales numbers to [0, scale]. Owner: {owner}.

| | name | type |
| --- | --- | --- |
| in | values | List[float] |
| in | scale | float, optional (1.0) |
| out | Output | List[float] |
| out | summary | Markdown |

```bash
pytest {name}                                   # the component's own test
loopline component check {name}                 # the catalog's contract checks
loopline component publish {name} --version 1.0.0 --changelog "First version"
```

In a pipeline: `from loopline import catalog` then `{function} = catalog.load("{name}@^1")`.
"""


def scaffold(name: str, parent: Path, owner: str | None = None) -> Path:
    if problem := name_problem(name):
        raise UsageError(problem)
    folder = parent / name
    if folder.exists():
        raise UsageError(f"{folder} already exists; choose another name or remove it")
    function = name.replace("-", "_")
    owner = owner or getpass.getuser()
    values = {
        "name": name,
        "function": function,
        "owner": owner,
        "folder": name,
        "title": name,
        "image": platform(),
    }
    folder.mkdir(parents=True)
    (folder / SOURCE).write_text(TEMPLATE.format(**values))
    (folder / META).write_text(META_TEMPLATE.format(**values))
    (folder / "test_component.py").write_text(TEST_TEMPLATE.format(**values))
    (folder / "README.md").write_text(README_TEMPLATE.format(**values))
    return folder
