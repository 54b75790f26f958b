"""Strict parsing of prediction requests against the model's recorded input schema.

The HTTP contract follows KServe v1: ``{"instances": [...]}``, where each instance is a list
of numbers (flat or nested to the input shape) or, for tabular models, an object of
feature -> value. Image models also take one PNG upload (``Content-Type: image/png``),
converted to grey levels and scaled into the schema's value range. Every problem becomes a :class:`RequestError` that names the field and
what was expected; the service turns it into a 4xx answer.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.core.errors import UsageError

if TYPE_CHECKING:  # the schema's module brings pandas; the server's arbiter imports this one
    from loopline.ml.dataset import DatasetSchema


class RequestError(UsageError):
    """A request the service refuses; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1_000_000
    max_instances: int = 256
    max_pixels: int = 4096 * 4096  # refuse decompression bombs before decoding
    max_side: int = 4096  # and long thin images: 1 x 16,000,000 pixels takes seconds
    max_depth: int = 32  # JSON nesting; an instance nests as deep as its input shape
    max_digits: int = 20  # an integer literal; a 4,300-digit one stops Python's int()
    max_number_chars: int = 64  # a float literal
    max_text: int = 100_000  # one string value (a text column)


JSON = "application/json"
PNG = "image/png"


def parse(
    body: bytes, content_type: str | None, schema: DatasetSchema, limits: Limits = Limits()
) -> np.ndarray:
    """The instances of a request as a float32 array ``(n, features)``. (A PNG body is
    decoded by :func:`parse_png`; the service runs that off its event loop.)"""
    if media_type(content_type) == PNG:
        _check_body(body, limits, "body is empty; send a PNG file")
        return parse_png(body, schema, limits)
    payload = read_json(
        body, content_type, limits, accepts=(JSON, PNG), example='{"instances": [...]}'
    )
    instances = _instances(payload, limits)
    rows = [_instance(i, value, schema) for i, value in enumerate(instances)]
    return np.asarray(rows, dtype=np.float32)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def read_json(
    body: bytes, content_type: str | None, limits: Limits, *, accepts=(JSON,), example: str
):
    """A JSON body within the limits (size, nesting, number length), or a RequestError
    (4xx) that names the problem. Shared by every route that takes JSON."""
    if media_type(content_type) not in accepts:
        raise RequestError(
            415, f"content-type must be {' or '.join(accepts)}, got {content_type!r}"
        )
    _check_body(body, limits, f"body is empty; send {example}")
    numbers = _Numbers(limits)
    # Checking each number costs a Python call per literal; a body without a long run of
    # number characters has no long literal, so it needs no check.
    checked = {"parse_int": numbers.integer, "parse_float": numbers.real}
    try:
        payload = json.loads(
            body, parse_constant=_reject_constant, **(checked if numbers.long(body) else {})
        )
    except RequestError:
        raise
    except RecursionError:
        raise RequestError(
            422, f"body nests deeper than {limits.max_depth} levels; send flat or shaped arrays"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    _check_depth(payload, limits.max_depth)
    return payload


def _check_body(body: bytes, limits: Limits, empty: str) -> None:
    if len(body) > limits.max_bytes:
        raise RequestError(413, f"body is {len(body)} bytes; the limit is {limits.max_bytes}")
    if not body.strip():
        raise RequestError(400, empty)


class _Numbers:
    """JSON number literals, refused when longer than the limits allow (before Python's
    own conversion, which is slow or fails on thousands of digits)."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def long(self, body: bytes) -> bool:
        """Whether ``body`` may hold a literal over a limit (any run of number characters
        longer than the shorter limit: strings included, so never a miss)."""
        shortest = min(self.limits.max_digits, self.limits.max_number_chars)
        return _run_longer_than(shortest).search(body) is not None

    def integer(self, text: str) -> int:
        digits = len(text.lstrip("-"))
        if digits > self.limits.max_digits:
            raise RequestError(
                422,
                f"a number has {digits} digits ({text[:12]}...); at most "
                f"{self.limits.max_digits} are accepted",
            )
        return int(text)

    def real(self, text: str) -> float:
        if len(text) > self.limits.max_number_chars:
            raise RequestError(
                422,
                f"a number is written with {len(text)} characters ({text[:12]}...); at most "
                f"{self.limits.max_number_chars} are accepted",
            )
        return float(text)


@functools.cache
def _run_longer_than(length: int) -> re.Pattern:
    return re.compile(rb"[-+.0-9eE]{%d,}" % (length + 1))


def _check_depth(payload, limit: int) -> None:
    """Walk the parsed body without recursion; refuse it past ``limit`` levels."""
    pending = [(payload, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            raise RequestError(
                422, f"body nests deeper than {limit} levels; send flat or shaped arrays"
            )
        if isinstance(value, list):
            pending.extend((v, depth + 1) for v in value if isinstance(v, list | dict))
        elif isinstance(value, dict):
            pending.extend((v, depth + 1) for v in value.values() if isinstance(v, list | dict))


def _reject_constant(name: str) -> float:
    raise RequestError(422, f"{name} is not a number; send finite values only")


def _instance(index: int, value: Any, schema: DatasetSchema) -> list[float]:
    where = f"instances[{index}]"
    if isinstance(value, dict):
        if schema.kind != "tabular":
            raise RequestError(
                422, f"{where} must be a list of numbers shaped {schema.input_shape}"
            )
        value = _by_feature(where, value, schema)
        missing = [f for f in schema.features if f not in value]
        unknown = sorted(set(value) - set(schema.features))
        if missing or unknown:
            parts = [f"missing field(s) {', '.join(missing[:10])}"] if missing else []
            parts += [f"unknown field(s) {', '.join(unknown[:10])}"] if unknown else []
            raise RequestError(422, f"{where}: {'; '.join(parts)}")
        numbers = [_number(f"{where}.{f}", value[f]) for f in schema.features]
        _check_range(where, numbers, schema)
        return numbers
    if not isinstance(value, list):
        raise RequestError(422, f"{where} must be a list of numbers or an object of features")
    flat = _flatten(where, value, schema.input_shape)
    if len(flat) != len(schema.features):
        raise RequestError(
            422,
            f"{where} has {len(flat)} values; expected {len(schema.features)} "
            f"(shape {schema.input_shape}, flat or nested)",
        )
    return _numbers(where, flat, schema)


def _by_feature(where: str, value: dict, schema: DatasetSchema) -> dict:
    """A named instance keyed by feature names: a key may also be a feature's alias (its
    identifier form, ``mean_radius`` for ``mean radius``), but not both for one feature."""
    aliases = schema.aliases
    if not aliases or not set(value) & set(aliases):
        return value
    named = {}
    for key, number in value.items():
        feature = aliases.get(key, key)
        if feature in named:
            raise RequestError(
                422,
                f"{where}: {feature!r} is given twice (as {feature!r} and as its alias); "
                "send it once",
            )
        named[feature] = number
    return named


NUMBER_TYPES = frozenset({int, float})


def _numbers(where: str, flat: list, schema: DatasetSchema) -> list[float]:
    """The values as floats. Ordinary rows (numbers only, finite, in range) are checked in
    bulk; any other row goes value by value, so that the error names the value."""
    if set(map(type, flat)) <= NUMBER_TYPES:  # bool is a type of its own here
        values = np.asarray(flat, dtype=np.float64)
        low, high = schema.value_range or (-np.inf, np.inf)
        if np.isfinite(values).all() and ((values >= low) & (values <= high)).all():
            return flat
    numbers = [_number(f"{where}[{j}]", v) for j, v in enumerate(flat)]
    _check_range(where, numbers, schema)
    return numbers


def _flatten(where: str, value: list, shape: list[int]) -> list:
    if all(not isinstance(v, list) for v in value):
        return value
    try:
        array = np.asarray(value, dtype=object)
    except ValueError:  # ragged nesting
        raise RequestError(422, f"{where} is ragged; expected {shape} or flat") from None
    if array.ndim == 1 or list(array.shape[-len(shape) :]) != list(shape[-array.ndim :]):
        raise RequestError(
            422, f"{where} is nested as {list(array.shape)}; expected {shape} or flat"
        )
    return array.reshape(-1).tolist()


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(422, f"{where} is {type(value).__name__} {value!r}; expected a number")
    if not math.isfinite(value):
        raise RequestError(422, f"{where} is {value}; expected a finite number")
    return float(value)


def _check_range(where: str, numbers: list[float], schema: DatasetSchema) -> None:
    if schema.value_range is None:
        return
    low, high = schema.value_range
    for j, v in enumerate(numbers):
        if not low <= v <= high:
            raise RequestError(422, f"{where}[{j}] is {v}; expected a value in [{low}, {high}]")


def parse_png(body: bytes, schema: DatasetSchema, limits: Limits = Limits()) -> np.ndarray:
    """One PNG as a ``(1, features)`` row: grey levels, resized to the model's input, and
    scaled from 0..255 into the schema's value range (bright = high, as in MNIST)."""
    if schema.kind != "image":
        raise RequestError(415, f"model {schema.name!r} is tabular; send {JSON} records")
    height, width = schema.input_shape[-2:]
    from PIL import Image, UnidentifiedImageError  # only PNG requests need Pillow

    try:
        with Image.open(io.BytesIO(body), formats=["PNG"]) as image:  # reads the header only
            too_big = max(image.width, image.height) > limits.max_side or (
                image.width * image.height > limits.max_pixels
            )
            if too_big:
                raise RequestError(
                    413,
                    f"image is {image.width}x{image.height}; the limits are {limits.max_side} px "
                    f"a side and {limits.max_pixels} px in all",
                )
            _whole_image_data(body)
            grey = image.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    except RequestError:
        raise
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"image is too large ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, zlib.error) as exc:  # fmt: skip
        raise RequestError(
            400, f"body is not a readable PNG ({exc}); send a whole PNG file"
        ) from None
    low, high = schema.value_range or (0.0, 1.0)
    pixels = np.asarray(grey, dtype=np.float32) / 255.0 * (high - low) + low
    return pixels.reshape(1, -1)


# Adam7's passes: each starts at (x, y) and takes every (dx, dy)th pixel.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))  # fmt: skip
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by PNG colour type


def _whole_image_data(body: bytes) -> None:
    """Refuse a PNG whose compressed data ends early. Pillow fills the missing rows with
    zeros when the zlib stream itself is complete, and the model would answer for a
    partly blank image. Counts the inflated bytes (none kept) against what the header
    promises."""
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[16:29])
    bits = CHANNELS.get(colour, 4) * depth

    def rows(w: int, h: int) -> int:  # each row: a filter byte and its pixels
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if interlace:
        promised = sum(
            rows(-(-(width - x) // dx), -(-(height - y) // dy)) for x, y, dx, dy in ADAM7
        )
    else:
        promised = rows(width, height)
    inflate, found, at = zlib.decompressobj(), 0, 8
    while at + 8 <= len(body):
        (length,), kind = struct.unpack(">I", body[at : at + 4]), body[at + 4 : at + 8]
        if kind == b"IDAT":
            data = body[at + 8 : at + 8 + length]
            while data and found <= promised:
                found += len(inflate.decompress(data, 1 << 16))
                data = inflate.unconsumed_tail
        at += 12 + length
    if found < promised:
        raise RequestError(
            400,
            f"the PNG's image data is truncated ({found} of {promised} bytes); send a whole PNG",
        )


def parse_records(
    body: bytes, content_type: str | None, columns: list, limits: Limits = Limits()
) -> list[dict]:
    """The instances of a request to a model with named, typed input columns (an MLflow
    signature's :class:`~loopline.ml.model_contract.Column` list): each an object of
    column -> value, or a list in column order. Values keep their JSON types: numbers for
    numeric and integer columns, true/false for boolean ones, strings for categorical and
    text ones. A missing or unknown column, or a value of the wrong type, is a 422 that
    names the column."""
    if media_type(content_type) == PNG:
        raise RequestError(415, f"this model takes named columns; send {JSON} instances")
    instances = _instances(
        read_json(body, content_type, limits, example='{"instances": [...]}'), limits
    )
    return [_record(f"instances[{i}]", v, columns, limits) for i, v in enumerate(instances)]


def _instances(payload, limits: Limits) -> list:
    if not isinstance(payload, dict) or "instances" not in payload:
        raise RequestError(422, 'body must be an object {"instances": [...]}')
    unknown = sorted(set(payload) - {"instances"})
    if unknown:
        raise RequestError(
            422, f"unknown field(s) {', '.join(unknown)}; only 'instances' is accepted"
        )
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(422, "instances must be a non-empty list")
    if len(instances) > limits.max_instances:
        raise RequestError(
            413, f"{len(instances)} instances in one request; the limit is {limits.max_instances}"
        )
    return instances


def _record(where: str, value: Any, columns: list, limits: Limits) -> dict:
    names = [c.name for c in columns]
    if isinstance(value, list):
        if len(value) != len(columns):
            raise RequestError(
                422,
                f"{where} has {len(value)} values; expected {len(columns)}, in the order "
                f"{', '.join(names[:10])}",
            )
        value = dict(zip(names, value, strict=True))
    elif not isinstance(value, dict):
        raise RequestError(422, f"{where} must be an object of column -> value, or a list")
    missing = [n for n in names if n not in value]
    unknown = sorted(set(value) - set(names))
    if missing or unknown:
        parts = [f"missing column(s) {', '.join(missing[:10])}"] if missing else []
        parts += [f"unknown column(s) {', '.join(unknown[:10])}"] if unknown else []
        raise RequestError(422, f"{where}: {'; '.join(parts)}")
    return {c.name: _typed_value(f"{where}.{c.name}", value[c.name], c, limits) for c in columns}


def _typed_value(where: str, value: Any, column, limits: Limits):
    kind = column.kind
    if kind in ("numeric", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError(
                422,
                f"{where} is {type(value).__name__} {_short(value)}; column {column.name!r} "
                f"takes a number ({column.type})",
            )
        if not math.isfinite(value):
            raise RequestError(422, f"{where} is {value}; expected a finite number")
        if kind == "integer" and not float(value).is_integer():
            raise RequestError(
                422, f"{where} is {value}; column {column.name!r} takes a whole number"
            )
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise RequestError(
                422, f"{where} is {type(value).__name__} {_short(value)}; expected true or false"
            )
        return value
    if not isinstance(value, str):
        raise RequestError(
            422,
            f"{where} is {type(value).__name__} {_short(value)}; column {column.name!r} takes "
            f"a string ({kind})",
        )
    if len(value) > limits.max_text:
        raise RequestError(
            413, f"{where} is {len(value)} characters; the limit is {limits.max_text}"
        )
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
