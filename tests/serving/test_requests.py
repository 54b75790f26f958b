"""Every malformed request gets a 4xx with a message naming the field and the expectation."""

import io
import json
import struct
import zlib

import pytest
from PIL import Image

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


def _png(image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **options)
    return out.getvalue()


def _short_stream_png(width: int, height: int) -> bytes:
    """A PNG whose zlib stream is whole but holds half the promised rows: Pillow decodes
    it without complaint, with the missing rows blank."""
    rows = b"".join(b"\x00" + bytes([200] * width) for _ in range(height // 2))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")  # fmt: skip


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (28, 28), 200),
        Image.new("RGB", (31, 17), (10, 200, 30)),
        Image.new("RGBA", (9, 40), (10, 200, 30, 255)),
        Image.new("P", (13, 13)),
        Image.new("1", (11, 5), 1),
        Image.new("I;16", (6, 6)),
    ],
    ids=["grey", "rgb", "rgba", "palette", "bits", "16-bit"],
)
@pytest.mark.parametrize("interlace", [False, True])
def test_whole_pngs_of_every_kind_are_read(image, interlace):
    rows = parse(_png(image, optimize=False, interlace=interlace), "image/png", IMAGE)
    assert rows.shape == (1, 4)


def test_a_png_with_truncated_image_data_is_refused_not_read_as_blank():
    with Image.open(io.BytesIO(_short_stream_png(8, 8))) as image:
        assert image.convert("L").getextrema() == (0, 200)  # Pillow: half blank, no error
    with pytest.raises(RequestError) as info:
        parse(_short_stream_png(8, 8), "image/png", IMAGE)
    assert info.value.status == 400 and "image data is truncated (36 of 72 bytes)" in str(
        info.value
    )
    whole = _png(Image.new("L", (28, 28), 200))
    with pytest.raises(RequestError) as info:
        parse(whole[:-30], "image/png", IMAGE)  # the file itself cut short
    assert info.value.status == 400
