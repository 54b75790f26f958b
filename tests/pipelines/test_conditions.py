"""The CEL subset of KFP trigger conditions and loop-item selectors: what the compiler
writes evaluates as Kubeflow would, and anything else is refused, never executed."""

import pytest

from loopline.pipelines.local.conditions import ConditionError, evaluate, is_selector, select

V = "inputs.parameter_values"


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        (f"int({V}['pipelinechannel--x']) > 4", {"pipelinechannel--x": 5}, True),
        (f"int({V}['pipelinechannel--x']) > 4", {"pipelinechannel--x": "4"}, False),
        (f"!(int({V}['x']) > 10) && int({V}['x']) > 3", {"x": 5}, True),
        (f"{V}['coin'] == 'heads' || {V}['coin'] == 'edge'", {"coin": "tails"}, False),
        (f"{V}['s'] == 'a && b'", {"s": "a && b"}, True),  # operators inside strings stay
        (f"double({V}['f']) >= -0.5", {"f": -0.5}, True),
        (f"{V}['flag'] == true", {"flag": True}, True),
        (f"{V}['x'] in [1, 2, 3]", {"x": 2}, True),
        (f"1 < int({V}['x']) < 3", {"x": 3}, False),
    ],
)
def test_conditions_evaluate_as_kubeflow_would(condition, values, expected):
    assert evaluate(condition, values) is expected


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('touch /tmp/pwned')",
        f"{V}['x'].__class__",
        "open('/etc/passwd').read() == ''",
        "(lambda: 1)() == 1",
        f"{V}['x'] == 1; import os",
    ],
)
def test_anything_outside_the_subset_is_refused_not_run(hostile):
    with pytest.raises(ConditionError):
        evaluate(hostile, {"x": 1})


@pytest.mark.parametrize(
    ("selector", "item", "expected"),
    [
        ('parseJson(string_value)["a"]', {"a": 1, "b": 2}, 1),
        ('parseJson(string_value)["a"]', '{"a": "x"}', "x"),  # a JSON string, as on Kubeflow
        ('parseJson(string_value)["b"]["c"]', {"b": {"c": [7]}}, [7]),
        ("parseJson(string_value)[1]", [5, 6], 6),
    ],
)
def test_loop_item_fields_are_selected(selector, item, expected):
    assert is_selector(selector)
    assert select(selector, item) == expected


def test_a_missing_field_or_a_foreign_selector_is_a_clear_error():
    with pytest.raises(ConditionError, match="has no field"):
        select('parseJson(string_value)["z"]', {"a": 1})
    assert not is_selector("string_value.upper()")
    with pytest.raises(ConditionError, match="unsupported"):
        select("string_value.upper()", "x")
