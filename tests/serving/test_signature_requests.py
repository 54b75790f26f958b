"""Requests to a model with named, typed columns (an MLflow signature): every wrong input
is a 4xx that names the column, and the good ones keep their types."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loopline.ml.model_contract import Column
from loopline.serving.requests import Limits, RequestError, parse_records
from loopline.serving.signature_model import SignatureModel
from loopline.storage.feedback import Label

COLUMNS = [
    Column("age", "double", "numeric"),
    Column("visits", "long", "integer"),
    Column("member", "boolean", "boolean"),
    Column("plan", "string", "categorical"),
    Column("note", "string", "text"),
]
GOOD = {"age": 41.5, "visits": 3, "member": True, "plan": "gold", "note": "late again"}


def parse(payload, limits=None, content_type="application/json"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_records(body, content_type, COLUMNS, limits or Limits())


def refused(payload, status=422, **kwargs) -> str:
    with pytest.raises(RequestError) as raised:
        parse(payload, **kwargs)
    assert raised.value.status == status, raised.value
    return str(raised.value)


def test_objects_and_lists_in_column_order_give_the_same_typed_records():
    as_list = [41.5, 3.0, True, "gold", "late again"]  # 3.0 is a whole number
    records = parse({"instances": [GOOD, as_list]})
    assert records[0] == records[1] == GOOD
    assert isinstance(records[1]["visits"], int)


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("age", "41", "instances[0].age is str '41'; column 'age' takes a number"),
        ("age", True, "instances[0].age is bool True"),
        ("visits", 2.5, "column 'visits' takes a whole number"),
        ("member", 1, "instances[0].member is int 1; expected true or false"),
        ("plan", 7, "column 'plan' takes a string (categorical)"),
        ("note", ["a"], "column 'note' takes a string (text)"),
        ("note", {"deep": 1}, "column 'note' takes a string"),
        ("plan", None, "instances[0].plan is NoneType None"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_column(column, value, says):
    assert says in refused({"instances": [{**GOOD, column: value}]})


def test_missing_unknown_and_miscounted_columns_are_named():
    message = refused({"instances": [{k: v for k, v in GOOD.items() if k != "plan"} | {"x": 1}]})
    assert "missing column(s) plan" in message and "unknown column(s) x" in message
    assert "has 2 values; expected 5" in refused({"instances": [[1.0, 2]]})
    assert "must be an object" in refused({"instances": ["text"]})


def test_hostile_bodies_get_4xx_not_5xx():
    assert "limit is 10" in refused(
        {"instances": [GOOD] * 11}, 413, limits=Limits(max_instances=10)
    )
    long_note = {"instances": [{**GOOD, "note": "x" * 101}]}
    assert "limit is 100" in refused(long_note, 413, limits=Limits(max_text=100))
    assert "not valid JSON" in refused(b"{", 400)
    assert "finite" in refused(b'{"instances": [{"age": NaN}]}')
    refused(b"\x89PNG...", 415, content_type="image/png")
    refused({"instances": []})
    refused({"instances": [GOOD], "extra": 1})


class _Model:
    def __init__(self, task, classes=()):
        from loopline.ml.mlflow_model import ModelCard
        from loopline.ml.model_contract import ModelContract

        contract = ModelContract(task, ("sklearn",), tuple(COLUMNS), None, "string", False)
        self.card = ModelCard(contract, "label", classes)
        self.classes = classes


def test_answers_say_which_class_each_probability_is_for_and_regressors_answer_numbers():
    classifier = SignatureModel("m", "1", _Model("classification", ("no", "yes")), None)
    assert classifier.prediction("yes", np.array([0.25, 0.75])) == {
        "label": "yes",
        "probabilities": {"no": 0.25, "yes": 0.75},
    }
    assert classifier.prediction("yes", np.array([])) == {"label": "yes"}
    regressor = SignatureModel("m", "1", _Model("regression"), None)
    assert regressor.prediction("151.5", np.array([])) == {"value": 151.5}
    regressor.check_labels([Label("r", 0, "3.25")])
    with pytest.raises(RequestError, match="'heavy' .request r. is not a number"):
        regressor.check_labels([Label("r", 0, "heavy")])
    with pytest.raises(RequestError, match="is not a class of the model"):
        classifier.check_labels([Label("r", 0, "maybe")])
    records = [GOOD]
    assert classifier.logged_inputs(records) == [json.dumps(GOOD, separators=(",", ":")).encode()]


def test_a_regressor_s_labels_may_be_sent_as_numbers():
    from loopline.serving.labels import parse_labels

    body = json.dumps(
        {"labels": [{"request_id": "r", "label": 151.25}, {"request_id": "s", "label": 3}]}
    )
    labels = parse_labels(body.encode())
    assert [lb.label for lb in labels] == ["151.25", "3"]
    SignatureModel("m", "1", _Model("regression"), None).check_labels(labels)
    with pytest.raises(RequestError, match="label must be a class name"):
        parse_labels(b'{"labels": [{"request_id": "r", "label": true}]}')
