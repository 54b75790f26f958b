"""loopline's own components, published in its catalog and held to its checks.

Each built-in is a ``ComponentFolder`` over the module that defines it. Their example is
one run of the built-in training pipeline, small (digits, one epoch, in-process
training), in which every built-in runs and must produce its declared outputs; but
``register-model``'s, which is a user's own small pipeline
(:mod:`loopline.catalog.model_example`).
"""

from __future__ import annotations

import ast
import functools
import uuid

from loopline import catalog
from loopline.catalog import checks, page
from loopline.catalog.folder import ComponentFolder, component_functions
from loopline.core.images import VERSION
from loopline.core.package import installed_root
from loopline.core.semver import Version
from loopline.core.settings import Settings
from loopline.storage.catalog import CatalogError

OWNER = "loopline platform team"
# module file -> {function: task name in the training pipeline}
BUILTINS = {
    "loopline/components/ingest.py": {"ingest": "ingest"},
    "loopline/components/validate.py": {"validate_data": "validate-data"},
    "loopline/components/train.py": {"train": "train"},
    "loopline/components/evaluate.py": {"evaluate": "evaluate"},
    "loopline/components/register.py": {"register": "register"},
    "loopline/components/package.py": {"package": "package"},  # inside dsl.If(promoted)
    "loopline/components/register_model.py": {"register_model": "register-model"},
}
EXAMPLE = {"dataset": "digits", "epochs": 1, "workers": 0, "min_samples_per_class": 10}
ROOT = installed_root()


def folders(settings: Settings, engine=None) -> list[ComponentFolder]:
    example = _Example(settings, engine)
    found = []
    for relative, tasks in BUILTINS.items():
        path = ROOT / relative
        source = path.read_text()
        functions = {f.name: f for f in component_functions(ast.parse(source))}
        for function, task in tasks.items():
            node = functions[function]
            found.append(
                ComponentFolder(
                    path=path.parent,
                    source=source,
                    function=node,
                    name=f"loopline-{function.replace('_', '-')}",
                    owner=OWNER,
                    description=(ast.get_docstring(node) or "").splitlines()[0],
                    has_example=True,
                    source_file=path,
                    example_runner=functools.partial(example.outputs, task),
                )
            )
    return found


class _Example:
    """One training run serves every built-in's example check."""

    def __init__(self, settings: Settings, engine):
        self.settings, self.engine = settings, engine
        self.results = {}

    def outputs(self, task: str, spec: dict, _settings, _engine) -> list[str]:
        from loopline.catalog.example import declared_outputs, engine_run

        if task == "register-model":
            from loopline.catalog.model_example import register_model_example as pipeline
        else:
            from loopline.pipelines.training import training as pipeline
        name = pipeline.name
        if name not in self.results:  # a new model name: no champion, so the gate promotes
            model = f"catalog-example-{uuid.uuid4().hex[:8]}"
            arguments = (
                {**EXAMPLE, "model_name": model} if name == "training" else {"model_name": model}
            )
            self.results[name] = engine_run(pipeline, arguments, self.settings, self.engine)
        result = self.results[name]
        if not result.succeeded:
            raise RuntimeError(f"the {name} pipeline failed: {result.error}")
        ran = [n for n in result.task_outputs if n.split(".")[-1] == task]
        if not ran:
            raise RuntimeError(f"task {task} did not run in the {name} pipeline")
        return declared_outputs(spec, result.task_outputs[ran[0]])


def publish(settings: Settings, engine=None) -> list[tuple[str, str]]:
    """Check and publish every built-in at loopline's version; (name, outcome) each. A
    version already published with the same source is left as it is, unchecked."""
    with catalog.opened(settings) as store:
        found = folders(settings, engine)
        done = {f.name: _published(store, f) for f in found}
        pending = [f for f in found if not done[f.name]]
        reports = {f.name: _checked(f, settings, engine) for f in pending}  # all, or none
        for folder in pending:
            catalog.publish_checked(
                store,
                folder,
                Version.parse(VERSION),
                reports[folder.name],
                changelog=f"loopline {VERSION}",
            )
        page.write(store, settings.home / "catalog" / "index.html")
    return [
        (name, f"{VERSION} already published" if was else f"published {VERSION}")
        for name, was in done.items()
    ]


def _published(store, folder: ComponentFolder) -> bool:
    try:
        entry = store.get(folder.name, VERSION)
    except CatalogError:
        return False
    if entry.source != folder.source:
        raise CatalogError(
            f"{folder.name} {VERSION} is published with other source; built-ins change "
            f"with loopline's version (loopline/core/images.py VERSION and pyproject.toml)"
        )
    return True


def _checked(folder: ComponentFolder, settings: Settings, engine):
    report = checks.check(folder, settings, engine=engine)
    if not report.passed:
        failed = ", ".join(f"{r.name}: {r.message}" for r in report.failures())
        raise CatalogError(f"built-in {folder.name} fails its checks: {failed}")
    return report
