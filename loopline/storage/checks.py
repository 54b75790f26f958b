"""What monitoring remembers: every check, and retraining triggers with their life cycle.

In the platform's database (:mod:`loopline.storage.tables`), so monitors on several hosts share
it. A check covers a range of prediction numbers. A model has at most one open trigger
(pending, running or submitted): new evidence joins it instead of starting a second
retraining. Starting a run is a claim with a lease: the claimer renews it while the run
goes on, and a monitor that finds a lease expired (its holder was killed) takes the
trigger over. A run handed to Kubeflow or a Prefect deployment stays ``submitted`` until
a monitor records how it ended: promoted, refused or failed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from loopline.storage.database import Database
from loopline.storage.tables import OPEN_TRIGGER_STATES, checks, triggers


@dataclass(frozen=True)
class Trigger:
    id: int
    model_name: str
    model_version: str
    first_seq: int  # labels count from this prediction on
    reasons: list[str]
    report: str
    state: str  # pending running submitted | promoted refused failed superseded
    created: float
    updated: float
    result: dict | None
    lease_owner: str | None = None
    lease_expires: float | None = None
    run_ref: dict | None = None

    @property
    def held(self) -> list[str]:
        """Why a pending trigger may not start yet (its labels failed a check)."""
        if self.state != "pending" or not self.result:
            return []
        return list(self.result.get("held", []))


class MonitorState:
    def __init__(self, database: Database):
        self.database = database

    # -- checks -------------------------------------------------------------------------

    def last_check(self, model_name: str) -> dict | None:

        with self.database.read() as connection:
            row = (
                connection.execute(
                    select(checks)
                    .where(checks.c.model_name == model_name)
                    .order_by(checks.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        found = {
            k: row[k] for k in ("ts", "model_version", "first_seq", "last_seq", "rows", "verdict")
        }
        return {**found, "summary": json.loads(row["summary"])}

    def record_check(
        self,
        model_name: str,
        version: str,
        first_seq: int,
        last_seq: int,
        rows: int,
        verdict: str,
        summary: dict,
    ) -> None:
        with self.database.write() as connection:
            connection.execute(
                checks.insert().values(
                    ts=time.time(),
                    model_name=model_name,
                    model_version=version,
                    first_seq=first_seq,
                    last_seq=last_seq,
                    rows=rows,
                    verdict=verdict,
                    summary=json.dumps(summary, default=str),
                )
            )

    # -- triggers -----------------------------------------------------------------------

    def raise_trigger(
        self, model_name: str, version: str, first_seq: int, reasons: list[str], report: str
    ) -> tuple[Trigger, str]:
        """A new pending trigger (``"new"``), or the model's open one with these reasons
        added (``"joined"``): one drift episode, one retraining."""

        for _ in range(3):
            try:
                return self._raise(model_name, version, first_seq, reasons, report)
            except IntegrityError:  # another monitor opened one between our read and insert
                continue
        raise RuntimeError(f"could not record a trigger for {model_name}")

    def _raise(self, model_name, version, first_seq, reasons, report) -> tuple[Trigger, str]:

        now = time.time()
        with self.database.write() as connection:
            row = (
                connection.execute(
                    select(triggers)
                    .where(
                        triggers.c.model_name == model_name,
                        triggers.c.state.in_(OPEN_TRIGGER_STATES),
                    )
                    .with_for_update()  # joiners take turns: no reason is lost (PostgreSQL)
                )
                .mappings()
                .first()
            )
            if row is not None:
                known = json.loads(row["reasons"])
                joined = known + [r for r in reasons if r not in known]
                connection.execute(
                    triggers.update()
                    .where(triggers.c.id == row["id"])
                    .values(reasons=json.dumps(joined), updated=now)
                )
                return self._get(connection, row["id"]), "joined"
            new_id = connection.execute(
                triggers.insert().values(
                    model_name=model_name,
                    model_version=version,
                    first_seq=first_seq,
                    reasons=json.dumps(reasons),
                    report=report,
                    state="pending",
                    created=now,
                    updated=now,
                )
            ).inserted_primary_key[0]
            return self._get(connection, new_id), "new"

    def claim(self, trigger_id: int, owner: str, lease_s: float) -> bool:
        """Take a pending trigger, or a running one whose lease expired; exactly one
        caller gets True."""

        now = time.time()
        with self.database.write() as connection:
            taken = connection.execute(
                triggers.update()
                .where(
                    triggers.c.id == trigger_id,
                    or_(
                        triggers.c.state == "pending",
                        and_(triggers.c.state == "running", triggers.c.lease_expires < now),
                    ),
                )
                .values(
                    state="running", lease_owner=owner, lease_expires=now + lease_s, updated=now
                )
            ).rowcount
        return taken == 1

    def renew(self, trigger_id: int, owner: str, lease_s: float) -> bool:
        now = time.time()
        with self.database.write() as connection:
            return (
                connection.execute(
                    triggers.update()
                    .where(
                        triggers.c.id == trigger_id,
                        triggers.c.lease_owner == owner,
                        triggers.c.state == "running",
                    )
                    .values(lease_expires=now + lease_s, updated=now)
                ).rowcount
                == 1
            )

    def submitted(self, trigger_id: int, run_ref: dict) -> None:
        """A run handed to another engine; its outcome is recorded once it ends."""
        self._set(
            trigger_id,
            state="submitted",
            run_ref=json.dumps(run_ref),
            lease_owner=None,
            lease_expires=None,
        )

    def hold(self, trigger_id: int, reasons: list[str]) -> bool:
        """Keep a pending trigger from starting, for ``reasons`` (label checks that
        failed); an empty list lifts the hold. True when the reasons changed."""
        current = self.trigger(trigger_id)
        before = (current.result or {}).get("held", []) if current else []
        if before == reasons:
            return False
        self._set(trigger_id, result=json.dumps({"held": reasons}) if reasons else None)
        return True

    def finish(self, trigger_id: int, state: str, result: dict) -> None:
        self._set(
            trigger_id,
            state=state,
            result=json.dumps(result, default=str),
            lease_owner=None,
            lease_expires=None,
        )

    def trigger(self, trigger_id: int) -> Trigger | None:
        with self.database.read() as connection:
            return self._get(connection, trigger_id)

    def triggers(self, model_name: str, state: str | None = None) -> list[Trigger]:

        query = select(triggers).where(triggers.c.model_name == model_name)
        if state is not None:
            query = query.where(triggers.c.state == state)
        with self.database.read() as connection:
            rows = connection.execute(query.order_by(triggers.c.id)).mappings().all()
        return [_trigger(r) for r in rows]

    def trigger_counts(self, model_name: str) -> dict[str, int]:
        """How many of the model's triggers are in each state."""

        query = (
            select(triggers.c.state, func.count())
            .where(triggers.c.model_name == model_name)
            .group_by(triggers.c.state)
        )
        with self.database.read() as connection:
            return {state: count for state, count in connection.execute(query)}

    def open_trigger(self, model_name: str) -> Trigger | None:
        found = [t for t in self.triggers(model_name) if t.state in OPEN_TRIGGER_STATES]
        return found[0] if found else None

    def last_finished(self, model_name: str) -> float | None:
        """When the model's latest retraining ended (for the cooldown)."""

        with self.database.read() as connection:
            return connection.execute(
                select(func.max(triggers.c.updated)).where(
                    triggers.c.model_name == model_name,
                    triggers.c.state.not_in(OPEN_TRIGGER_STATES),
                )
            ).scalar()

    def _set(self, trigger_id: int, **values) -> None:
        with self.database.write() as connection:
            connection.execute(
                triggers.update()
                .where(triggers.c.id == trigger_id)
                .values(updated=time.time(), **values)
            )

    @staticmethod
    def _get(connection, trigger_id: int) -> Trigger | None:

        row = (
            connection.execute(select(triggers).where(triggers.c.id == trigger_id))
            .mappings()
            .first()
        )
        return _trigger(row) if row is not None else None


def _trigger(row) -> Trigger:
    return Trigger(
        id=row["id"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        first_seq=row["first_seq"],
        reasons=json.loads(row["reasons"]),
        report=row["report"],
        state=row["state"],
        created=row["created"],
        updated=row["updated"],
        result=json.loads(row["result"]) if row["result"] else None,
        lease_owner=row["lease_owner"],
        lease_expires=row["lease_expires"],
        run_ref=json.loads(row["run_ref"]) if row["run_ref"] else None,
    )
