"""The contract a component meets before the catalog accepts it.

Each check has a name, and each failure a message naming the field and the fix. The
static checks read the source (so a missing type is reported by name even though KFP
would refuse to compile it); ``side_effects`` and ``compiles`` import the file in its own
process; ``example`` runs the compiled component through loopline's executor.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from loopline.catalog.folder import META, SOURCE, ComponentFolder, probe
from loopline.core.images import platform
from loopline.core.settings import Settings

# Input names that carry credentials: they must come from a Kubernetes Secret instead.
# A bare "key" only as the whole name: sort_key or partition_key are not secrets.
SECRET = re.compile(
    r"(^|_)(token|password|passwd|secret|credentials?|"
    r"(api|access|secret|private|ssh|signing|encryption)_?key)($|_)|^key$",
    re.IGNORECASE,
)
ORDER = (
    "typed",
    "documented",
    "no_secret_inputs",
    "side_effects",
    "compiles",
    "pinned",
    "base_image",
    "example",
)


@dataclass
class Result:
    name: str
    passed: bool | None  # None: not run, because a check it needs failed
    message: str = ""


@dataclass
class Report:
    component: str
    results: list[Result] = field(default_factory=list)
    component_yaml: str | None = None  # the compiled component, when it compiles

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.passed is False]

    def to_json(self) -> dict:
        return {
            "component": self.component,
            "passed": self.passed,
            "checks": [asdict(r) for r in self.results],
        }


def check(folder: ComponentFolder, settings: Settings, *, engine=None) -> Report:
    """Every check, in ``ORDER``; ``engine`` runs the example (default: a PrefectEngine)."""
    report = Report(folder.name)
    add = report.results.append
    add(_typed(folder))
    add(_documented(folder))
    add(_no_secret_inputs(folder))
    found = probe(folder, settings)
    add(
        Result(
            "side_effects", not found.effects and not found.import_error, _effects_message(found)
        )
    )
    if found.component_yaml is None:
        why = found.import_error or found.compile_error or "kfp found no component in it"
        add(Result("compiles", False, f"{SOURCE} does not compile with kfp: {why}"))
        for name in ORDER[ORDER.index("pinned") :]:
            add(Result(name, None, "not run: the component does not compile"))
        return report
    add(Result("compiles", True, "compiles with kfp"))
    report.component_yaml = found.component_yaml
    spec = yaml.safe_load(found.component_yaml)
    container = next(iter(spec["deploymentSpec"]["executors"].values()))["container"]
    pinned = _pinned(container)
    add(pinned)
    add(_base_image(container, settings))
    if not pinned.passed:  # never install unpinned packages on the checker's machine
        add(Result("example", None, "not run: its packages are not pinned"))
    else:
        add(_example(folder, found.component_yaml, spec, settings, engine))
    return report


def _typed(folder: ComponentFolder) -> Result:
    function = folder.function
    missing = [a.arg for a in _arguments(function) if a.annotation is None]
    if missing:
        return Result(
            "typed",
            False,
            f"input {', '.join(missing)} of {function.name} has no type; annotate it "
            f"(for example `{missing[0]}: float`, or Input[Dataset] for an artifact)",
        )
    returns = any(
        isinstance(node, ast.Return)
        and node.value is not None
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
        for node in ast.walk(function)
    )
    if returns and function.returns is None:
        return Result(
            "typed",
            False,
            f"{function.name} returns a value but declares no return type; add `-> TYPE` "
            f"(for example `-> float`, or a NamedTuple for several outputs)",
        )
    return Result("typed", True, "every input and output is typed")


def _documented(folder: ComponentFolder) -> Result:
    function = folder.function
    doc = ast.get_docstring(function)
    if not doc:
        return Result(
            "documented",
            False,
            f"{function.name} has no docstring; add one that says what it does, with an "
            f"Args: section describing each input",
        )
    undocumented = [
        a.arg
        for a in _arguments(function)
        if not re.search(rf"^\s*{re.escape(a.arg)}\s*(\(.*\))?:", doc, re.MULTILINE)
    ]
    if undocumented:
        return Result(
            "documented",
            False,
            f"input {', '.join(undocumented)} is not described in the docstring; add "
            f"`{undocumented[0]}: what it is` under Args:",
        )
    return Result("documented", True, "the component and each input are described")


def _no_secret_inputs(folder: ComponentFolder) -> Result:
    secret = [a.arg for a in _arguments(folder.function) if SECRET.search(a.arg)]
    if secret:
        return Result(
            "no_secret_inputs",
            False,
            f"input {', '.join(secret)} looks like a secret, and parameters are stored in "
            f"run history; read it from the environment inside the component and have the "
            f"pipeline set it from a Kubernetes Secret (kfp.kubernetes.use_secret_as_env)",
        )
    return Result("no_secret_inputs", True, "no input looks like a credential")


def _effects_message(found) -> str:
    if found.effects:
        shown = "; ".join(dict.fromkeys(found.effects))
        return (
            f"importing {SOURCE} {shown[:600]}; move that work inside the component "
            f"function, where it runs in the task"
        )
    if found.import_error:
        return f"importing it failed: {found.import_error}; fix the file"
    return "importing it touches no network, files or processes"


def _pinned(container: dict) -> Result:
    from loopline.pipelines.local.component_envs import requirements

    wanted = requirements(container.get("command", []))
    loose = []
    for text in wanted.packages:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            loose.append(text)
            continue
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator not in ("==", "==="):
            loose.append(text)
    if loose:
        return Result(
            "pinned",
            False,
            f"packages_to_install has unpinned {', '.join(loose)}; pin each to one version, "
            f"for example {_example_pin(loose[0])}",
        )
    return Result("pinned", True, f"{len(wanted.packages)} package(s), each pinned")


def _base_image(container: dict, settings: Settings) -> Result:
    image = container.get("image", "")
    allowed = {platform("cpu"), platform("cuda"), *settings.catalog.allowed_images}
    if image in allowed:
        return Result("base_image", True, f"{image} is allowed")
    return Result(
        "base_image",
        False,
        f'base_image {image} is not allowed; use @dsl.component(base_image="{platform()}") '
        f"or ask the platform team to add it to LOOPLINE_ALLOWED_IMAGES",
    )


def _example(folder: ComponentFolder, text: str, spec: dict, settings, engine) -> Result:
    if not folder.has_example:
        return Result(
            "example",
            False,
            f"there is no example; add [example.inputs] (and [example.files] for artifact "
            f"inputs) to {META}, so the catalog can run it",
        )
    from loopline.catalog.example import run_sandboxed

    try:
        if folder.example_runner is not None:
            produced = folder.example_runner(spec, settings, engine)
        else:
            produced = run_sandboxed(folder, text, spec, settings)
    except Exception as exc:
        return Result("example", False, f"the example failed: {exc}")
    return Result("example", True, f"the example ran and produced {', '.join(produced)}")


def _arguments(function: ast.FunctionDef) -> list[ast.arg]:
    args = function.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs]


def _example_pin(text: str) -> str:
    name = re.split(r"[<>=!~ \[]", text, maxsplit=1)[0]
    return f"{name}==X.Y.Z"


def describe(report: Report) -> str:
    marks = {True: "ok  ", False: "FAIL", None: "skip"}
    lines = [f"{marks[r.passed]} {r.name:17} {r.message}" for r in report.results]
    return "\n".join(lines)
