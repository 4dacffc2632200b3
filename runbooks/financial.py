"""Financial faults: stuck bets, settlement mismatches, payment delays.

Money is never moved or corrected by a machine (``catalogue.FINANCIAL_FAULTS``): these
incidents are diagnosed and handed to people WITH the list of affected bets, rounds and
payments, so whoever picks them up starts from ids, amounts and ages rather than a count::

    diagnosis of a database target ─> list_affected_rows (read-only, at most 50 rows each)
    financial incident ─> planner ─> Plan(escalate="... bets #11 (12.50, 21.3 min) ...")

``list_affected_rows`` is the one piece of I/O here: it reads the game database in a
read-only transaction (``PRAGMA query_only`` on SQLite, ``SET TRANSACTION READ ONLY`` on
PostgreSQL), so a diagnosis cannot change a row even by mistake.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from floorwatch.catalogue import FINANCIAL_FAULTS, ProbeKind, TargetKind
from floorwatch.errors import AdapterError, CommandFailed, ConnectError, ProbeTimeout
from floorwatch.inventory import SqlProbe, SqlThresholds, Target
from floorwatch.results import now_utc
from runbooks.frame import Diagnosis, Plan, RunContext

# Enough rows for a person to start on; the counts say how many there are in all.
MAX_ROWS = 50
# Rounds older than this are settled history (the sql probe looks back as far).
SETTLEMENT_WINDOW = timedelta(hours=1)
LIST_TIMEOUT_S = 5.0
# How many ids per kind the escalation reason spells out; the event data holds them all.
REASON_IDS = 20

Timestamp = sa.DateTime(timezone=True)

STUCK_BETS_SQL = (
    sa.text(
        "SELECT id, round_id, amount_cents, placed_at FROM bets"
        " WHERE state = 'pending' AND placed_at < :cutoff"
        " ORDER BY placed_at, id LIMIT :limit"
    )
    .bindparams(sa.bindparam("cutoff", type_=Timestamp), sa.bindparam("limit", type_=sa.Integer))
    .columns(sa.column("id", sa.Integer), sa.column("round_id", sa.Integer),
             sa.column("amount_cents", sa.BigInteger), sa.column("placed_at", Timestamp))
)
STUCK_BETS_TOTAL_SQL = sa.text(
    "SELECT count(*), COALESCE(SUM(amount_cents), 0) FROM bets"
    " WHERE state = 'pending' AND placed_at < :cutoff"
).bindparams(sa.bindparam("cutoff", type_=Timestamp))

STUCK_PAYMENTS_SQL = (
    sa.text(
        "SELECT id, kind, provider, amount_cents, created_at FROM payments"
        " WHERE state = 'pending' AND created_at < :cutoff"
        " ORDER BY created_at, id LIMIT :limit"
    )
    .bindparams(sa.bindparam("cutoff", type_=Timestamp), sa.bindparam("limit", type_=sa.Integer))
    .columns(sa.column("id", sa.Integer), sa.column("kind", sa.String),
             sa.column("provider", sa.String), sa.column("amount_cents", sa.BigInteger),
             sa.column("created_at", Timestamp))
)
STUCK_PAYMENTS_TOTAL_SQL = sa.text(
    "SELECT count(*), COALESCE(SUM(amount_cents), 0) FROM payments"
    " WHERE state = 'pending' AND created_at < :cutoff"
).bindparams(sa.bindparam("cutoff", type_=Timestamp))

_SETTLED_PAYOUT = (
    "COALESCE(SUM(CASE WHEN b.state = 'settled' THEN COALESCE(b.payout_cents, 0) ELSE 0 END), 0)"
)
MISMATCHED_ROUNDS_SQL = (
    sa.text(
        "SELECT r.id, r.provider, r.game, r.ended_at, r.total_payout_cents,"
        f" {_SETTLED_PAYOUT} AS bets_payout_cents"
        " FROM rounds r LEFT JOIN bets b ON b.round_id = r.id"
        " WHERE r.ended_at IS NOT NULL AND r.ended_at >= :since"
        " GROUP BY r.id, r.provider, r.game, r.ended_at, r.total_payout_cents"
        f" HAVING r.total_payout_cents <> {_SETTLED_PAYOUT}"
        " ORDER BY r.id LIMIT :limit"
    )
    .bindparams(sa.bindparam("since", type_=Timestamp), sa.bindparam("limit", type_=sa.Integer))
    .columns(sa.column("id", sa.Integer), sa.column("provider", sa.String),
             sa.column("game", sa.String), sa.column("ended_at", Timestamp),
             sa.column("total_payout_cents", sa.BigInteger),
             sa.column("bets_payout_cents", sa.BigInteger))
)


# -- deciding ------------------------------------------------------------------------------


def financial_faults_seen(diagnosis: Diagnosis) -> list[str]:
    """The financial faults the diagnosis's fresh probes report, in catalogue order."""
    seen: set[str] = set()
    probes = diagnosis.evidence.get("probes_now")
    for result in probes if isinstance(probes, list) else []:
        seen.update(str(f) for f in result.get("faults", ()))
    return [str(f) for f in sorted(FINANCIAL_FAULTS) if str(f) in seen]


def is_financial(ctx: RunContext, diagnosis: Diagnosis) -> bool:
    """Whether this run is about money: the incident's fault is financial, or (a run started
    without an incident) the fresh probes report a financial fault."""
    if ctx.incident is not None:
        return ctx.incident.fault_kind in {str(f) for f in FINANCIAL_FAULTS}
    return bool(financial_faults_seen(diagnosis))


def _money(cents: int) -> str:
    return f"{cents / 100:.2f}"


def _ids(rows: list[dict[str, Any]]) -> str:
    shown = ", ".join(f"#{row['id']}" for row in rows[:REASON_IDS])
    return shown + (f" and {len(rows) - REASON_IDS} more listed" if len(rows) > REASON_IDS else "")


def describe_affected(affected: dict[str, Any] | str | None) -> str:
    """One sentence per kind of affected row, naming their ids, amounts and ages."""
    if affected is None:
        return "no affected rows listed: the target is not a database"
    if isinstance(affected, str):  # "unavailable: <reason>"
        return f"affected rows {affected}"
    parts: list[str] = []
    bets = affected.get("stuck_bets", [])
    if bets:
        oldest = max(row["age_minutes"] for row in bets)
        parts.append(
            f"{affected['stuck_bets_total']} stuck bet(s) "
            f"({_money(affected['stuck_bets_cents'])} in all, oldest {oldest:g} min): "
            f"{_ids(bets)}"
        )
    rounds = affected.get("mismatched_rounds", [])
    if rounds:
        diff = sum(abs(row["difference_cents"]) for row in rounds)
        parts.append(f"{len(rounds)} round(s) whose payout total differs from their settled "
                     f"bets ({_money(diff)} in all): {_ids(rounds)}")
    payments = affected.get("stuck_payments", [])
    if payments:
        oldest = max(row["age_minutes"] for row in payments)
        parts.append(
            f"{affected['stuck_payments_total']} stuck payment(s) "
            f"({_money(affected['stuck_payments_cents'])} in all, oldest {oldest:g} min): "
            f"{_ids(payments)}"
        )
    return "; ".join(parts) if parts else "no stuck bets, mismatched rounds or stuck payments now"


def escalation_reason(ctx: RunContext, diagnosis: Diagnosis) -> str:
    """Why a financial run hands the incident to people, with the affected rows."""
    fault = (ctx.incident.fault_kind if ctx.incident is not None
             else ", ".join(financial_faults_seen(diagnosis)))
    affected = describe_affected(diagnosis.evidence.get("financial"))
    # the summary names the affected rows too: say them once, first
    rest = diagnosis.summary.replace(f"; {affected}", "")
    return (f"financial fault {fault} on {ctx.target.name} is never corrected automatically; "
            f"affected: {affected}. Diagnosis: {rest}")


async def planner(ctx: RunContext, diagnosis: Diagnosis) -> Plan:
    """Act on nothing: escalate with the list of affected bets, rounds and payments."""
    return Plan(escalate=escalation_reason(ctx, diagnosis))


# -- listing (read-only I/O) ---------------------------------------------------------------


def sql_thresholds(target: Target) -> SqlThresholds:
    """The thresholds of the target's sql probe (the defaults when it has none)."""
    for probe in target.probes:
        if probe.kind == ProbeKind.SQL and isinstance(probe, SqlProbe):
            return probe.thresholds
    return SqlThresholds()


def _aware(value: datetime) -> datetime:
    # SQLite gives back the UTC wall time without its zone.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _age(then: datetime, now: datetime) -> float:
    return round((now - _aware(then)).total_seconds() / 60, 1)


def _reason(exc: BaseException) -> str:
    """The driver's first line: never the SQL, its parameters or the URL."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(source).strip().splitlines()
    return (lines[0].strip() if lines else type(source).__name__)[:300]


def _read_only(conn: Connection, timeout: float) -> None:
    millis = max(1, int(timeout * 1000))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {millis}")


def _query(conn: Connection, thresholds: SqlThresholds) -> dict[str, Any]:
    now = now_utc()
    bet_cutoff = now - timedelta(minutes=thresholds.stuck_bets_minutes)
    pay_cutoff = now - timedelta(minutes=thresholds.pending_payment_minutes)
    bets = [
        {"id": int(r.id), "round_id": int(r.round_id), "amount_cents": int(r.amount_cents),
         "placed_at": _aware(r.placed_at).isoformat(), "age_minutes": _age(r.placed_at, now)}
        for r in conn.execute(STUCK_BETS_SQL, {"cutoff": bet_cutoff, "limit": MAX_ROWS})
    ]
    bets_total, bets_cents = conn.execute(STUCK_BETS_TOTAL_SQL, {"cutoff": bet_cutoff}).one()
    payments = [
        {"id": int(r.id), "kind": r.kind, "provider": r.provider,
         "amount_cents": int(r.amount_cents), "created_at": _aware(r.created_at).isoformat(),
         "age_minutes": _age(r.created_at, now)}
        for r in conn.execute(STUCK_PAYMENTS_SQL, {"cutoff": pay_cutoff, "limit": MAX_ROWS})
    ]
    pay_total, pay_cents = conn.execute(STUCK_PAYMENTS_TOTAL_SQL, {"cutoff": pay_cutoff}).one()
    rounds = [
        {"id": int(r.id), "provider": r.provider, "game": r.game,
         "ended_at": _aware(r.ended_at).isoformat(),
         "total_payout_cents": int(r.total_payout_cents),
         "bets_payout_cents": int(r.bets_payout_cents),
         "difference_cents": int(r.total_payout_cents) - int(r.bets_payout_cents)}
        for r in conn.execute(MISMATCHED_ROUNDS_SQL,
                              {"since": now - SETTLEMENT_WINDOW, "limit": MAX_ROWS})
    ]
    return {
        "stuck_bets_minutes": thresholds.stuck_bets_minutes,
        "pending_payment_minutes": thresholds.pending_payment_minutes,
        "stuck_bets": bets, "stuck_bets_total": int(bets_total),
        "stuck_bets_cents": int(bets_cents),
        "stuck_payments": payments, "stuck_payments_total": int(pay_total),
        "stuck_payments_cents": int(pay_cents),
        "mismatched_rounds": rounds,
    }


def _list_blocking(target: Target, url: sa.URL, thresholds: SqlThresholds,
                   timeout: float) -> dict[str, Any]:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        connect_args = {"timeout": timeout}
    elif url.get_backend_name() == "postgresql" and url.get_driver_name().startswith("psycopg"):
        connect_args = {"connect_timeout": max(2, math.ceil(timeout))}
    try:
        engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (NoSuchModuleError, ImportError, ArgumentError) as exc:
        raise AdapterError(target.name, f"cannot open the database: {_reason(exc)}") from exc
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            _read_only(conn, timeout)
            found = _query(conn, thresholds)
            transaction.rollback()  # a diagnosis never writes
        return found
    except SQLAlchemyError as exc:
        if "locked" in str(exc) or type(getattr(exc, "orig", None)).__name__ == "QueryCanceled":
            raise ProbeTimeout(target.name, f"database did not answer within {timeout:g} s") \
                from exc
        raise CommandFailed(target.name, f"listing affected rows failed: {_reason(exc)}") from exc
    finally:
        engine.dispose()


async def list_affected_rows(target: Target, timeout: float = LIST_TIMEOUT_S) -> dict[str, Any]:
    """Stuck bets, mismatched rounds and stuck payments of a database target (ids, amounts,
    ages; at most ``MAX_ROWS`` of each, with the full counts), read-only."""
    if target.kind != TargetKind.DATABASE or not target.connection.url:
        raise AdapterError(target.name, "only a database target has bets and payments to list")
    try:
        url = sa.make_url(target.connection.url)
    except (ArgumentError, ValueError) as exc:
        # The library's message quotes the URL, password included: it is not passed on.
        raise AdapterError(target.name, "connection.url is not a valid SQLAlchemy URL") from exc
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not Path(url.database).is_file():
        # SQLite would create a missing file: a wrong path would look like an empty database.
        raise ConnectError(target.name, f"database file {url.database} does not exist")
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_list_blocking, target, url, sql_thresholds(target), timeout),
            timeout + 1,
        )
    except TimeoutError as exc:
        raise ProbeTimeout(target.name, f"database did not answer within {timeout:g} s") from exc
