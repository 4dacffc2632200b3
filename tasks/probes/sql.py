"""SQL probe: is the game database reachable and quick, and do its bets, rounds and payments
show a money problem.

One SQLAlchemy engine per database URL and sweep (``ProbeContext.resource``); the blocking
queries run in a worker thread, in one read-only transaction, bounded three ways: the probe's
timeout around the thread, a connect timeout, and a statement timeout (PostgreSQL) or busy
timeout (SQLite) inside the database. What the collections look for, on the schema
``bets(id, round_id, player_id, amount_cents, state, placed_at, settled_at, payout_cents)``,
``rounds(id, provider, game, started_at, ended_at, total_bet_cents, total_payout_cents)``,
``payments(id, player_id, kind, amount_cents, state, created_at, updated_at, provider)``:

- stuck bets: ``pending`` and placed more than ``stuck_bets_minutes`` ago -> stuck_bets;
- rounds ended in the last hour whose ``total_payout_cents`` is not the sum of their settled
  bets' payouts -> settlement_mismatch;
- payments ``pending`` for more than ``pending_payment_minutes`` -> payment_processing_delay;
- more than ``payment_failure_rate`` of the payments decided in the last five minutes
  declined (judged from 20 decided payments on) -> payment_processing_delay.

Every time is a bound ``DateTime(timezone=True)`` parameter with an aware UTC value: SQLite
keeps times as text, and only SQLAlchemy's type renders a bound value comparable with it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from floorwatch.catalogue import FaultKind, ProbeKind
from floorwatch.errors import (
    AdapterError,
    CommandFailed,
    ConnectError,
    ProbeTimeout,
    ProtocolError,
)
from floorwatch.inventory import SqlProbe, SqlThresholds, Target
from floorwatch.results import ProbeResult, failed, now_utc, passed, probe_id
from tasks.probes import ProbeContext, register
from tasks.probes.net import latency_fault

# Rounds older than this are settled history: scanning every round ever played would grow
# without bound, and a mismatch is caught within minutes of the round's end.
SETTLEMENT_WINDOW = timedelta(hours=1)
FAILURE_WINDOW = timedelta(minutes=5)
# Below this many decided payments a decline rate is noise (2 of 3 declined is no outage).
MIN_DECIDED_PAYMENTS = 20
# Example ids kept per finding: enough for a runbook to list, small enough for a result row.
MAX_EXAMPLES = 20

Timestamp = sa.DateTime(timezone=True)

STUCK_BETS_SQL = (
    sa.text(
        "SELECT count(*) AS n, min(placed_at) AS oldest FROM bets"
        " WHERE state = 'pending' AND placed_at < :cutoff"
    )
    .bindparams(sa.bindparam("cutoff", type_=Timestamp))
    .columns(sa.column("n", sa.Integer), sa.column("oldest", Timestamp))
)
STUCK_BET_IDS_SQL = sa.text(
    "SELECT id FROM bets WHERE state = 'pending' AND placed_at < :cutoff"
    " ORDER BY placed_at, id LIMIT :limit"
).bindparams(sa.bindparam("cutoff", type_=Timestamp), sa.bindparam("limit", type_=sa.Integer))

MISMATCHED_ROUNDS_SQL = sa.text(
    "SELECT r.id, r.total_payout_cents,"
    " COALESCE(SUM(CASE WHEN b.state = 'settled' THEN COALESCE(b.payout_cents, 0) ELSE 0 END),"
    " 0) AS bets_payout_cents"
    " FROM rounds r LEFT JOIN bets b ON b.round_id = r.id"
    " WHERE r.ended_at IS NOT NULL AND r.ended_at >= :since"
    " GROUP BY r.id, r.total_payout_cents"
    " HAVING r.total_payout_cents <>"
    " COALESCE(SUM(CASE WHEN b.state = 'settled' THEN COALESCE(b.payout_cents, 0) ELSE 0 END),"
    " 0)"
    " ORDER BY r.id"
).bindparams(sa.bindparam("since", type_=Timestamp))

STUCK_PAYMENTS_SQL = (
    sa.text(
        "SELECT count(*) AS n, min(created_at) AS oldest FROM payments"
        " WHERE state = 'pending' AND created_at < :cutoff"
    )
    .bindparams(sa.bindparam("cutoff", type_=Timestamp))
    .columns(sa.column("n", sa.Integer), sa.column("oldest", Timestamp))
)
STUCK_PAYMENT_IDS_SQL = sa.text(
    "SELECT id FROM payments WHERE state = 'pending' AND created_at < :cutoff"
    " ORDER BY created_at, id LIMIT :limit"
).bindparams(sa.bindparam("cutoff", type_=Timestamp), sa.bindparam("limit", type_=sa.Integer))

PAYMENT_OUTCOMES_SQL = sa.text(
    "SELECT count(*) AS decided,"
    " COALESCE(SUM(CASE WHEN state = 'declined' THEN 1 ELSE 0 END), 0) AS declined"
    " FROM payments WHERE created_at >= :since AND state <> 'pending'"
).bindparams(sa.bindparam("since", type_=Timestamp))


# -- the engine -----------------------------------------------------------------------------


def _url(target: Target) -> sa.URL:
    if target.connection.url is None:
        raise AdapterError(target.name, "its connection names no database url")
    try:
        return sa.make_url(target.connection.url)
    except (ArgumentError, ValueError) as exc:
        # The library's message quotes the URL, password included: it is not passed on.
        raise AdapterError(target.name, "connection.url is not a valid SQLAlchemy URL") from exc


def describe_url(url: sa.URL) -> str:
    """Where a database is, for messages: never the password."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite {url.database or ':memory:'}"
    where = url.host or "localhost"
    if url.port is not None:
        where += f":{url.port}"
    return f"{url.get_backend_name()} {where}/{url.database or ''}"


def _connect_args(url: sa.URL, timeout: float) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        return {"timeout": timeout}  # seconds to wait for a writer's lock
    if url.get_backend_name() == "postgresql" and url.get_driver_name().startswith("psycopg"):
        return {"connect_timeout": max(2, math.ceil(timeout))}  # libpq counts whole seconds
    return {}


@asynccontextmanager
async def open_engine(url: sa.URL, timeout: float) -> AsyncIterator[Engine]:
    """An engine for ``url`` (connections checked before use), disposed on exit."""
    engine = sa.create_engine(
        url, pool_pre_ping=True, pool_size=2, max_overflow=2, pool_timeout=timeout,
        connect_args=_connect_args(url, timeout),
    )
    try:
        yield engine
    finally:
        await asyncio.to_thread(engine.dispose)


async def engine_for(ctx: ProbeContext, target: Target, timeout: float) -> Engine:
    """The sweep's engine for the target's database URL, created on first use."""
    url = _url(target)
    if url.get_backend_name() == "sqlite":
        _check_sqlite_file(target, url)

    def factory() -> AbstractAsyncContextManager[Engine]:
        return open_engine(url, timeout)

    try:
        return await ctx.resource(f"sql-engine:{url.render_as_string(hide_password=False)}",
                                  factory)
    except (NoSuchModuleError, ImportError) as exc:
        raise AdapterError(
            target.name, f"no database driver for {describe_url(url)}: {_reason(exc)}"
        ) from exc
    except ArgumentError as exc:
        raise AdapterError(
            target.name, f"cannot build an engine for {describe_url(url)}: {_reason(exc)}"
        ) from exc


def _check_sqlite_file(target: Target, url: sa.URL) -> None:
    # SQLite creates a missing file on connect: a wrong path would look like an empty database.
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise ConnectError(target.name, f"database file {database} does not exist")


# -- the collections ------------------------------------------------------------------------


@dataclass
class Observation:
    """What one look at the database found."""

    connect_ms: float
    latency_ms: float
    stuck_bets: int = 0
    stuck_bet_ids: list[int] = field(default_factory=list)
    oldest_stuck_bet_minutes: float | None = None
    mismatched_round_ids: list[int] = field(default_factory=list)
    mismatch_cents: int = 0
    stuck_payments: int = 0
    stuck_payment_ids: list[int] = field(default_factory=list)
    oldest_stuck_payment_minutes: float | None = None
    payments_decided: int = 0
    payments_declined: int = 0

    @property
    def decline_rate(self) -> float | None:
        """Declined share of the decided payments in the window; None when none was decided."""
        if not self.payments_decided:
            return None
        return self.payments_declined / self.payments_decided


def _reason(exc: BaseException) -> str:
    """The first line of the driver's message: no SQL text, no parameters, no URL."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(source).strip().splitlines()
    text = lines[0].strip() if lines else type(source).__name__
    return text[:300]


def _is_timeout(exc: SQLAlchemyError) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    # PostgreSQL's statement_timeout raises QueryCanceled; SQLite's busy timeout "locked".
    return type(orig).__name__ == "QueryCanceled" or "database is locked" in str(orig)


def _minutes_since(then: datetime | None, now: datetime) -> float | None:
    if then is None:
        return None
    if then.tzinfo is None:  # SQLite gives back the UTC wall time without its zone
        then = then.replace(tzinfo=UTC)
    return round((now - then).total_seconds() / 60, 1)


def _bound_transaction(conn: Connection, timeout: float) -> None:
    """Make the open transaction read-only and bound each statement by ``timeout``."""
    backend = conn.dialect.name
    millis = max(1, int(timeout * 1000))
    if backend == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
    elif backend == "sqlite":
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {millis}")


def _ids(conn: Connection, statement: sa.TextClause, cutoff: datetime) -> list[int]:
    rows = conn.execute(statement, {"cutoff": cutoff, "limit": MAX_EXAMPLES})
    return [int(row[0]) for row in rows]


def observe(
    name: str, engine: Engine, thresholds: SqlThresholds, timeout: float
) -> Observation:
    """Connect, time ``SELECT 1`` and run the collections (blocking: call it in a thread)."""
    where = describe_url(engine.url)
    phase = "connect"
    started = time.perf_counter()
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            connect_ms = round((time.perf_counter() - started) * 1000, 3)
            phase = "ping"
            _bound_transaction(conn, timeout)
            ping = time.perf_counter()
            conn.execute(sa.text("SELECT 1")).scalar_one()
            seen = Observation(
                connect_ms=connect_ms, latency_ms=round((time.perf_counter() - ping) * 1000, 3)
            )
            phase = "collect"
            _collect(conn, seen, thresholds)
            transaction.rollback()  # a probe never writes; nothing to keep
    except SQLAlchemyError as exc:
        if _is_timeout(exc):
            raise ProbeTimeout(name, f"{where} did not answer within {timeout:g} s") from exc
        if phase == "connect":
            raise ConnectError(name, f"cannot connect to {where}: {_reason(exc)}") from exc
        if phase == "ping":
            raise ConnectError(name, f"{where} did not answer SELECT 1: {_reason(exc)}") from exc
        raise CommandFailed(name, f"{where}: collection query failed: {_reason(exc)}") from exc
    except (ValueError, TypeError) as exc:  # a stored value SQLAlchemy cannot read back
        raise ProtocolError(name, f"{where}: unreadable value in a collection: {exc}") from exc
    return seen


def _collect(conn: Connection, seen: Observation, thresholds: SqlThresholds) -> None:
    now = now_utc()
    bet_cutoff = now - timedelta(minutes=thresholds.stuck_bets_minutes)
    row = conn.execute(STUCK_BETS_SQL, {"cutoff": bet_cutoff}).one()
    seen.stuck_bets = int(row.n)
    if seen.stuck_bets:
        seen.oldest_stuck_bet_minutes = _minutes_since(row.oldest, now)
        seen.stuck_bet_ids = _ids(conn, STUCK_BET_IDS_SQL, bet_cutoff)

    mismatched = conn.execute(MISMATCHED_ROUNDS_SQL, {"since": now - SETTLEMENT_WINDOW}).all()
    seen.mismatched_round_ids = [int(r[0]) for r in mismatched]
    seen.mismatch_cents = sum(abs(int(r[1]) - int(r[2])) for r in mismatched)

    payment_cutoff = now - timedelta(minutes=thresholds.pending_payment_minutes)
    row = conn.execute(STUCK_PAYMENTS_SQL, {"cutoff": payment_cutoff}).one()
    seen.stuck_payments = int(row.n)
    if seen.stuck_payments:
        seen.oldest_stuck_payment_minutes = _minutes_since(row.oldest, now)
        seen.stuck_payment_ids = _ids(conn, STUCK_PAYMENT_IDS_SQL, payment_cutoff)

    row = conn.execute(PAYMENT_OUTCOMES_SQL, {"since": now - FAILURE_WINDOW}).one()
    seen.payments_decided, seen.payments_declined = int(row[0]), int(row[1])


# -- the verdict ----------------------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def judge(
    seen: Observation, thresholds: SqlThresholds, target: Target
) -> tuple[list[str], list[str]]:
    """The faults an observation shows, and one human sentence per finding."""
    faults: list[str] = []
    problems: list[str] = []
    if seen.stuck_bets:
        faults.append(FaultKind.STUCK_BETS)
        problems.append(
            f"{_plural(seen.stuck_bets, 'bet')} pending for over "
            f"{thresholds.stuck_bets_minutes:g} min (oldest {seen.oldest_stuck_bet_minutes} min)"
        )
    if seen.mismatched_round_ids:
        faults.append(FaultKind.SETTLEMENT_MISMATCH)
        count = len(seen.mismatched_round_ids)
        problems.append(
            f"{_plural(count, 'round')} ended in the last hour with a payout total that differs "
            f"from {'its' if count == 1 else 'their'} settled bets by "
            f"{seen.mismatch_cents} cents in all"
        )
    if seen.stuck_payments:
        faults.append(FaultKind.PAYMENT_PROCESSING_DELAY)
        problems.append(
            f"{_plural(seen.stuck_payments, 'payment')} pending for over "
            f"{thresholds.pending_payment_minutes:g} min "
            f"(oldest {seen.oldest_stuck_payment_minutes} min)"
        )
    rate = seen.decline_rate
    if (
        rate is not None
        and seen.payments_decided >= MIN_DECIDED_PAYMENTS
        and rate > thresholds.payment_failure_rate
    ):
        faults.append(FaultKind.PAYMENT_PROCESSING_DELAY)
        problems.append(
            f"{rate:.0%} of the {seen.payments_decided} payments decided in the last "
            f"{int(FAILURE_WINDOW.total_seconds() // 60)} min were declined "
            f"(threshold {thresholds.payment_failure_rate:.0%})"
        )
    limit = thresholds.latency_ms
    if limit is not None and seen.latency_ms > limit:
        faults.append(latency_fault(target))
        problems.append(f"SELECT 1 took {seen.latency_ms:.1f} ms (threshold {limit:g} ms)")
    return [str(f) for f in dict.fromkeys(faults)], problems


def _values(seen: Observation) -> dict[str, Any]:
    rate = seen.decline_rate
    return {
        "connect_ms": seen.connect_ms,
        "latency_ms": seen.latency_ms,
        "stuck_bets": seen.stuck_bets,
        "stuck_bet_ids": seen.stuck_bet_ids,
        "oldest_stuck_bet_minutes": seen.oldest_stuck_bet_minutes,
        "mismatched_rounds": len(seen.mismatched_round_ids),
        "mismatched_round_ids": seen.mismatched_round_ids[:MAX_EXAMPLES],
        "mismatch_cents": seen.mismatch_cents,
        "stuck_payments": seen.stuck_payments,
        "stuck_payment_ids": seen.stuck_payment_ids,
        "oldest_stuck_payment_minutes": seen.oldest_stuck_payment_minutes,
        "payments_decided_5m": seen.payments_decided,
        "payments_declined_5m": seen.payments_declined,
        "payment_decline_rate": None if rate is None else round(rate, 4),
    }


@register(ProbeKind.SQL)
async def probe_sql(target: Target, probe: SqlProbe, ctx: ProbeContext) -> ProbeResult:
    """Reachability and ``SELECT 1`` latency of the database, then its money collections."""
    ts = now_utc()
    engine = await engine_for(ctx, target, probe.timeout)
    try:
        # The thread is not cancelled by the timeout, but the connect, statement and busy
        # timeouts set above end its work soon after.
        seen = await asyncio.wait_for(
            asyncio.to_thread(observe, target.name, engine, probe.thresholds, probe.timeout),
            probe.timeout,
        )
    except TimeoutError as exc:
        raise ProbeTimeout(
            target.name, f"{describe_url(engine.url)} did not answer within {probe.timeout:g} s"
        ) from exc
    faults, problems = judge(seen, probe.thresholds, target)
    values = _values(seen)
    pid = probe_id(probe.kind)
    if faults:
        return failed(
            target.name, ctx.zone, probe.kind, ts=ts, faults=tuple(faults),
            message="; ".join(problems), latency_ms=seen.latency_ms, values=values, probe=pid,
        )
    return passed(
        target.name, ctx.zone, probe.kind, ts=ts, latency_ms=seen.latency_ms, values=values,
        probe=pid,
    )
