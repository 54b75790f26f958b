"""Each store's SQL implementation (and both registry readers) meet their interface:
every method, with the same parameters, kinds and defaults."""

from __future__ import annotations

import inspect

import pytest

from loopline.storage import interfaces
from loopline.storage.catalog import Catalog
from loopline.storage.checks import MonitorState
from loopline.storage.feedback import FeedbackStore
from loopline.storage.predictions import PredictionLog
from loopline.storage.registry import Registry, SqliteReader

PAIRS = [
    (interfaces.PredictionStore, PredictionLog),
    (interfaces.LabelStore, FeedbackStore),
    (interfaces.CheckStore, MonitorState),
    (interfaces.ComponentStore, Catalog),
    (interfaces.RegistryReader, Registry),
    (interfaces.RegistryReader, SqliteReader),
]


def members(cls) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(function)
        for name, function in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def shape(signature: inspect.Signature) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(("interface", "implementation"), PAIRS, ids=lambda c: c.__name__)
def test_the_implementation_meets_its_interface(interface, implementation):
    wanted, found = members(interface), members(implementation)
    assert set(wanted) <= set(found), f"missing: {sorted(set(wanted) - set(found))}"
    for name, signature in wanted.items():
        assert shape(found[name]) == shape(signature), f"{implementation.__name__}.{name}"


def test_every_public_method_of_a_store_is_in_its_interface():
    """A method a store grows is part of its contract, or it is private."""
    for interface, implementation in PAIRS[:4]:
        extra = set(members(implementation)) - set(members(interface))
        assert not extra, f"{implementation.__name__} has {sorted(extra)} outside its interface"
