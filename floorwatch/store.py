"""The one store: SQLAlchemy 2 Core tables, Alembic migrations and a small typed API.

SQLite (WAL) is the embedded default, PostgreSQL the production store; both run the same
schema, created by the migrations in ``floorwatch/migrations`` (``upgrade(url)``)::

    probe_results    every probe outcome, written in bulk by the sweeps
    incidents        at most one not-resolved incident per (target, fault_kind)
    incident_events  each incident's timeline
    actions          every runbook step taken, with its evidence
    notifications    the outbox: one row per (idempotency_key), retried until delivered
    audit_log        append-only (database triggers), hash-chained
    roster           the people who may act: role, encrypted TOTP secret, last code step used

A store that cannot be reached is a ``StoreError`` naming the URL (password masked) and the
operation; SQLAlchemy's errors never leave this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    inspect,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.elements import ColumnElement

from floorwatch.errors import StoreError, UnknownNameError
from floorwatch.results import ProbeResult
from floorwatch.security import ROLES

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used (migrations, revisions): every flow run process opens
# the store, and importing alembic (with mako and each dialect's DDL) would cost it ~0.3 s.

DATABASE_URL_ENV: Final = "FLOORWATCH_DATABASE_URL"
HOME_ENV: Final = "FLOORWATCH_HOME"
DEFAULT_HOME: Final = ".floorwatch"
DB_FILE: Final = "floorwatch.db"
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
PG_CONNECT_TIMEOUT_S: Final = 10
GENESIS_HASH: Final = "0" * 64  # prev_hash of the first audit entry

IncidentState = Literal["open", "acknowledged", "remediating", "resolved", "escalated"]
ActionOutcome = Literal["planned", "succeeded", "failed", "skipped", "rolled_back"]
NotificationState = Literal["pending", "delivered", "failed"]
INCIDENT_STATES: Final = ("open", "acknowledged", "remediating", "resolved", "escalated")
ACTION_OUTCOMES: Final = ("planned", "succeeded", "failed", "skipped", "rolled_back")
NOTIFICATION_STATES: Final = ("pending", "delivered", "failed")
CLOSED_STATE: Final = "resolved"
# The timestamp column an incident state sets when entered.
STATE_TIMESTAMP: Final[dict[str, str]] = {
    "acknowledged": "acknowledged_at",
    "remediating": "remediation_started_at",
    "resolved": "closed_at",
}


# --------------------------------------------------------------------------- schema


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no time zones: values are stored as naive UTC and come back tagged UTC.
    Naive datetimes are refused on the way in, since their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use a UTC-aware one")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact); SQLite's JSON (text) elsewhere.
JsonDoc = JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


probe_results = Table(
    "probe_results",
    metadata,
    Column("id", Id, primary_key=True),
    Column("target", String(200), nullable=False),
    Column("zone", String(100), nullable=False),
    Column("probe_kind", String(50), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("ok", Boolean(), nullable=False),
    Column("latency_ms", Float(), nullable=True),
    Column("values", JsonDoc, nullable=False),
    Column("error_class", String(100), nullable=True),
    Column("error_message", Text(), nullable=True),
    Column("faults", JsonDoc, nullable=False),
    Column("probe_id", String(300), nullable=False),
    Index(None, "target", "ts"),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Id, primary_key=True),
    Column("target", String(200), nullable=False),
    Column("zone", String(100), nullable=False),
    Column("fault_kind", String(100), nullable=False),
    Column("state", String(20), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("summary", Text(), nullable=False),
    Column("parent_incident_id", Id, ForeignKey("incidents.id"), nullable=True),
    Column("onset_at", UtcDateTime(), nullable=False),
    Column("detected_at", UtcDateTime(), nullable=False),
    Column("acknowledged_at", UtcDateTime(), nullable=True),
    Column("remediation_started_at", UtcDateTime(), nullable=True),
    Column("recovered_at", UtcDateTime(), nullable=True),
    Column("closed_at", UtcDateTime(), nullable=True),
    Column("automatic", Boolean(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint(_in("state", INCIDENT_STATES), name="state"),
)
# At most one incident not yet resolved per target and fault: detection relies on it.
Index(
    "uq_incidents_one_open",
    incidents.c.target,
    incidents.c.fault_kind,
    unique=True,
    sqlite_where=incidents.c.state != literal_column(f"'{CLOSED_STATE}'"),
    postgresql_where=incidents.c.state != literal_column(f"'{CLOSED_STATE}'"),
)

incident_events = Table(
    "incident_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("message", Text(), nullable=False),
    Column("data", JsonDoc, nullable=False),
    Index(None, "incident_id", "ts"),
)

actions = Table(
    "actions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=True),
    Column("runbook", String(100), nullable=False),
    Column("flow_run_id", String(64), nullable=True),
    Column("step", String(100), nullable=False),
    Column("parameters", JsonDoc, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("output", Text(), nullable=False),
    Column("evidence", JsonDoc, nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("duration_ms", Float(), nullable=True),
    Column("target", String(200), nullable=True),
    Column("automatic", Boolean(), nullable=False),
    CheckConstraint(_in("outcome", ACTION_OUTCOMES), name="outcome"),
    Index(None, "incident_id"),
    Index(None, "target", "started_at"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Id, primary_key=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=True),
    Column("event", String(100), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("payload", JsonDoc, nullable=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=True),
    Column("last_error", Text(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime(), nullable=True),
    Column("delivery_ref", String(200), nullable=True),  # the channel's id for the message
    Column("thread_ref", JsonDoc, nullable=True),  # the thread the message started, if any
    Column("locked_until", UtcDateTime(), nullable=True),  # a delivery run's lease
    CheckConstraint(_in("state", NOTIFICATION_STATES), name="state"),
    Index(None, "state", "next_attempt_at"),
    Index(None, "incident_id", "channel"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True),
    Column("ts", UtcDateTime(), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("details", JsonDoc, nullable=False),
    # Unique prev_hash makes a fork impossible: each entry has exactly one successor.
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),
)

roster = Table(
    "roster",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(20), nullable=False),
    # Encrypted by floorwatch.roster (AES-GCM, key outside the store); never the plain secret.
    Column("totp_secret", Text(), nullable=True),
    Column("last_used_step", BigInteger(), nullable=True),  # replay protection
    Column("added_at", UtcDateTime(), nullable=False),
    Column("enrolled_at", UtcDateTime(), nullable=True),
    Column("removed_at", UtcDateTime(), nullable=True),  # kept: the audit log names people
    CheckConstraint(_in("role", ROLES), name="role"),
)

# A target taken out of Floorwatch's hands at run time (a fenced primary): no incident opens
# for it or what runs on it, and no runbook acts on it, until a person releases it.
holds = Table(
    "holds",
    metadata,
    Column("id", Id, primary_key=True),
    Column("target", String(200), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=True),
    Column("set_by", String(100), nullable=False),
    Column("set_at", UtcDateTime(), nullable=False),
    Column("released_at", UtcDateTime(), nullable=True),
    Column("released_by", String(100), nullable=True),
)
Index(
    "uq_holds_one_active",
    holds.c.target,
    unique=True,
    sqlite_where=literal_column("released_at IS NULL"),
    postgresql_where=literal_column("released_at IS NULL"),
)

TABLES: Final = (
    probe_results, incidents, incident_events, actions, notifications, audit_log, roster, holds
)


# --------------------------------------------------------------------------- row models


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The stored row is the domain's probe result (``floorwatch.results``).
ProbeResultRow = ProbeResult


class IncidentRow(_Row):
    """An incident as stored."""

    id: int
    target: str
    zone: str
    fault_kind: str
    state: IncidentState
    severity: str
    summary: str
    parent_incident_id: int | None
    onset_at: datetime
    detected_at: datetime
    acknowledged_at: datetime | None
    remediation_started_at: datetime | None
    recovered_at: datetime | None
    closed_at: datetime | None
    automatic: bool
    created_at: datetime
    updated_at: datetime


class IncidentEventRow(_Row):
    """One entry of an incident's timeline."""

    id: int
    incident_id: int
    ts: datetime
    kind: str
    actor: str
    message: str
    data: dict[str, Any]


class NotificationRow(_Row):
    """One outbox entry."""

    id: int
    incident_id: int | None
    event: str
    channel: str
    idempotency_key: str
    payload: dict[str, Any]
    state: NotificationState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    delivery_ref: str | None
    thread_ref: dict[str, Any] | None
    locked_until: datetime | None


class AuditEntry(_Row):
    """One audit log entry, linked to its predecessor by ``prev_hash``."""

    id: int
    ts: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditFault(_Row):
    """The first place the audit chain is broken: ``entry_id`` names the first bad row (or,
    for a deletion, the first missing id) and ``message`` says what was done to it."""

    entry_id: int
    kind: Literal["edited", "deleted", "reordered", "rewritten"]
    message: str


class RosterRow(_Row):
    """A person on the roster as stored; ``totp_secret`` is the encrypted secret."""

    name: str
    role: str
    totp_secret: str | None = Field(default=None, repr=False)
    last_used_step: int | None
    added_at: datetime
    enrolled_at: datetime | None
    removed_at: datetime | None


class HoldRow(_Row):
    """A hold on a target; active while ``released_at`` is None."""

    id: int
    target: str
    reason: str
    incident_id: int | None
    set_by: str
    set_at: datetime
    released_at: datetime | None
    released_by: str | None


# --------------------------------------------------------------------------- engine & URL


def database_url(explicit: str | None = None) -> str:
    """The store URL: ``explicit``, else ``$FLOORWATCH_DATABASE_URL``, else SQLite at
    ``$FLOORWATCH_HOME/floorwatch.db`` (``FLOORWATCH_HOME`` defaults to ``./.floorwatch``)."""
    if explicit:
        return explicit
    from_env = os.environ.get(DATABASE_URL_ENV, "").strip()
    if from_env:
        return from_env
    home = Path(os.environ.get(HOME_ENV, "").strip() or DEFAULT_HOME).absolute()
    return f"sqlite:///{home / DB_FILE}"


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to log)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout per connection,
    and its folder is created. Raises ``StoreError`` for an unusable URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {mask_url(url)!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql" and "connect_timeout" not in parsed.query:
        # An unreachable server must fail in seconds, not the OS's minutes.
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of {parsed.database}: {exc}") from exc
    try:
        engine = create_engine(parsed, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {mask_url(url)!r}: {exc}") from exc
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    try:
        # WAL lets readers (reports, the UI) run while a sweep writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


_T = TypeVar("_T")


def _guard(url: str, doing: str, fn: Callable[[], _T]) -> _T:
    """Run ``fn``, translating a store outage into a ``StoreError``."""
    try:
        return fn()
    except (OperationalError, InterfaceError) as exc:
        raise StoreError(
            f"store unavailable at {mask_url(url)} while {doing}: {_reason(exc)}"
        ) from exc


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


# --------------------------------------------------------------------------- migrations


MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations, without an alembic.ini; env.py runs on
    ``connection`` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        # Handing over the connection keeps the URL (and its password) out of configparser.
        config.attributes["connection"] = connection
    return config


def upgrade(url: str, revision: str = "head") -> str:
    """Migrate the store at ``url`` to ``revision`` (a no-op when already there); returns the
    revision now current."""
    engine = make_engine(url)

    from alembic import command

    def run() -> str:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
        return current_revision(url) or ""

    try:
        return _guard(url, "migrating", run)
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest migration shipped with this version of Floorwatch."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError("no migrations found in floorwatch/migrations")
    return head


def current_revision(url: str) -> str | None:
    """The migration revision of the store at ``url``; ``None`` when never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)

    def run() -> str | None:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    try:
        return _guard(url, "reading the schema revision", run)
    finally:
        engine.dispose()


def db_info(url: str) -> dict[str, Any]:
    """What the store at ``url`` is: masked URL, backend, SQLite path, revision (current and
    shipped head) and row counts per table (``None`` for a table not created yet)."""
    engine = make_engine(url)
    parsed = engine.url
    backend = parsed.get_backend_name()

    def run() -> dict[str, int | None]:
        with engine.connect() as conn:
            existing = set(inspect(conn).get_table_names())
            return {
                t.name: (
                    int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                    if t.name in existing
                    else None
                )
                for t in TABLES
            }

    try:
        counts = _guard(url, "counting rows", run)
    finally:
        engine.dispose()
    return {
        "url": mask_url(url),
        "backend": backend,
        "path": str(Path(parsed.database).absolute())
        if backend == "sqlite" and parsed.database and parsed.database != ":memory:"
        else None,
        "revision": current_revision(url),
        "head": head_revision(),
        "tables": counts,
    }


# --------------------------------------------------------------------------- the store


def _result(row: Any) -> ProbeResult:
    data = dict(row)
    data["faults"] = tuple(data.get("faults") or ())
    return ProbeResult.model_validate(data)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: naive datetime {value.isoformat()}; use a UTC-aware one")
    return value.astimezone(UTC)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): what the audit hash is computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def audit_hash(
    *,
    ts: datetime,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """sha256 of the canonical JSON of an audit entry, its predecessor's hash included."""
    entry = {
        "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": dict(details),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(entry).encode("utf-8")).hexdigest()


def _short(digest: str) -> str:
    return f"{digest[:12]}…"


def first_chain_fault(entries: Sequence[AuditEntry]) -> AuditFault | None:
    """The first break in an audit chain read in id order, or None when it is intact.

    Each entry is checked against its own hash (an edit shows there) and then against its
    predecessor's (a deletion, a reordering or a re-hashed edit shows there). A gap in the ids
    whose links still hold is not a fault: PostgreSQL skips the id of a rolled-back append.
    """
    by_hash = {entry.hash: entry for entry in entries}
    prev: AuditEntry | None = None
    for entry in sorted(entries, key=lambda e: e.id):
        expected = audit_hash(
            ts=entry.ts,
            actor=entry.actor,
            action=entry.action,
            subject=entry.subject,
            details=entry.details,
            prev_hash=entry.prev_hash,
        )
        if entry.hash != expected:
            return AuditFault(
                entry_id=entry.id,
                kind="edited",
                message=f"audit entry #{entry.id} was edited or forged: its content does not "
                f"match its hash {_short(entry.hash)}",
            )
        want = prev.hash if prev is not None else GENESIS_HASH
        if entry.prev_hash != want:
            return _link_fault(entry, prev, by_hash.get(entry.prev_hash))
        prev = entry
    return None


def _link_fault(
    entry: AuditEntry, prev: AuditEntry | None, linked: AuditEntry | None
) -> AuditFault:
    """Name what broke the link from ``entry`` back to ``prev`` (None: the chain's start)."""
    after = f"#{prev.id}" if prev is not None else "the start of the log"
    if linked is not None and linked.id > entry.id:
        return AuditFault(
            entry_id=entry.id,
            kind="reordered",
            message=f"audit entry #{entry.id} is out of order: it follows #{linked.id}, which "
            f"is stored after it, not {after} (rows were reordered)",
        )
    if linked is not None:
        return AuditFault(
            entry_id=entry.id,
            kind="reordered",
            message=f"audit entry #{entry.id} follows #{linked.id}, not {after} "
            f"(rows were moved or inserted)",
        )
    first_missing = prev.id + 1 if prev is not None else 1
    if entry.id > first_missing:
        gone = (
            f"#{first_missing}"
            if entry.id - 1 == first_missing
            else f"#{first_missing}..#{entry.id - 1}"
        )
        return AuditFault(
            entry_id=first_missing,
            kind="deleted",
            message=f"audit entry {gone} was deleted: #{entry.id} links to "
            f"{_short(entry.prev_hash)}, which no entry has (expected {after})",
        )
    if prev is None:
        return AuditFault(
            entry_id=entry.id,
            kind="deleted",
            message=f"audit entry #{entry.id} does not start the chain: it links to "
            f"{_short(entry.prev_hash)}, which no entry has (earlier entries were deleted)",
        )
    return AuditFault(
        entry_id=prev.id,
        kind="rewritten",
        message=f"audit entry #{prev.id} was rewritten (edited and re-hashed) or replaced: "
        f"#{entry.id} links to {_short(entry.prev_hash)}, not to #{prev.id}'s "
        f"{_short(prev.hash)}",
    )


class Store:
    """Typed reads and writes over one database; safe to share between threads."""

    def __init__(self, url: str | None = None) -> None:
        self.url = database_url(url)
        self.engine = make_engine(self.url)
        self.backend = self.engine.dialect.name

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, doing: str) -> Iterator[Connection]:
        """One transaction; an outage becomes a ``StoreError`` naming ``doing``."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise StoreError(
                f"store unavailable at {mask_url(self.url)} while {doing}: {_reason(exc)}"
            ) from exc

    # ------------------------------------------------------------------ probe results

    def insert_probe_results(self, rows: Sequence[ProbeResultRow | Mapping[str, Any]]) -> int:
        """Insert ``rows`` in one transaction with one executemany; returns the count."""
        params: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            if not isinstance(row, ProbeResultRow):
                try:
                    row = ProbeResultRow.model_validate(row)
                except ValidationError as exc:
                    raise ValueError(f"probe result row {index} is invalid: {exc}") from exc
            # Built by hand: model_dump costs several times more on 100,000 rows.
            params.append(
                {
                    "target": row.target,
                    "zone": row.zone,
                    "probe_kind": row.probe_kind,
                    "ts": row.ts,
                    "ok": row.ok,
                    "latency_ms": row.latency_ms,
                    "values": row.values,
                    "error_class": row.error_class,
                    "error_message": row.error_message,
                    "faults": list(row.faults),
                    "probe_id": row.probe_id,
                }
            )
        if not params:
            return 0
        with self._tx(f"inserting {len(params)} probe results") as conn:
            conn.execute(probe_results.insert(), params)
        return len(params)

    def recent_results(self, target: str, limit: int = 100) -> list[ProbeResultRow]:
        """The newest ``limit`` results of ``target``, newest first."""
        t = probe_results
        query = (
            select(*(c for c in t.c if c.name != "id"))
            .where(t.c.target == target)
            .order_by(t.c.ts.desc(), t.c.id.desc())
            .limit(limit)
        )
        with self._tx(f"reading results of {target}") as conn:
            return [_result(r) for r in conn.execute(query).mappings()]

    def history(
        self, targets: Sequence[str], per_target: int = 30, since: datetime | None = None
    ) -> dict[str, list[ProbeResult]]:
        """The newest ``per_target`` results of each target (all its probes), oldest first:
        what detection reads. One query, whatever the number of targets."""
        t = probe_results
        if not targets:
            return {}
        rank = (
            func.row_number()
            .over(partition_by=t.c.target, order_by=(t.c.ts.desc(), t.c.id.desc()))
            .label("rank")
        )
        conditions: list[ColumnElement[bool]] = [t.c.target.in_(list(targets))]
        if since is not None:
            conditions.append(t.c.ts >= _aware(since, "since"))
        ranked = select(*(c for c in t.c), rank).where(*conditions).subquery()
        query = (
            select(*(c for c in ranked.c if c.name not in ("id", "rank")))
            .where(ranked.c.rank <= per_target)
            .order_by(ranked.c.target, ranked.c.ts, ranked.c.id)
        )
        found: dict[str, list[ProbeResult]] = {}
        with self._tx(f"reading the history of {len(targets)} targets") as conn:
            for row in conn.execute(query).mappings():
                found.setdefault(row["target"], []).append(_result(row))
        return found

    def latest_results(self, since: datetime) -> list[ProbeResult]:
        """The newest result of every (target, probe) seen since ``since``."""
        t = probe_results
        rank = (
            func.row_number()
            .over(partition_by=(t.c.target, t.c.probe_id), order_by=(t.c.ts.desc(), t.c.id.desc()))
            .label("rank")
        )
        ranked = select(*(c for c in t.c), rank).where(t.c.ts >= _aware(since, "since")).subquery()
        query = select(*(c for c in ranked.c if c.name not in ("id", "rank"))).where(
            ranked.c.rank == 1
        )
        with self._tx("reading the latest results") as conn:
            return [_result(r) for r in conn.execute(query).mappings()]

    def unresolved_incidents(self, targets: Sequence[str] | None = None) -> list[IncidentRow]:
        """Every incident not yet resolved, oldest first (optionally of some targets only)."""
        query = select(incidents).where(incidents.c.state != CLOSED_STATE)
        if targets is not None:
            query = query.where(incidents.c.target.in_(list(targets)))
        with self._tx("reading unresolved incidents") as conn:
            rows = conn.execute(query.order_by(incidents.c.id)).mappings().all()
        return [IncidentRow.model_validate(dict(r)) for r in rows]

    # ------------------------------------------------------------------ incidents

    def open_incident(
        self,
        *,
        target: str,
        zone: str,
        fault_kind: str,
        severity: str,
        summary: str,
        onset_at: datetime,
        detected_at: datetime,
        automatic: bool = True,
        parent_incident_id: int | None = None,
        actor: str = "floorwatch",
    ) -> IncidentRow:
        """Open an incident and its first timeline event. Raises ``StoreError`` when one is
        already open for (``target``, ``fault_kind``): see ``find_open_incident``."""
        now = _utcnow()
        detected = _aware(detected_at, "detected_at")
        values = {
            "target": target,
            "zone": zone,
            "fault_kind": fault_kind,
            "state": "open",
            "severity": severity,
            "summary": summary,
            "parent_incident_id": parent_incident_id,
            "onset_at": _aware(onset_at, "onset_at"),
            "detected_at": detected,
            "automatic": automatic,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._tx(f"opening an incident on {target}") as conn:
                incident_id = int(
                    conn.execute(incidents.insert().returning(incidents.c.id), values).scalar_one()
                )
                # The timeline starts when the fault was detected, not when it was written.
                self._add_event(conn, incident_id, "opened", summary, actor, {}, detected)
                row = conn.execute(select(incidents).where(incidents.c.id == incident_id))
                return IncidentRow.model_validate(dict(row.mappings().one()))
        except IntegrityError as exc:
            existing = self.find_open_incident(target, fault_kind)
            if existing is None:  # not the one-open rule: a bad parent id, for instance
                raise StoreError(f"cannot open incident on {target}: {_reason(exc)}") from exc
            raise StoreError(
                f"incident #{existing.id} is already {existing.state} for {target} "
                f"({fault_kind}); at most one unresolved incident per target and fault"
            ) from exc

    def find_open_incident(self, target: str, fault_kind: str) -> IncidentRow | None:
        """The unresolved incident of (``target``, ``fault_kind``), if any."""
        query = select(incidents).where(
            incidents.c.target == target,
            incidents.c.fault_kind == fault_kind,
            incidents.c.state != CLOSED_STATE,
        )
        with self._tx(f"looking up the open incident of {target}") as conn:
            row = conn.execute(query).mappings().one_or_none()
        return IncidentRow.model_validate(dict(row)) if row is not None else None

    def get_incident(self, incident_id: int) -> IncidentRow:
        """Incident ``incident_id``; ``StoreError`` when there is none."""
        with self._tx(f"reading incident #{incident_id}") as conn:
            row = (
                conn.execute(select(incidents).where(incidents.c.id == incident_id))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise StoreError(f"no incident #{incident_id}")
        return IncidentRow.model_validate(dict(row))

    def set_incident_state(
        self,
        incident_id: int,
        state: IncidentState,
        *,
        message: str,
        actor: str = "floorwatch",
        at: datetime | None = None,
        recovered_at: datetime | None = None,
    ) -> IncidentRow:
        """Move an incident to ``state``, stamping its timestamp column, and log the event.
        Transition rules live in the lifecycle logic, not here."""
        if state not in INCIDENT_STATES:
            raise ValueError(f"unknown incident state {state!r}; one of {INCIDENT_STATES}")
        when = _aware(at, "at") if at is not None else _utcnow()
        values: dict[str, Any] = {"state": state, "updated_at": when}
        if state in STATE_TIMESTAMP:
            values[STATE_TIMESTAMP[state]] = when
        if recovered_at is not None:
            values["recovered_at"] = _aware(recovered_at, "recovered_at")
        with self._tx(f"setting incident #{incident_id} {state}") as conn:
            changed = conn.execute(
                update(incidents).where(incidents.c.id == incident_id).values(values)
            ).rowcount
            if changed != 1:
                raise StoreError(f"no incident #{incident_id}")
            self._add_event(conn, incident_id, state, message, actor, {}, when)
            row = conn.execute(select(incidents).where(incidents.c.id == incident_id))
            return IncidentRow.model_validate(dict(row.mappings().one()))

    def add_event(
        self,
        incident_id: int,
        kind: str,
        message: str,
        *,
        actor: str = "floorwatch",
        data: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> int:
        """Append an event to an incident's timeline; returns its id."""
        when = _aware(ts, "ts") if ts is not None else _utcnow()
        try:
            with self._tx(f"adding a {kind} event to incident #{incident_id}") as conn:
                return self._add_event(conn, incident_id, kind, message, actor, data or {}, when)
        except IntegrityError as exc:
            raise StoreError(
                f"cannot add event to incident #{incident_id}: {_reason(exc)}"
            ) from exc

    def events(self, incident_id: int) -> list[IncidentEventRow]:
        """The timeline of an incident, oldest first."""
        e = incident_events
        query = select(e).where(e.c.incident_id == incident_id).order_by(e.c.ts, e.c.id)
        with self._tx(f"reading the timeline of incident #{incident_id}") as conn:
            return [
                IncidentEventRow.model_validate(dict(r)) for r in conn.execute(query).mappings()
            ]

    @staticmethod
    def _add_event(
        conn: Connection,
        incident_id: int,
        kind: str,
        message: str,
        actor: str,
        data: Mapping[str, Any],
        ts: datetime,
    ) -> int:
        values = {
            "incident_id": incident_id,
            "ts": ts,
            "kind": kind,
            "actor": actor,
            "message": message,
            "data": dict(data),
        }
        result = conn.execute(incident_events.insert().returning(incident_events.c.id), values)
        return int(result.scalar_one())

    # ------------------------------------------------------------------ actions

    def record_action(
        self,
        *,
        runbook: str,
        step: str,
        outcome: ActionOutcome,
        started_at: datetime,
        finished_at: datetime | None = None,
        incident_id: int | None = None,
        flow_run_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        output: str = "",
        evidence: Mapping[str, Any] | None = None,
        target: str | None = None,
        automatic: bool = False,
    ) -> int:
        """Record one runbook step; ``duration_ms`` is derived. Returns the action id.
        ``automatic`` steps on ``target`` count against its remediation budget."""
        if outcome not in ACTION_OUTCOMES:
            raise ValueError(f"unknown action outcome {outcome!r}; one of {ACTION_OUTCOMES}")
        started = _aware(started_at, "started_at")
        finished = _aware(finished_at, "finished_at") if finished_at is not None else None
        values = {
            "incident_id": incident_id,
            "runbook": runbook,
            "flow_run_id": flow_run_id,
            "step": step,
            "parameters": dict(parameters or {}),
            "outcome": outcome,
            "output": output,
            "evidence": dict(evidence or {}),
            "started_at": started,
            "finished_at": finished,
            "duration_ms": (finished - started).total_seconds() * 1000 if finished else None,
            "target": target,
            "automatic": automatic,
        }
        try:
            with self._tx(f"recording {runbook}/{step}") as conn:
                result = conn.execute(actions.insert().returning(actions.c.id), values)
                return int(result.scalar_one())
        except IntegrityError as exc:
            raise StoreError(f"cannot record {runbook}/{step}: {_reason(exc)}") from exc

    def count_automatic_actions(self, target: str, since: datetime) -> int:
        """Automatic remediation actions taken on ``target`` since ``since`` (the budget)."""
        query = (
            select(func.count())
            .select_from(actions)
            .where(
                actions.c.target == target,
                actions.c.automatic.is_(True),
                actions.c.outcome.in_(("succeeded", "failed", "rolled_back")),
                actions.c.started_at >= _aware(since, "since"),
            )
        )
        with self._tx(f"counting actions on {target}") as conn:
            return int(conn.execute(query).scalar_one())

    def actions_of(self, incident_id: int) -> list[dict[str, Any]]:
        """The recorded steps of an incident, in order."""
        query = select(actions).where(actions.c.incident_id == incident_id).order_by(actions.c.id)
        with self._tx(f"reading actions of incident #{incident_id}") as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # ------------------------------------------------------------------ notification outbox

    def enqueue_notification(
        self,
        *,
        event: str,
        channel: str,
        idempotency_key: str,
        payload: Mapping[str, Any],
        incident_id: int | None = None,
    ) -> tuple[int, bool]:
        """Put a notification in the outbox unless ``idempotency_key`` is already there.
        Returns (id, created)."""
        values = {
            "incident_id": incident_id,
            "event": event,
            "channel": channel,
            "idempotency_key": idempotency_key,
            "payload": dict(payload),
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": _utcnow(),
            "created_at": _utcnow(),
        }
        dialect_insert = postgresql.insert if self.backend == "postgresql" else sqlite.insert
        statement = (
            dialect_insert(notifications)
            .values(values)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(notifications.c.id)
        )
        try:
            with self._tx(f"enqueueing notification {idempotency_key}") as conn:
                new_id = conn.execute(statement).scalar_one_or_none()
                if new_id is not None:
                    return int(new_id), True
                existing = conn.execute(
                    select(notifications.c.id).where(
                        notifications.c.idempotency_key == idempotency_key
                    )
                ).scalar_one()
                return int(existing), False
        except IntegrityError as exc:
            raise StoreError(f"cannot enqueue {idempotency_key}: {_reason(exc)}") from exc

    def pending_notifications(
        self, now: datetime | None = None, limit: int = 100
    ) -> list[NotificationRow]:
        """Pending notifications due at ``now``, oldest first."""
        n = notifications
        query = (
            select(n)
            .where(n.c.state == "pending", n.c.next_attempt_at <= (now or _utcnow()))
            .order_by(n.c.next_attempt_at, n.c.id)
            .limit(limit)
        )
        with self._tx("reading the notification outbox") as conn:
            return [NotificationRow.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def mark_notification(
        self,
        notification_id: int,
        state: NotificationState,
        *,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        delivery_ref: str | None = None,
        thread_ref: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one delivery attempt: ``delivered`` (with the channel's ``delivery_ref``
        and the ``thread_ref`` it started), ``failed`` for good, or ``pending`` again with
        ``next_attempt_at`` and the ``error`` of this attempt. Releases the lease."""
        if state not in NOTIFICATION_STATES:
            raise ValueError(f"unknown notification state {state!r}; one of {NOTIFICATION_STATES}")
        n = notifications
        values: dict[str, Any] = {
            "state": state, "attempts": n.c.attempts + 1, "locked_until": None
        }
        if state == "delivered":
            values["delivered_at"] = _utcnow()
        if error is not None:
            values["last_error"] = error
        if next_attempt_at is not None:
            values["next_attempt_at"] = _aware(next_attempt_at, "next_attempt_at")
        if delivery_ref is not None:
            values["delivery_ref"] = delivery_ref
        if thread_ref is not None:
            values["thread_ref"] = dict(thread_ref)
        with self._tx(f"marking notification #{notification_id} {state}") as conn:
            result = conn.execute(update(n).where(n.c.id == notification_id).values(values))
            if result.rowcount != 1:
                raise StoreError(f"no notification #{notification_id}")

    def notification_heads(
        self, now: datetime | None = None, limit: int = 100
    ) -> list[NotificationRow]:
        """The oldest pending notification of each (incident, channel) queue, when it is due
        at ``now`` and no delivery run holds it: what may be sent now without overtaking an
        earlier message. Rows of no incident are each their own queue."""
        n = notifications
        when = _aware(now, "now") if now is not None else _utcnow()
        # -id puts every incident-less row in a queue of its own (ids are positive).
        queue = func.coalesce(n.c.incident_id, -n.c.id)
        heads = select(func.min(n.c.id)).where(n.c.state == "pending").group_by(
            queue, n.c.channel
        )
        query = (
            select(n)
            .where(
                n.c.id.in_(heads),
                n.c.next_attempt_at <= when,
                or_(n.c.locked_until.is_(None), n.c.locked_until <= when),
            )
            .order_by(n.c.next_attempt_at, n.c.id)
            .limit(limit)
        )
        with self._tx("reading the heads of the notification queues") as conn:
            return [NotificationRow.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def claim_notification(
        self, notification_id: int, until: datetime, now: datetime | None = None
    ) -> bool:
        """Lease a pending notification to this delivery run until ``until``; False when it
        is no longer pending or another run holds it."""
        n = notifications
        when = _aware(now, "now") if now is not None else _utcnow()
        statement = (
            update(n)
            .where(
                n.c.id == notification_id,
                n.c.state == "pending",
                or_(n.c.locked_until.is_(None), n.c.locked_until <= when),
            )
            .values(locked_until=_aware(until, "until"))
        )
        with self._tx(f"claiming notification #{notification_id}") as conn:
            return bool(conn.execute(statement).rowcount == 1)

    def notification_thread(self, incident_id: int, channel: str) -> dict[str, Any] | None:
        """The thread an incident's conversation on ``channel`` lives in: the ``thread_ref``
        of its first delivered message that started one."""
        n = notifications
        query = (
            select(n.c.thread_ref)
            .where(
                n.c.incident_id == incident_id,
                n.c.channel == channel,
                n.c.state == "delivered",
                n.c.thread_ref.is_not(None),
            )
            .order_by(n.c.id)
        )
        with self._tx(f"reading the {channel} thread of incident #{incident_id}") as conn:
            for ref in conn.execute(query).scalars():
                if isinstance(ref, dict):  # a JSON null is not a thread
                    return ref
        return None

    def notifications(
        self, incident_id: int | None = None, channel: str | None = None
    ) -> list[NotificationRow]:
        """Outbox rows in queue order, optionally of one incident and/or one channel."""
        n = notifications
        query = select(n).order_by(n.c.id)
        if incident_id is not None:
            query = query.where(n.c.incident_id == incident_id)
        if channel is not None:
            query = query.where(n.c.channel == channel)
        with self._tx("reading the notification outbox") as conn:
            return [NotificationRow.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    # ------------------------------------------------------------------ audit log

    def append_audit(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> AuditEntry:
        """Append a hash-chained entry to the audit log; concurrent writers are serialised."""
        when = _aware(ts, "ts") if ts is not None else _utcnow()
        body = dict(details or {})
        try:
            canonical_json(body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"audit details for {action} are not JSON: {exc}") from exc
        with self._tx(f"appending audit entry {action}") as conn:
            self._lock_audit(conn)
            last = conn.execute(
                select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
            ).scalar_one_or_none()
            prev = last or GENESIS_HASH
            digest = audit_hash(
                ts=when, actor=actor, action=action, subject=subject, details=body, prev_hash=prev
            )
            values = {
                "ts": when,
                "actor": actor,
                "action": action,
                "subject": subject,
                "details": body,
                "prev_hash": prev,
                "hash": digest,
            }
            new_id = conn.execute(audit_log.insert().returning(audit_log.c.id), values).scalar_one()
        return AuditEntry(id=int(new_id), **values)

    def _lock_audit(self, conn: Connection) -> None:
        """Serialise audit appends so two writers never read the same last hash."""
        if self.backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('floorwatch.audit_log'))"))
        elif self.backend == "sqlite":
            # Take SQLite's write lock before reading the last hash (waits busy_timeout).
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def audit_entries(
        self, limit: int | None = None, since: datetime | None = None
    ) -> list[AuditEntry]:
        """Audit entries in chain order (oldest first); only those at or after ``since``,
        and the newest ``limit`` of them, when given."""
        query = select(audit_log).order_by(audit_log.c.id.desc())
        if since is not None:
            query = query.where(audit_log.c.ts >= _aware(since, "since"))
        if limit is not None:
            query = query.limit(limit)
        with self._tx("reading the audit log") as conn:
            rows = [AuditEntry.model_validate(dict(r)) for r in conn.execute(query).mappings()]
        return rows[::-1]

    def audit_chain_fault(self) -> tuple[int, AuditFault | None]:
        """Check every hash and link of the audit log: the entry count and the first fault
        (None when intact)."""
        entries = self.audit_entries()
        return len(entries), first_chain_fault(entries)

    def verify_audit_chain(self) -> int:
        """Check every hash and link of the audit log; returns the entry count. Raises
        ``StoreError`` naming the first bad entry (edited, deleted, reordered)."""
        count, fault = self.audit_chain_fault()
        if fault is not None:
            raise StoreError(fault.message)
        return count

    # ------------------------------------------------------------------ roster

    def add_person(self, name: str, role: str, now: datetime | None = None) -> RosterRow:
        """Put ``name`` on the roster with ``role``, not yet enrolled. A removed person comes
        back with the new role and no secret. StoreError when already on the roster."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        when = _aware(now, "now") if now is not None else _utcnow()
        r = roster
        try:
            with self._tx(f"adding {name} to the roster") as conn:
                existing = conn.execute(select(r).where(r.c.name == name)).mappings().first()
                if existing is None:
                    conn.execute(
                        r.insert(),
                        {"name": name, "role": role, "added_at": when, "last_used_step": None},
                    )
                elif existing["removed_at"] is None:
                    raise StoreError(
                        f"cannot add {name!r}: already on the roster as {existing['role']}"
                    )
                else:
                    conn.execute(
                        update(r)
                        .where(r.c.name == name, r.c.removed_at.is_not(None))
                        .values(
                            role=role,
                            totp_secret=None,
                            added_at=when,
                            enrolled_at=None,
                            removed_at=None,
                        )
                    )
                row = conn.execute(select(r).where(r.c.name == name)).mappings().one()
        except IntegrityError as exc:
            raise StoreError(f"cannot add {name!r} to the roster: {_reason(exc)}") from exc
        return RosterRow.model_validate(dict(row))

    def remove_person(self, name: str, now: datetime | None = None) -> RosterRow:
        """Take ``name`` off the roster and forget their secret; the row stays so the audit
        log's names still resolve. UnknownNameError when not on the roster."""
        when = _aware(now, "now") if now is not None else _utcnow()
        r = roster
        with self._tx(f"removing {name} from the roster") as conn:
            done = conn.execute(
                update(r)
                .where(r.c.name == name, r.c.removed_at.is_(None))
                .values(removed_at=when, totp_secret=None)
            )
            if done.rowcount != 1:
                raise UnknownNameError(f"{name!r} is not on the roster")
            row = conn.execute(select(r).where(r.c.name == name)).mappings().one()
        return RosterRow.model_validate(dict(row))

    def person(self, name: str) -> RosterRow | None:
        """The roster row of ``name`` (removed people included), or None."""
        with self._tx(f"reading {name} on the roster") as conn:
            row = conn.execute(select(roster).where(roster.c.name == name)).mappings().first()
        return RosterRow.model_validate(dict(row)) if row is not None else None

    def people(self, include_removed: bool = False) -> list[RosterRow]:
        """The roster by name; removed people only when asked."""
        query = select(roster).order_by(roster.c.name)
        if not include_removed:
            query = query.where(roster.c.removed_at.is_(None))
        with self._tx("reading the roster") as conn:
            return [RosterRow.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    # -- holds -------------------------------------------------------------------------------

    def place_hold(self, target: str, reason: str, set_by: str, incident_id: int | None = None,
                   now: datetime | None = None) -> tuple[HoldRow, bool]:
        """Hold ``target``; returns the active hold and whether this call placed it (a target
        already held keeps its first hold, reason and all)."""
        when = _aware(now, "now") if now is not None else _utcnow()
        h = holds
        active = (h.c.target == target) & h.c.released_at.is_(None)
        with self._tx(f"holding {target}") as conn:
            found = conn.execute(select(h).where(active)).mappings().first()
            placed = found is None
            if placed:
                try:
                    conn.execute(h.insert(), {
                        "target": target, "reason": reason, "incident_id": incident_id,
                        "set_by": set_by, "set_at": when,
                    })
                except IntegrityError as exc:
                    raise StoreError(f"cannot hold {target}: {_reason(exc)}") from exc
            row = conn.execute(select(h).where(active)).mappings().one()
        return HoldRow.model_validate(dict(row)), placed

    def release_hold(self, target: str, released_by: str,
                     now: datetime | None = None) -> HoldRow:
        """Release the active hold on ``target``; UnknownNameError when it has none."""
        when = _aware(now, "now") if now is not None else _utcnow()
        h = holds
        with self._tx(f"releasing the hold on {target}") as conn:
            row = conn.execute(
                select(h).where(h.c.target == target, h.c.released_at.is_(None))
            ).mappings().first()
            if row is None:
                raise UnknownNameError(f"{target!r} is not held")
            conn.execute(update(h).where(h.c.id == row["id"])
                         .values(released_at=when, released_by=released_by))
            row = conn.execute(select(h).where(h.c.id == row["id"])).mappings().one()
        return HoldRow.model_validate(dict(row))

    def active_holds(self) -> dict[str, HoldRow]:
        """Target -> its active hold."""
        with self._tx("reading holds") as conn:
            rows = conn.execute(
                select(holds).where(holds.c.released_at.is_(None)).order_by(holds.c.id)
            ).mappings().all()
        return {row["target"]: HoldRow.model_validate(dict(row)) for row in rows}

    def set_totp_secret(
        self, name: str, role: str, encrypted: str, now: datetime | None = None
    ) -> RosterRow:
        """Store the encrypted TOTP secret of ``name``, still on the roster with ``role``
        (the secret was encrypted for that role). UnknownNameError otherwise."""
        when = _aware(now, "now") if now is not None else _utcnow()
        r = roster
        with self._tx(f"enrolling {name}") as conn:
            done = conn.execute(
                update(r)
                .where(r.c.name == name, r.c.role == role, r.c.removed_at.is_(None))
                .values(totp_secret=encrypted, enrolled_at=when)
            )
            if done.rowcount != 1:
                raise UnknownNameError(f"{name!r} is not on the roster as {role}")
            row = conn.execute(select(r).where(r.c.name == name)).mappings().one()
        return RosterRow.model_validate(dict(row))

    def use_totp_step(self, name: str, step: int) -> bool:
        """Record that ``name`` used the code of time ``step``; False when that step or a
        later one was already used (a replay, possibly racing this one). Atomic."""
        r = roster
        statement = (
            update(r)
            .where(
                r.c.name == name,
                r.c.removed_at.is_(None),
                or_(r.c.last_used_step.is_(None), r.c.last_used_step < step),
            )
            .values(last_used_step=step)
        )
        with self._tx(f"spending a code of {name}") as conn:
            return bool(conn.execute(statement).rowcount == 1)
