"""The sandbox game database: bets, rounds and payments with live traffic and data faults.

SQLite (WAL) in the component folder by default; PostgreSQL (a ``LocalPostgres`` on
``layout.port(25)``) with ``backend="postgresql"``. At start the tables are created afresh and
ten minutes of history are written, so every probe has a meaningful baseline at once; then a
generator thread writes a few rounds, bets and payments per second, settles bets within a
second or two, decides payments quickly (about 2 % declined) and deletes finished rows older
than ``retention``.

Faults, all on target ``game-db``, are written as rows a probe sees at once:

- ``stuck_bets``: a round whose bets stay ``pending``, placed 20-25 minutes ago;
- ``settlement_mismatch``: an ended round whose ``total_payout_cents`` differs from the sum
  of its bets' payouts;
- ``payments_stuck``: withdrawals ``pending`` since 25-40 minutes;
- ``payment_failures``: a burst of declined payments (players retrying) spread over the last
  five minutes, kept up while the fault lasts, so about 60 % of the decided payments of the
  last five minutes are declined.

Healing voids the stuck bets and closes their round, corrects the round total, approves the
stuck payments, and deletes the burst rows.

What a probe runs (SQL identical on both backends; every time is a bound parameter, bound as
``DateTime(timezone=True)`` with an aware UTC value, because SQLite stores the UTC wall time
as text and only SQLAlchemy's DateTime type renders a comparable value)::

    -- stuck bets: cutoff = now - 15 min
    SELECT count(*) FROM bets WHERE state = 'pending' AND placed_at < :cutoff
    -- settlement mismatches
    SELECT r.id, r.total_payout_cents, COALESCE(SUM(b.payout_cents), 0) AS bets_payout_cents
      FROM rounds r LEFT JOIN bets b ON b.round_id = r.id
     WHERE r.ended_at IS NOT NULL
     GROUP BY r.id, r.total_payout_cents
    HAVING r.total_payout_cents <> COALESCE(SUM(b.payout_cents), 0)
    -- stuck payments: cutoff = now - 20 min
    SELECT count(*) FROM payments WHERE state = 'pending' AND created_at < :cutoff
    -- payment failure rate: since = now - 5 min; rate = declined / decided
    SELECT count(*) AS decided,
           COALESCE(SUM(CASE WHEN state = 'declined' THEN 1 ELSE 0 END), 0) AS declined
      FROM payments WHERE created_at >= :since AND state <> 'pending'

The functions ``count_stuck_bets``, ``find_mismatched_rounds``, ``count_stuck_payments`` and
``payment_outcomes`` run exactly these statements on a SQLAlchemy connection.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from floorwatch.errors import SandboxError
from sandbox.component import Component
from sandbox.topology import GAMEDB_NAME, Layout

if TYPE_CHECKING:
    from sandbox.postgres import LocalPostgres

log = logging.getLogger("sandbox.gamedb")

Backend = Literal["sqlite", "postgresql"]
POSTGRES_PORT_OFFSET = 25
POSTGRES_DB = "gamedb"

# Thresholds the faults are built to cross and the probes are expected to use.
STUCK_BET_AGE = timedelta(minutes=15)
STUCK_PAYMENT_AGE = timedelta(minutes=20)
FAILURE_WINDOW = timedelta(minutes=5)
NORMAL_DECLINE_RATE = 0.02
FAULT_DECLINE_RATE = 0.60
STOP_TIMEOUT = 6.0
ROUNDS_PER_SECOND = 1.5
PAYMENTS_PER_SECOND = 2.0
RETRIES_PER_PAYMENT = 1.5  # declined retries per decided payment while payment_failures lasts

PROVIDERS = {
    "provider-alpha": ("starlight-slots", "royal-roulette", "blackjack-classic"),
    "provider-beta": ("dragon-reels", "fruit-frenzy", "baccarat-live"),
}
PAYMENT_PROVIDERS = ("cards", "sepa", "e-wallet")
PLAYERS = 500

metadata = sa.MetaData()
Timestamp = sa.DateTime(timezone=True)

rounds = sa.Table(
    "rounds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("game", sa.String(60), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp),
    sa.Column("total_bet_cents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("total_payout_cents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_rounds_ended_at", "ended_at"),
)

bets = sa.Table(
    "bets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("round_id", sa.Integer, sa.ForeignKey("rounds.id"), nullable=False),
    sa.Column("player_id", sa.String(20), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("placed_at", Timestamp, nullable=False),
    sa.Column("settled_at", Timestamp),
    sa.Column("payout_cents", sa.BigInteger),
    sa.CheckConstraint("state IN ('pending', 'settled', 'void')", name="ck_bets_state"),
    sa.CheckConstraint("amount_cents > 0", name="ck_bets_amount"),
    sa.Index("ix_bets_state_placed_at", "state", "placed_at"),
    sa.Index("ix_bets_round_id", "round_id"),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("player_id", sa.String(20), nullable=False),
    sa.Column("kind", sa.String(12), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.CheckConstraint("kind IN ('deposit', 'withdrawal')", name="ck_payments_kind"),
    sa.CheckConstraint("state IN ('pending', 'approved', 'declined')", name="ck_payments_state"),
    sa.CheckConstraint("amount_cents > 0", name="ck_payments_amount"),
    sa.Index("ix_payments_state_created_at", "state", "created_at"),
    sa.Index("ix_payments_created_at", "created_at"),
)

# -- the probe's queries ------------------------------------------------------------------

STUCK_BETS_SQL = sa.text(
    "SELECT count(*) FROM bets WHERE state = 'pending' AND placed_at < :cutoff"
).bindparams(sa.bindparam("cutoff", type_=Timestamp))

MISMATCHED_ROUNDS_SQL = sa.text(
    "SELECT r.id, r.total_payout_cents, COALESCE(SUM(b.payout_cents), 0) AS bets_payout_cents"
    " FROM rounds r LEFT JOIN bets b ON b.round_id = r.id"
    " WHERE r.ended_at IS NOT NULL"
    " GROUP BY r.id, r.total_payout_cents"
    " HAVING r.total_payout_cents <> COALESCE(SUM(b.payout_cents), 0)"
    " ORDER BY r.id"
)

STUCK_PAYMENTS_SQL = sa.text(
    "SELECT count(*) FROM payments WHERE state = 'pending' AND created_at < :cutoff"
).bindparams(sa.bindparam("cutoff", type_=Timestamp))

PAYMENT_OUTCOMES_SQL = sa.text(
    "SELECT count(*) AS decided,"
    " COALESCE(SUM(CASE WHEN state = 'declined' THEN 1 ELSE 0 END), 0) AS declined"
    " FROM payments WHERE created_at >= :since AND state <> 'pending'"
).bindparams(sa.bindparam("since", type_=Timestamp))


def utcnow() -> datetime:
    """The current time, aware, in UTC: the only kind of time this database holds."""
    return datetime.now(UTC)


def count_stuck_bets(
    conn: Connection, older_than: timedelta = STUCK_BET_AGE, now: datetime | None = None
) -> int:
    """Bets still pending that were placed more than ``older_than`` ago."""
    cutoff = (now or utcnow()) - older_than
    return int(conn.execute(STUCK_BETS_SQL, {"cutoff": cutoff}).scalar_one())


@dataclass(frozen=True)
class MismatchedRound:
    """An ended round whose payout total disagrees with its bets."""

    round_id: int
    total_payout_cents: int
    bets_payout_cents: int


def find_mismatched_rounds(conn: Connection) -> list[MismatchedRound]:
    """Ended rounds whose ``total_payout_cents`` is not the sum of their bets' payouts."""
    return [
        MismatchedRound(int(row[0]), int(row[1]), int(row[2]))
        for row in conn.execute(MISMATCHED_ROUNDS_SQL)
    ]


def count_stuck_payments(
    conn: Connection, older_than: timedelta = STUCK_PAYMENT_AGE, now: datetime | None = None
) -> int:
    """Payments still pending that were created more than ``older_than`` ago."""
    cutoff = (now or utcnow()) - older_than
    return int(conn.execute(STUCK_PAYMENTS_SQL, {"cutoff": cutoff}).scalar_one())


@dataclass(frozen=True)
class PaymentOutcomes:
    """Decided payments created in a window, and how many of them were declined."""

    decided: int
    declined: int

    @property
    def decline_rate(self) -> float:
        """Declined share of decided payments; 0.0 when none was decided."""
        return self.declined / self.decided if self.decided else 0.0


def payment_outcomes(
    conn: Connection, window: timedelta = FAILURE_WINDOW, now: datetime | None = None
) -> PaymentOutcomes:
    """Outcomes of the payments created in the last ``window``."""
    since = (now or utcnow()) - window
    row = conn.execute(PAYMENT_OUTCOMES_SQL, {"since": since}).one()
    return PaymentOutcomes(decided=int(row[0]), declined=int(row[1]))


# -- traffic -------------------------------------------------------------------------------


@dataclass
class _OpenRound:
    round_id: int
    bet_ids: list[int]
    amounts: list[int]
    settle_at: float  # monotonic


@dataclass
class _Traffic:
    """What the generator has in flight, and what the faults wrote (to undo on heal)."""

    open_rounds: list[_OpenRound] = field(default_factory=list)
    open_payments: list[tuple[int, float]] = field(default_factory=list)  # id, decide at
    round_credit: float = 0.0
    payment_credit: float = 0.0
    retry_credit: float = 0.0
    stuck_round: int | None = None
    stuck_bets: list[int] = field(default_factory=list)
    mismatched_round: int | None = None
    stuck_payments: list[int] = field(default_factory=list)
    burst_payments: list[int] = field(default_factory=list)


class GameDatabase(Component):
    """The platform's game database with live traffic and injectable data faults."""

    name = "gamedb"

    def __init__(
        self,
        layout: Layout,
        backend: Backend = "sqlite",
        *,
        retention: timedelta = timedelta(minutes=30),
        history: timedelta = timedelta(minutes=10),
        tick: float = 0.2,
        seed: int | None = None,
    ) -> None:
        super().__init__(layout)
        if backend not in ("sqlite", "postgresql"):
            raise SandboxError(f"gamedb: unknown backend {backend!r} (known: sqlite, postgresql)")
        if retention <= max(history, STUCK_PAYMENT_AGE, STUCK_BET_AGE, FAILURE_WINDOW):
            raise SandboxError(
                f"gamedb: retention {retention} must exceed the history and every probe window"
            )
        self.backend: Backend = backend
        self.retention = retention
        self.history = history
        self.tick = tick
        self.dir = layout.component_dir(self.name)
        self.sqlite_path = self.dir / "gamedb.sqlite"
        self._rng = random.Random(seed)
        self._postgres: LocalPostgres | None = None
        self._engine: Engine | None = None
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # One lock for the database writes and the in-flight state, so a fault injected from
        # the daemon's control thread never interleaves with a generator tick.
        self._lock = threading.RLock()
        self._traffic = _Traffic()
        self._faults: set[str] = set()
        self._last_housekeeping = 0.0
        self._last_step = 0.0
        self.rows_written = 0
        self.errors = 0
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the running database."""
        if self._url is None:
            raise SandboxError("gamedb: not started")
        return self._url

    @property
    def engine(self) -> Engine:
        """The component's own engine (the generator's and the faults')."""
        if self._engine is None:
            raise SandboxError("gamedb: not started")
        return self._engine

    def start(self) -> None:
        """Create the schema afresh, write the history and start the traffic generator."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            try:
                self._url = self._start_backend()
                self._engine = self._make_engine(self._url)
                with self._engine.begin() as conn:
                    metadata.drop_all(conn)
                    metadata.create_all(conn)
                    self._write_history(conn)
            except SQLAlchemyError as exc:
                self._shutdown_backend()
                raise SandboxError(
                    f"gamedb: cannot prepare {self.backend} database: {exc}"
                ) from exc
            except SandboxError:
                self._shutdown_backend()
                raise
            self._traffic = _Traffic()
            self._faults.clear()
            self._stop.clear()
            self._last_step = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="gamedb-generator", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the generator (joined), close connections and stop PostgreSQL if it runs."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=STOP_TIMEOUT)
        # Not under the lock: a generator stuck in a database call holds it, and the backend
        # must go down regardless (PostgreSQL's fast shutdown also ends that call).
        self._faults.clear()
        self._shutdown_backend()
        if thread is not None and thread.is_alive():
            raise SandboxError(
                f"gamedb: the traffic generator did not stop within {STOP_TIMEOUT:.0f} s"
            )

    def _start_backend(self) -> str:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.sqlite_path}{suffix}").unlink(missing_ok=True)
            return f"sqlite:///{self.sqlite_path}"
        # Imported here so the SQLite sandbox never loads psycopg.
        from sandbox.postgres import LocalPostgres

        pg = LocalPostgres(self.dir / "pgdata", self.layout.port(POSTGRES_PORT_OFFSET), fast=True)
        pg.start()
        self._postgres = pg
        admin = sa.create_engine(pg.url("postgres"), poolclass=sa.NullPool)
        try:
            with admin.connect() as conn:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": POSTGRES_DB},
                ).first()
        finally:
            admin.dispose()
        # The data folder is reused across restarts; start() recreates the tables anyway.
        return pg.url(POSTGRES_DB) if exists else pg.create_database(POSTGRES_DB)

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if not url.startswith("sqlite"):
            return sa.create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
        engine = sa.create_engine(url, connect_args={"timeout": 5})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets probes read while the generator writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine

    def _shutdown_backend(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()
        pg, self._postgres = self._postgres, None
        if pg is not None:
            pg.stop()

    # -- description -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "kind": "database",
            "url": self._url,
            "backend": self.backend,
            "tables": sorted(metadata.tables),
            "generator": {
                "running": self._thread is not None and self._thread.is_alive(),
                "rows_written": self.rows_written,
                "errors": self.errors,
                "last_error": self.last_error,
            },
        }
        if self.backend == "sqlite":
            info["path"] = str(self.sqlite_path)
        elif self._postgres is not None:
            info["host"] = self._postgres.host
            info["port"] = self._postgres.port
            info["database"] = POSTGRES_DB
        return {GAMEDB_NAME: info}

    # -- faults ----------------------------------------------------------------------------

    def faults(self) -> dict[str, list[str]]:
        return {
            fault: [GAMEDB_NAME]
            for fault in ("stuck_bets", "settlement_mismatch", "payments_stuck", "payment_failures")
        }

    def active_faults(self) -> dict[str, list[str]]:
        with self._lock:
            return {GAMEDB_NAME: sorted(self._faults)} if self._faults else {}

    def inject(self, fault: str, target: str) -> None:
        """Write the rows that make ``fault`` visible to a probe at once."""
        self.check_fault(fault, target)
        with self._lock:
            if fault in self._faults:
                return
            inject = {
                "stuck_bets": self._inject_stuck_bets,
                "settlement_mismatch": self._inject_settlement_mismatch,
                "payments_stuck": self._inject_payments_stuck,
                "payment_failures": self._inject_payment_failures,
            }[fault]
            try:
                with self.engine.begin() as conn:
                    inject(conn, utcnow())
            except SQLAlchemyError as exc:
                raise SandboxError(f"gamedb: cannot inject {fault}: {exc}") from exc
            self._faults.add(fault)

    def heal(self, target: str | None = None) -> None:
        """Undo every fault in force: void stuck bets, fix totals, approve, drop the burst."""
        if target is not None and target != GAMEDB_NAME:
            raise SandboxError(f"gamedb: unknown target {target!r} (known: {GAMEDB_NAME})")
        with self._lock:
            if not self._faults:
                return
            now = utcnow()
            try:
                with self.engine.begin() as conn:
                    if "stuck_bets" in self._faults:
                        self._heal_stuck_bets(conn, now)
                    if "settlement_mismatch" in self._faults:
                        self._heal_settlement_mismatch(conn)
                    if "payments_stuck" in self._faults:
                        self._heal_payments_stuck(conn, now)
                    if "payment_failures" in self._faults:
                        self._heal_payment_failures(conn)
            except SQLAlchemyError as exc:
                raise SandboxError(f"gamedb: cannot heal {sorted(self._faults)}: {exc}") from exc
            self._faults.clear()
            t = self._traffic
            t.stuck_round, t.stuck_bets, t.mismatched_round = None, [], None
            t.stuck_payments, t.burst_payments = [], []

    def _inject_stuck_bets(self, conn: Connection, now: datetime) -> None:
        placed = now - STUCK_BET_AGE - timedelta(minutes=5)
        provider, game = "provider-beta", "dragon-reels"
        round_id = self._insert_round(conn, provider, game, placed - timedelta(seconds=3))
        rows = [
            {
                "round_id": round_id,
                "player_id": self._player(),
                "amount_cents": self._bet_amount(),
                "state": "pending",
                "placed_at": placed + timedelta(seconds=i * 40),
            }
            for i in range(4)
        ]
        ids = conn.execute(
            sa.insert(bets).returning(bets.c.id, sort_by_parameter_order=True), rows
        ).scalars()
        self._traffic.stuck_round = round_id
        self._traffic.stuck_bets = list(ids)

    def _heal_stuck_bets(self, conn: Connection, now: datetime) -> None:
        t = self._traffic
        conn.execute(
            sa.update(bets)
            .where(bets.c.id.in_(t.stuck_bets), bets.c.state == "pending")
            .values(state="void", settled_at=now, payout_cents=0)
        )
        if t.stuck_round is not None:
            self._close_round(conn, t.stuck_round, now)

    def _inject_settlement_mismatch(self, conn: Connection, now: datetime) -> None:
        started = now - timedelta(seconds=90)
        round_id = self._insert_round(conn, "provider-alpha", "royal-roulette", started)
        rows = []
        for _ in range(3):
            amount = self._bet_amount()
            rows.append(
                {
                    "round_id": round_id,
                    "player_id": self._player(),
                    "amount_cents": amount,
                    "state": "settled",
                    "placed_at": started,
                    "settled_at": started + timedelta(seconds=2),
                    "payout_cents": self._payout(amount),
                }
            )
        conn.execute(sa.insert(bets), rows)
        self._close_round(conn, round_id, started + timedelta(seconds=2))
        # The provider reported a jackpot the bets do not account for.
        conn.execute(
            sa.update(rounds)
            .where(rounds.c.id == round_id)
            .values(total_payout_cents=rounds.c.total_payout_cents + 250_000)
        )
        self._traffic.mismatched_round = round_id

    def _heal_settlement_mismatch(self, conn: Connection) -> None:
        round_id = self._traffic.mismatched_round
        if round_id is not None:
            ended = conn.execute(
                sa.select(rounds.c.ended_at).where(rounds.c.id == round_id)
            ).scalar_one()
            self._close_round(conn, round_id, ended)

    def _inject_payments_stuck(self, conn: Connection, now: datetime) -> None:
        rows = []
        for minutes in (25, 31, 40):
            created = now - timedelta(minutes=minutes)
            rows.append(
                {
                    "player_id": self._player(),
                    "kind": "withdrawal",
                    "amount_cents": self._rng.choice((5_000, 20_000, 150_000)),
                    "state": "pending",
                    "created_at": created,
                    "updated_at": created,
                    "provider": "sepa",
                }
            )
        ids = conn.execute(
            sa.insert(payments).returning(payments.c.id, sort_by_parameter_order=True), rows
        ).scalars()
        self._traffic.stuck_payments = list(ids)

    def _heal_payments_stuck(self, conn: Connection, now: datetime) -> None:
        conn.execute(
            sa.update(payments)
            .where(payments.c.id.in_(self._traffic.stuck_payments), payments.c.state == "pending")
            .values(state="approved", updated_at=now)
        )

    def _inject_payment_failures(self, conn: Connection, now: datetime) -> None:
        outcomes = payment_outcomes(conn, now=now)
        # Enough declines over the window that declined / decided reaches the fault rate:
        # (declined + burst) / (decided + burst) = rate.
        burst = max(
            30,
            int(
                (FAULT_DECLINE_RATE * outcomes.decided - outcomes.declined)
                / (1 - FAULT_DECLINE_RATE)
            )
            + 1,
        )
        window = FAILURE_WINDOW.total_seconds() - 10  # stay inside the window for a while
        stamps = sorted(now - timedelta(seconds=self._rng.uniform(0, window)) for _ in range(burst))
        self._traffic.burst_payments = self._insert_declined(conn, stamps)

    def _heal_payment_failures(self, conn: Connection) -> None:
        ids = self._traffic.burst_payments
        for start in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
            conn.execute(sa.delete(payments).where(payments.c.id.in_(ids[start : start + 500])))

    def _insert_declined(self, conn: Connection, stamps: Sequence[datetime]) -> list[int]:
        rows = [
            {
                "player_id": self._player(),
                "kind": "deposit",
                "amount_cents": self._deposit_amount(),
                "state": "declined",
                "created_at": stamp,
                "updated_at": stamp + timedelta(milliseconds=self._rng.randint(200, 1500)),
                "provider": "cards",  # one acquirer failing is the usual cause
            }
            for stamp in stamps
        ]
        if not rows:
            return []
        result = conn.execute(
            sa.insert(payments).returning(payments.c.id, sort_by_parameter_order=True), rows
        )
        self.rows_written += len(rows)
        return list(result.scalars())

    # -- the generator ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                with self._lock, self.engine.begin() as conn:
                    self._step(conn, utcnow(), time.monotonic())
            except SQLAlchemyError as exc:
                # Reported in describe() and the log; traffic resumes on the next tick.
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("gamedb generator: %s", self.last_error)

    def _step(self, conn: Connection, now: datetime, mono: float) -> None:
        """One tick of traffic: open, settle, pay, decide, clean up."""
        t = self._traffic
        # Arrivals accrue as credit, so the rates hold on average whatever a tick lasted.
        elapsed = max(0.0, mono - self._last_step)
        self._last_step = mono
        t.round_credit += ROUNDS_PER_SECOND * elapsed * self._rng.uniform(0.5, 1.5)
        t.payment_credit += PAYMENTS_PER_SECOND * elapsed * self._rng.uniform(0.5, 1.5)
        while t.round_credit >= 1:
            t.round_credit -= 1
            self._open_round(conn, now, mono)
        due = [r for r in t.open_rounds if r.settle_at <= mono]
        for open_round in due:
            self._settle_round(conn, open_round, now)
        t.open_rounds = [r for r in t.open_rounds if r.settle_at > mono]

        while t.payment_credit >= 1:
            t.payment_credit -= 1
            payment_id = conn.execute(
                sa.insert(payments).returning(payments.c.id), self._payment_row(now)
            ).scalar_one()
            self.rows_written += 1
            t.open_payments.append((payment_id, mono + self._rng.uniform(0.2, 1.5)))
        due_payments = [pid for pid, at in t.open_payments if at <= mono]
        for payment_id in due_payments:
            declined = self._rng.random() < NORMAL_DECLINE_RATE
            conn.execute(
                sa.update(payments)
                .where(payments.c.id == payment_id, payments.c.state == "pending")
                .values(state="declined" if declined else "approved", updated_at=now)
            )
        t.open_payments = [(pid, at) for pid, at in t.open_payments if at > mono]

        if "payment_failures" in self._faults:
            # Keep the burst going: for each decided payment, 1.5 declined retries, which
            # holds the window at about (0.02 + 1.5) / 2.5, i.e. 60 % declined.
            t.retry_credit += RETRIES_PER_PAYMENT * len(due_payments)
            retries = int(t.retry_credit)
            t.retry_credit -= retries
            t.burst_payments += self._insert_declined(conn, [now] * retries)

        if mono - self._last_housekeeping > 10:
            self._housekeep(conn, now)
            self._last_housekeeping = mono

    def _open_round(self, conn: Connection, now: datetime, mono: float) -> None:
        provider = self._rng.choice(sorted(PROVIDERS))
        game = self._rng.choice(PROVIDERS[provider])
        round_id = self._insert_round(conn, provider, game, now)
        amounts = [self._bet_amount() for _ in range(self._rng.randint(1, 4))]
        rows = [
            {
                "round_id": round_id,
                "player_id": self._player(),
                "amount_cents": amount,
                "state": "pending",
                "placed_at": now,
            }
            for amount in amounts
        ]
        ids = list(
            conn.execute(
                sa.insert(bets).returning(bets.c.id, sort_by_parameter_order=True), rows
            ).scalars()
        )
        self.rows_written += len(rows)
        self._traffic.open_rounds.append(
            _OpenRound(
                round_id,
                ids,
                amounts,
                mono + self._rng.uniform(0.5, 1.8),
            )
        )

    def _settle_round(self, conn: Connection, open_round: _OpenRound, now: datetime) -> None:
        for bet_id, amount in zip(open_round.bet_ids, open_round.amounts, strict=True):
            void = self._rng.random() < 0.01  # a provider-side error voids the odd bet
            conn.execute(
                sa.update(bets)
                .where(bets.c.id == bet_id, bets.c.state == "pending")
                .values(
                    state="void" if void else "settled",
                    settled_at=now,
                    payout_cents=0 if void else self._payout(amount),
                )
            )
        self._close_round(conn, open_round.round_id, now)

    def _housekeep(self, conn: Connection, now: datetime) -> None:
        """Delete finished rows older than the retention, sparing rows a fault relies on."""
        cutoff = now - self.retention
        spared = [r for r in (self._traffic.mismatched_round,) if r is not None]
        old_rounds = sa.select(rounds.c.id).where(
            rounds.c.ended_at < cutoff, rounds.c.id.not_in(spared)
        )
        conn.execute(sa.delete(bets).where(bets.c.round_id.in_(old_rounds)))
        conn.execute(
            sa.delete(rounds).where(rounds.c.ended_at < cutoff, rounds.c.id.not_in(spared))
        )
        conn.execute(
            sa.delete(payments).where(payments.c.state != "pending", payments.c.updated_at < cutoff)
        )

    def _write_history(self, conn: Connection) -> None:
        """Ten minutes (``history``) of settled rounds and decided payments, in bulk."""
        now = utcnow()
        seconds = int(self.history.total_seconds())
        round_rows = []
        for _ in range(int(seconds * ROUNDS_PER_SECOND)):
            provider = self._rng.choice(sorted(PROVIDERS))
            started = now - timedelta(seconds=self._rng.uniform(5, seconds))
            round_rows.append(
                {
                    "provider": provider,
                    "game": self._rng.choice(PROVIDERS[provider]),
                    "started_at": started,
                    "ended_at": started + timedelta(seconds=self._rng.uniform(0.5, 1.8)),
                }
            )
        round_ids = list(
            conn.execute(
                sa.insert(rounds).returning(rounds.c.id, sort_by_parameter_order=True),
                round_rows,
            ).scalars()
        )
        bet_rows = []
        totals = []
        for round_id, row in zip(round_ids, round_rows, strict=True):
            bet_total = payout_total = 0
            for _ in range(self._rng.randint(1, 4)):
                amount = self._bet_amount()
                payout = self._payout(amount)
                bet_total += amount
                payout_total += payout
                bet_rows.append(
                    {
                        "round_id": round_id,
                        "player_id": self._player(),
                        "amount_cents": amount,
                        "state": "settled",
                        "placed_at": row["started_at"],
                        "settled_at": row["ended_at"],
                        "payout_cents": payout,
                    }
                )
            totals.append({"rid": round_id, "bet": bet_total, "payout": payout_total})
        conn.execute(sa.insert(bets), bet_rows)
        conn.execute(
            sa.update(rounds)
            .where(rounds.c.id == sa.bindparam("rid"))
            .values(total_bet_cents=sa.bindparam("bet"), total_payout_cents=sa.bindparam("payout")),
            totals,
        )
        payment_rows = []
        for _ in range(int(seconds * PAYMENTS_PER_SECOND)):
            created = now - timedelta(seconds=self._rng.uniform(3, seconds))
            row = self._payment_row(created)
            declined = self._rng.random() < NORMAL_DECLINE_RATE
            row["state"] = "declined" if declined else "approved"
            row["updated_at"] = created + timedelta(seconds=self._rng.uniform(0.2, 1.5))
            payment_rows.append(row)
        conn.execute(sa.insert(payments), payment_rows)
        self.rows_written += len(round_rows) + len(bet_rows) + len(payment_rows)

    # -- row helpers -----------------------------------------------------------------------

    def _insert_round(self, conn: Connection, provider: str, game: str, started: datetime) -> int:
        self.rows_written += 1
        return int(
            conn.execute(
                sa.insert(rounds).returning(rounds.c.id),
                {"provider": provider, "game": game, "started_at": started},
            ).scalar_one()
        )

    def _close_round(self, conn: Connection, round_id: int, ended: datetime) -> None:
        """End a round with totals recomputed from its settled bets (void bets count 0)."""
        settled = bets.c.state == "settled"
        bet_total = (
            sa.select(sa.func.coalesce(sa.func.sum(bets.c.amount_cents), 0))
            .where(bets.c.round_id == round_id, settled)
            .scalar_subquery()
        )
        payout_total = (
            sa.select(sa.func.coalesce(sa.func.sum(bets.c.payout_cents), 0))
            .where(bets.c.round_id == round_id)
            .scalar_subquery()
        )
        conn.execute(
            sa.update(rounds)
            .where(rounds.c.id == round_id)
            .values(ended_at=ended, total_bet_cents=bet_total, total_payout_cents=payout_total)
        )

    def _payment_row(self, created: datetime) -> dict[str, Any]:
        deposit = self._rng.random() < 0.8
        return {
            "player_id": self._player(),
            "kind": "deposit" if deposit else "withdrawal",
            "amount_cents": self._deposit_amount()
            if deposit
            else self._rng.choice((5_000, 10_000, 25_000, 80_000)),
            "state": "pending",
            "created_at": created,
            "updated_at": created,
            "provider": self._rng.choice(PAYMENT_PROVIDERS),
        }

    def _player(self) -> str:
        return f"p-{self._rng.randint(1, PLAYERS):06d}"

    def _bet_amount(self) -> int:
        return self._rng.choice((10, 20, 50, 100, 200, 500, 1_000, 2_500))

    def _deposit_amount(self) -> int:
        return self._rng.choice((1_000, 2_000, 5_000, 10_000, 20_000, 50_000))

    def _payout(self, amount: int) -> int:
        """A slot-like outcome: most bets lose, a few pay a multiple (return about 96 %)."""
        roll = self._rng.random()
        if roll < 0.62:
            return 0
        if roll < 0.92:
            return amount * 2
        if roll < 0.99:
            return amount * 4
        return amount * 8
