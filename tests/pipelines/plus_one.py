"""A one-step pipeline file, as a user writes one: for `loopline run plus_one.py`."""

from kfp import dsl


@dsl.component
def add(a: int, b: int) -> int:
    return a + b


@dsl.pipeline
def plus_one(x: int = 1) -> int:
    return add(a=x, b=1).output
