"""The stores' interfaces: what the floors above may ask of the platform's state.

Each store has one SQL implementation over :mod:`loopline.storage.tables`, the same
statements on SQLite and PostgreSQL (Dagster's storage keeps the same shape: an
interface, a schema module, one SQL implementation with thin dialect parts in
:class:`loopline.storage.database.Database`). A second back-end (an object store for
the log, say) implements the same interface; ``tests/storage/test_interfaces.py`` holds
every implementation to its interface, and the stores' contract tests run over SQLite
and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

from loopline.storage.registry import RegistryReader

if TYPE_CHECKING:
    import pandas as pd

    from loopline.core.semver import Version
    from loopline.storage.catalog import Entry
    from loopline.storage.checks import Trigger
    from loopline.storage.feedback import Label
    from loopline.storage.predictions import Answer, Logged


class PredictionStore(Protocol):
    """Every served answer, exactly once, numbered in commit order (``seq``)."""

    def record(self, answer: Answer) -> Logged: ...
    def submit(self, answer: Answer) -> Future: ...
    def append(self, answer: Answer, timeout: float = 30) -> Logged: ...
    def lookup(self, request_id: str) -> Answer | None: ...
    def count(self) -> int: ...
    def last_seq(self) -> int: ...
    def count_window(self, after: int, upto: int, *, model_version: str | None = None) -> int: ...
    def read_window(
        self,
        after: int = 0,
        upto: int | None = None,
        *,
        model_version: str | None = None,
        records: bool = False,
    ): ...
    def sample_window(
        self,
        after: int,
        upto: int,
        size: int,
        *,
        model_version: str | None = None,
        seed: int = 0,
        records: bool = False,
    ): ...
    def close(self) -> None: ...


class LabelStore(Protocol):
    """Ground truth attached to logged predictions, with who sent it; never overwritten."""

    def attach(self, labels: list[Label]) -> dict: ...
    def conflicting(self) -> int: ...
    def by_source(self, after: int = 0, through: int | None = None) -> pd.DataFrame: ...
    def reviewed(
        self,
        after: int,
        reviewers: tuple[str, ...],
        *,
        records: bool = False,
        through: int | None = None,
    ) -> pd.DataFrame: ...
    def accuracy(
        self, after: int = 0, upto: int | None = None, *, model_version: str | None = None
    ) -> tuple[int, int]: ...
    def errors(
        self, after: int = 0, upto: int | None = None, *, model_version: str | None = None
    ) -> tuple[int, float | None, float | None]: ...
    def labelled(
        self,
        after: int = 0,
        upto: int | None = None,
        *,
        records: bool = False,
        through: int | None = None,
    ) -> pd.DataFrame: ...


class CheckStore(Protocol):
    """Monitoring's checks, and retraining triggers with their leases and outcomes."""

    def last_check(self, model_name: str) -> dict | None: ...
    def record_check(
        self,
        model_name: str,
        version: str,
        first_seq: int,
        last_seq: int,
        rows: int,
        verdict: str,
        summary: dict,
    ) -> None: ...
    def raise_trigger(
        self, model_name: str, version: str, first_seq: int, reasons: list[str], report: str
    ) -> tuple[Trigger, str]: ...
    def claim(self, trigger_id: int, owner: str, lease_s: float) -> bool: ...
    def renew(self, trigger_id: int, owner: str, lease_s: float) -> bool: ...
    def submitted(self, trigger_id: int, run_ref: dict) -> None: ...
    def hold(self, trigger_id: int, reasons: list[str]) -> bool: ...
    def finish(self, trigger_id: int, state: str, result: dict) -> None: ...
    def trigger(self, trigger_id: int) -> Trigger | None: ...
    def triggers(self, model_name: str, state: str | None = None) -> list[Trigger]: ...
    def trigger_counts(self, model_name: str) -> dict[str, int]: ...
    def open_trigger(self, model_name: str) -> Trigger | None: ...
    def last_finished(self, model_name: str) -> float | None: ...


class ComponentStore(Protocol):
    """The component catalog's records: versions written once."""

    def publish(
        self,
        *,
        name: str,
        version: Version,
        owner: str,
        description: str,
        source: str,
        component_yaml: str,
        interface: dict,
        changelog: str,
        report: dict,
        check: Callable[[Version, dict], None] | None = None,
        check_above: Callable[[Version, dict], None] | None = None,
    ) -> Entry: ...
    def get(self, name: str, spec: str = "*") -> Entry: ...
    def versions(self, name: str) -> list[Entry]: ...
    def names(self) -> list[str]: ...
    def latest(self) -> list[Entry]: ...
    def deprecate(self, name: str, version: str, message: str) -> Entry: ...
    def record_uses(self, pipeline: str, pins: dict[str, str]) -> None: ...
    def uses(self) -> dict[str, list[tuple[str, str]]]: ...


__all__ = ["CheckStore", "ComponentStore", "LabelStore", "PredictionStore", "RegistryReader"]
