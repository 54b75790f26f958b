"""KFP trigger conditions: the small CEL subset the compiler emits, evaluated safely.

The compiler writes conditions such as
``!(int(inputs.parameter_values['pipelinechannel--x']) > 4) && ... == 'heads'``. They are
parsed with Python's ``ast`` after a token rewrite and evaluated over an allow-list of
node types, so a condition can compare values and nothing else.
"""

from __future__ import annotations

import ast
import operator
import re

from loopline.core.errors import LooplineError

_TOKENS = [
    (r"&&", " and "),
    (r"\|\|", " or "),
    (r"!(?!=)", " not "),
    (r"\btrue\b", "True"),
    (r"\bfalse\b", "False"),
    (r"\bnull\b", "None"),
]
_CASTS = {"int": int, "double": float, "string": str, "bool": bool}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
}


class ConditionError(LooplineError, ValueError):
    """A trigger condition uses syntax outside the supported subset."""


# A loop item's field (`item.a`, `item.a.b`) as the compiler writes it:
# parseJson(string_value)["a"]["b"].
_SELECTOR = re.compile(r'parseJson\(string_value\)((?:\["[^"]*"\]|\[\d+\])+)')
_KEY = re.compile(r'\["([^"]*)"\]|\[(\d+)\]')


def is_selector(expression: str) -> bool:
    return _SELECTOR.fullmatch(expression) is not None


def select(expression: str, value: object) -> object:
    """The field of ``value`` (a JSON string or already parsed) that ``expression`` names."""
    match = _SELECTOR.fullmatch(expression)
    if match is None:
        raise ConditionError(f"unsupported parameter selector {expression!r}")
    import json

    current = json.loads(value) if isinstance(value, str) else value
    for key, index in _KEY.findall(match.group(1)):
        try:
            current = current[key] if key or not index else current[int(index)]
        except (KeyError, IndexError, TypeError):
            raise ConditionError(f"the loop item {value!r} has no field {expression!r}") from None
    return current


def evaluate(condition: str, parameter_values: dict) -> bool:
    python = _outside_strings(condition).strip()
    try:
        tree = ast.parse(python, mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"cannot parse condition {condition!r}: {exc.msg}") from None
    return bool(_eval(tree.body, parameter_values, condition))


def _outside_strings(text: str) -> str:
    """Rewrite CEL operators to Python, leaving quoted strings alone."""
    parts = re.split(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", text)
    for i in range(0, len(parts), 2):
        for pattern, replacement in _TOKENS:
            parts[i] = re.sub(pattern, replacement, parts[i])
    return "".join(parts)


def _eval(node: ast.AST, values: dict, source: str):
    match node:
        case ast.Constant(value=value):
            return value
        case ast.BoolOp(op=ast.And(), values=items):
            return all(_eval(v, values, source) for v in items)
        case ast.BoolOp(op=ast.Or(), values=items):
            return any(_eval(v, values, source) for v in items)
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return not _eval(operand, values, source)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -_eval(operand, values, source)
        case ast.Compare(left=left, ops=ops, comparators=rights):
            current = _eval(left, values, source)
            for op, right in zip(ops, rights, strict=True):
                other = _eval(right, values, source)
                if type(op) not in _COMPARE or not _COMPARE[type(op)](current, other):
                    return False
                current = other
            return True
        case ast.Call(func=ast.Name(id=name), args=[arg]) if name in _CASTS:
            return _CASTS[name](_eval(arg, values, source))
        case ast.Subscript(
            value=ast.Attribute(value=ast.Name(id="inputs"), attr="parameter_values"),
            slice=ast.Constant(value=key),
        ):
            return values[key]
        case ast.List(elts=items):
            return [_eval(v, values, source) for v in items]
    raise ConditionError(f"unsupported expression {ast.unparse(node)!r} in condition {source!r}")
