"""Every malformed request gets a 4xx with a message naming the field and the expectation."""

import json

import pytest

from loopline.ml.dataset import DatasetSchema
from loopline.serving.requests import Limits, RequestError, parse

IMAGE = DatasetSchema(
    name="digits",
    kind="image",
    features=[f"px_{i}" for i in range(4)],
    classes=["0", "1"],
    input_shape=[1, 2, 2],
    value_range=[0.0, 1.0],
)
TABLE = DatasetSchema(
    name="t", kind="tabular", features=["age", "income"], classes=["a", "b"], input_shape=[2]
)


def body(payload) -> bytes:
    return json.dumps(payload).encode()


def test_flat_and_nested_images_and_feature_objects_parse():
    flat = parse(body({"instances": [[0, 0.5, 1, 0.25]]}), "application/json", IMAGE)
    nested = parse(body({"instances": [[[[0, 0.5], [1, 0.25]]]]}), "application/json", IMAGE)
    assert flat.tolist() == nested.tolist() == [[0, 0.5, 1, 0.25]]
    rows = parse(
        body({"instances": [{"income": 3.5, "age": 40}]}), "application/json; charset=utf-8", TABLE
    )
    assert rows.tolist() == [[40.0, 3.5]]


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "says"),
    [
        (body({"instances": [[0, 0, 0]]}), "application/json", 422, "has 3 values; expected 4"),
        (body({"instances": [[[0, 0, 0, 0]]]}), "application/json", 422, "is nested as [1, 4]"),
        (b'{"instances": [[0, NaN, 0, 0]]}', "application/json", 422, "NaN is not a number"),
        (
            b'{"instances": [[0, Infinity, 0, 0]]}',
            "application/json",
            422,
            "Infinity is not a number",
        ),
        (body({"instances": [[0, "1", 0, 0]]}), "application/json", 422, "instances[0][1] is str"),
        (
            body({"instances": [[0, True, 0, 0]]}),
            "application/json",
            422,
            "instances[0][1] is bool",
        ),
        (
            body({"instances": [[0, 2, 0, 0]]}),
            "application/json",
            422,
            "expected a value in [0.0, 1.0]",
        ),
        (b"", "application/json", 400, "body is empty"),
        (b'{"instances": [[0, 0', "application/json", 400, "not valid JSON"),
        (body({"instances": [[0, 0, 0, 0]]}), "text/plain", 415, "must be application/json"),
        (
            body({"instances": [[0, 0, 0, 0]], "extra": 1}),
            "application/json",
            422,
            "unknown field(s) extra",
        ),
        (body({"inputs": []}), "application/json", 422, 'must be an object {"instances"'),
        (body({"instances": []}), "application/json", 422, "non-empty list"),
        (body({"instances": [[0, 0, 0, 0]] * 3}), "application/json", 413, "the limit is 2"),
        (b"x" * 2000, "application/json", 413, "the limit is 1000"),
    ],
)
def test_malformed_image_requests(raw, content_type, status, says):
    with pytest.raises(RequestError) as info:
        parse(raw, content_type, IMAGE, Limits(max_bytes=1000, max_instances=2))
    assert info.value.status == status and says in str(info.value)


@pytest.mark.parametrize(
    ("instance", "says"),
    [
        ({"age": 40}, "instances[0]: missing field(s) income"),
        ({"age": 40, "income": 1, "zip": 9}, "unknown field(s) zip"),
        ({"age": "forty", "income": 1}, "instances[0].age is str 'forty'; expected a number"),
        ({"age": None, "income": 1}, "instances[0].age is NoneType"),
    ],
)
def test_malformed_tabular_instances(instance, says):
    with pytest.raises(RequestError) as info:
        parse(body({"instances": [instance]}), "application/json", TABLE)
    assert info.value.status == 422 and says in str(info.value)


@pytest.mark.parametrize(
    ("literal", "status"),
    [
        (b"1" + b"0" * 19, 200),  # 20 digits: the limit
        (b"-1" + b"0" * 20, 422),  # 21 digits
        (b"0." + b"1" * 30, 200),  # a float of 32 characters: past the fast path, accepted
        (b"0." + b"1" * 70, 422),  # 72 characters
        (b"1" * 5000, 422),  # would stall int() without the check
    ],
)
def test_long_number_literals_are_checked_wherever_they_are(literal, status):
    """Bodies with a long run of number characters take the checked parse; a long run
    inside a string takes it too and changes nothing."""
    table = DatasetSchema(
        name="t", kind="tabular", features=["a", "b"], classes=["0", "1"], input_shape=[2]
    )
    raw = b'{"instances": [[' + literal + b", 0]]}"
    if status == 200:
        assert parse(raw, "application/json", table)[0, 1] == 0
    else:
        with pytest.raises(RequestError) as info:
            parse(raw, "application/json", table)
        assert info.value.status == status and "accepted" in str(info.value)
    keyed = b'{"instances": [{"a": ' + literal + b', "b": 0}], "x' + b"9" * 30 + b'": 1}'
    with pytest.raises(RequestError) as info:  # the long key forces the checked parse
        parse(keyed, "application/json", table)
    assert ("unknown field(s) x999" if status == 200 else "accepted") in str(info.value)


def test_rows_checked_in_bulk_still_name_the_bad_value():
    for bad, says in [(-0.5, "instances[1][3] is -0.5"), (True, "instances[1][3] is bool")]:
        rows = [[0.25] * 4, [0.25, 0.5, 1, bad]]
        with pytest.raises(RequestError) as info:
            parse(body({"instances": rows}), "application/json", IMAGE)
        assert says in str(info.value), info.value
    assert parse(body({"instances": [[0, 1, 0.5, 1.0]]}), "application/json", IMAGE).tolist() == [
        [0, 1, 0.5, 1]
    ]
