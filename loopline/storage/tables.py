"""Every table of the platform's state, in one schema: SQLAlchemy Core, the same SQL on
SQLite and PostgreSQL.

- ``predictions``: every served answer, one row per instance, numbered by ``seq``. The
  numbers come from the ``counters`` row in the writer's own transaction, which holds
  that row until it commits: committed rows always form a prefix 1..N, so a monitoring
  window is a range of numbers and nothing is skipped or judged twice, whatever the
  replicas' clocks say.
- ``requests``: one row per request id, with a digest of its inputs, so a reused id is
  either an idempotent retry (same inputs) or a conflict (other inputs).
- ``feedback``: ground-truth labels by (request id, item): the first label, who sent it
  and when, the latest label, and how many times a different one came. A label is never
  overwritten; conflicting items are left out of quality and retraining by default
  (``LOOPLINE_LABEL_CONFLICTS``).
- ``label_events``: every label as it arrived, with its source: appended, never changed.
- ``checks`` and ``triggers``: what monitoring judged, and the retrainings it started. At
  most one trigger per model is open (pending, running or submitted): a unique index.
- ``catalog_components`` and ``catalog_uses``: the component catalog. A (name, version)
  row is written once and never changed, but for its deprecation note; a use is a
  pipeline whose lock file pins a version.

A change to any table is a new migration in ``loopline/storage/migrations`` (Alembic) and a new
entry at the end of ``REVISIONS``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

REVISIONS = ("0001", "0002", "0003")  # oldest first; the last is what this code needs
OPEN_TRIGGER_STATES = ("pending", "running", "submitted")

metadata = MetaData()

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

requests = Table(
    "requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("ts", Float, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("digest", String(64), nullable=False),  # sha256 of the parsed inputs
    Column("items", Integer, nullable=False),
)

predictions = Table(
    "predictions",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("request_id", String(128), nullable=False),
    Column("item", Integer, nullable=False),
    Column("ts", Float, nullable=False),  # the replica's clock: for people, not windows
    Column("model_version", String(64), nullable=False),
    Column("inputs", LargeBinary, nullable=False),  # float32 values, in feature order
    Column("label", String(256), nullable=False),
    Column("probabilities", LargeBinary, nullable=False),  # float64 values
    UniqueConstraint("request_id", "item", name="predictions_request_item"),
)
Index("predictions_version_seq", predictions.c.model_version, predictions.c.seq)

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(128), nullable=False),
    Column("item", Integer, nullable=False),
    Column("label", String(256), nullable=False),  # the first label
    Column("ts", Float, nullable=False),
    Column("source", String(128), nullable=False, server_default=""),  # who sent the first
    Column("latest", String(256), nullable=False, server_default=""),
    Column("conflicts", Integer, nullable=False, server_default="0"),  # different labels since
    PrimaryKeyConstraint("request_id", "item", name="feedback_pk"),
)

label_events = Table(
    "label_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("item", Integer, nullable=False),
    Column("label", String(256), nullable=False),
    Column("source", String(128), nullable=False),
    Column("ts", Float, nullable=False),
)
Index("label_events_source", label_events.c.source, label_events.c.id)

checks = Table(
    "checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("model_name", String(256), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("first_seq", BigInteger, nullable=False),  # the window: first_seq..last_seq
    Column("last_seq", BigInteger, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("summary", Text, nullable=False),  # JSON
)
Index("checks_model", checks.c.model_name, checks.c.id)

triggers = Table(
    "triggers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(256), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("first_seq", BigInteger, nullable=False),  # labels count from this prediction on
    Column("reasons", Text, nullable=False),  # JSON list; later evidence is appended
    Column("report", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending running submitted promoted ...
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("result", Text),  # JSON
    Column("lease_owner", String(128)),
    Column("lease_expires", Float),
    Column("run_ref", Text),  # JSON: engine and run id of a submitted retraining
)
Index(
    "triggers_one_open_per_model",
    triggers.c.model_name,
    unique=True,
    sqlite_where=triggers.c.state.in_(OPEN_TRIGGER_STATES),
    postgresql_where=triggers.c.state.in_(OPEN_TRIGGER_STATES),
)

catalog_components = Table(
    "catalog_components",
    metadata,
    Column("name", String(128), nullable=False),
    Column("version", String(32), nullable=False),
    Column("major", Integer, nullable=False),
    Column("minor", Integer, nullable=False),
    Column("patch", Integer, nullable=False),
    Column("owner", String(256), nullable=False),
    Column("description", Text, nullable=False),
    Column("digest", String(64), nullable=False),  # sha256 of component.py
    Column("source", Text, nullable=False),
    Column("component_yaml", Text, nullable=False),  # KFP component YAML
    Column("interface", Text, nullable=False),  # JSON
    Column("changelog", Text, nullable=False),
    Column("report", Text, nullable=False),  # JSON: the check report it passed
    Column("published", Float, nullable=False),
    Column("deprecated", Text),  # why, and what to use instead; NULL while current
    PrimaryKeyConstraint("name", "version", name="catalog_components_pk"),
)

catalog_uses = Table(
    "catalog_uses",
    metadata,
    Column("pipeline", String(512), nullable=False),  # the pipeline file's lock file
    Column("name", String(128), nullable=False),
    Column("version", String(32), nullable=False),
    Column("ts", Float, nullable=False),
    PrimaryKeyConstraint("pipeline", "name", name="catalog_uses_pk"),
)
