"""The training hyper-parameters are defined once, in TrainConfig: the train component (as
a cluster runs it, from its source text) and both training pipelines expose exactly
those, with TrainConfig's defaults unless a pipeline declares its own."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml
from kfp import compiler

from loopline.components.train import train
from loopline.ml.hyperparameters import PARAMETERS, from_arguments, with_hyperparameters
from loopline.ml.train_config import TrainConfig
from loopline.pipelines.retraining import retraining
from loopline.pipelines.training import training

KFP_TYPES = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}


def compiled(pipeline, tmp_path) -> dict:
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return next(yaml.safe_load_all(path.read_text()))  # the second: Kubernetes settings


def truth() -> dict[str, object]:
    """Read straight off the dataclass: every field with a help text, and workers."""
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.metadata}
    return {**fields, "workers": -1}


def test_every_field_with_help_is_a_hyperparameter_and_nothing_else():
    assert {p.name for p in PARAMETERS} == set(truth())
    # settings of the machine, not of the model, stay out of the pipelines
    assert "memory_mb" not in {p.name for p in PARAMETERS}
    assert all(p.help and p.help.endswith(".") for p in PARAMETERS)


@pytest.mark.parametrize(
    ("pipeline", "own"),
    [(training, {}), (retraining, {"augment": False, "workers": 0})],
    ids=["training", "retraining"],
)
def test_pipelines_expose_the_hyperparameters_with_their_defaults(pipeline, own, tmp_path):
    spec = compiled(pipeline, tmp_path)
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    for name, default in {**truth(), **own}.items():
        assert name in inputs, f"{pipeline.name} lacks {name}"
        assert inputs[name]["defaultValue"] == default, name
        assert inputs[name]["parameterType"] == KFP_TYPES[type(default)], name
    # and they reach the train task
    train_task = spec["root"]["dag"]["tasks"]["train"]
    assert set(truth()) <= set(train_task["inputs"]["parameters"])


def test_the_source_a_cluster_runs_declares_every_hyperparameter(tmp_path):
    """KFP's executor on a cluster reads the parameters from the shipped text's
    annotations: exec that text alone, as the executor does, and read them back."""
    spec = compiled(training, tmp_path)["deploymentSpec"]["executors"]["exec-train"]
    program = spec["container"]["command"][-1]
    namespace: dict = {}
    # The ephemeral module, kfp's imports then the function, compiled as its own file.
    exec(compile(program, "ephemeral_component.py", "exec", dont_inherit=True), namespace)
    declared = inspect.getfullargspec(namespace["train"])
    for name, default in truth().items():
        assert declared.annotations[name] is type(default), name  # a type, not a string
    defaults = dict(zip(reversed(declared.args), reversed(declared.defaults), strict=False))
    assert {name: defaults[name] for name in truth()} == truth()
    assert train.component_spec.inputs.keys() >= truth().keys()


def test_from_arguments_builds_the_config_and_keeps_the_checks():
    config, workers = from_arguments(
        {"epochs": 3, "lr": 0.01, "workers": 2, "dataset": object(), "model_name": "m"}
    )
    assert (config.epochs, config.lr, workers) == (3, 0.01, 2)
    assert config.batch_size == TrainConfig().batch_size
    with pytest.raises(ValueError, match="epochs must be positive"):
        from_arguments({"epochs": 0})


def test_a_pipeline_gets_the_values_it_is_called_with():
    seen = {}

    @with_hyperparameters(epochs=7)
    def pipeline(dataset: str = "digits", **train):
        seen.update(dataset=dataset, **train)

    assert inspect.signature(pipeline).parameters["epochs"].default == 7
    pipeline("x", lr=0.5)
    assert seen["dataset"] == "x" and seen["lr"] == 0.5 and seen["epochs"] == 7
    assert seen["workers"] == -1


def test_a_default_for_an_unknown_hyperparameter_is_refused():
    with pytest.raises(TypeError, match="not training hyper-parameters: \\['epoch'\\]"):
        with_hyperparameters(epoch=3)


def test_the_train_component_declares_exactly_the_hyperparameters():
    """The train component writes its parameters out; they must be TrainConfig's (and
    workers), with the same types, defaults and help, in the same order."""
    signature = inspect.signature(train.python_func)
    own = {"dataset", "model", "model_name", "run_id"}
    declared = [p for p in signature.parameters.values() if p.name not in own]
    assert [(p.name, p.annotation, p.default) for p in declared] == [
        (p.name, p.type, p.default) for p in PARAMETERS
    ]
    doc = inspect.getdoc(train.python_func)
    for p in PARAMETERS:
        assert f"{p.name}: {p.help}" in doc, f"the docstring's Args line for {p.name}"
