"""The sandbox game database, observed with plain SQLAlchemy exactly as the SQL probe will."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from floorwatch.errors import SandboxError
from sandbox.gamedb import (
    GameDatabase,
    count_stuck_bets,
    count_stuck_payments,
    find_mismatched_rounds,
    payment_outcomes,
)
from sandbox.topology import GAMEDB_NAME, HOST, Layout, free_base_port
from tests.fixtures.sandbox import started

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GameDatabase]:
    layout = Layout(tmp_path_factory.mktemp("gamedb") / "sb", free_base_port())
    yield from started(GameDatabase(layout))


@pytest.fixture
def gamedb(sandbox_db: GameDatabase) -> Iterator[GameDatabase]:
    """The shared database, healed after each test."""
    yield sandbox_db
    sandbox_db.heal()


@pytest.fixture
def probe_engine(gamedb: GameDatabase) -> Iterator[Engine]:
    """A plain engine on the URL describe() publishes, as the SQL probe builds it."""
    engine = sa.create_engine(gamedb.describe()[GAMEDB_NAME]["url"])
    yield engine
    engine.dispose()


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("rounds", "bets", "payments")
        }


def test_describe_publishes_a_sqlite_url(gamedb: GameDatabase) -> None:
    """describe() names the database kind, backend and a URL a client can open."""
    info = gamedb.describe()[GAMEDB_NAME]
    assert info["kind"] == "database"
    assert info["backend"] == "sqlite"
    assert info["url"] == f"sqlite:///{info['path']}"
    assert Path(info["path"]).is_file()


def test_healthy_database_shows_no_fault(probe_engine: Engine) -> None:
    """A fresh database has history, no stuck rows, no mismatch and a low decline rate."""
    with probe_engine.connect() as conn:
        assert count_stuck_bets(conn) == 0
        assert find_mismatched_rounds(conn) == []
        assert count_stuck_payments(conn) == 0
        outcomes = payment_outcomes(conn)
    assert outcomes.decided > 300  # five minutes of history at about 2 payments/s
    assert outcomes.decline_rate < 0.08


def test_generator_keeps_inserting_and_settling(probe_engine: Engine) -> None:
    """Rounds, bets and payments keep arriving and no bet stays pending for long."""
    before = table_counts(probe_engine)
    time.sleep(2.5)
    after = table_counts(probe_engine)
    assert all(after[table] > before[table] for table in before), (before, after)
    with probe_engine.connect() as conn:
        assert count_stuck_bets(conn, older_than=timedelta(seconds=5)) == 0
        assert count_stuck_payments(conn, older_than=timedelta(seconds=5)) == 0


def test_stuck_bets_visible_until_healed(gamedb: GameDatabase, probe_engine: Engine) -> None:
    """stuck_bets leaves bets pending for over 15 minutes; heal voids them."""
    gamedb.inject("stuck_bets", GAMEDB_NAME)
    gamedb.inject("stuck_bets", GAMEDB_NAME)  # twice is harmless
    with probe_engine.connect() as conn:
        assert count_stuck_bets(conn) == 4
    assert gamedb.active_faults() == {GAMEDB_NAME: ["stuck_bets"]}
    gamedb.heal(GAMEDB_NAME)
    with probe_engine.connect() as conn:
        assert count_stuck_bets(conn) == 0
        assert find_mismatched_rounds(conn) == []  # the closed round adds up
    assert gamedb.active_faults() == {}


def test_settlement_mismatch_visible_until_healed(
    gamedb: GameDatabase, probe_engine: Engine
) -> None:
    """settlement_mismatch leaves one round whose payout total disagrees; heal corrects it."""
    gamedb.inject("settlement_mismatch", GAMEDB_NAME)
    with probe_engine.connect() as conn:
        mismatched = find_mismatched_rounds(conn)
    assert len(mismatched) == 1
    assert mismatched[0].total_payout_cents != mismatched[0].bets_payout_cents
    gamedb.heal()
    with probe_engine.connect() as conn:
        assert find_mismatched_rounds(conn) == []
        total = conn.execute(
            sa.text("SELECT total_payout_cents FROM rounds WHERE id = :id"),
            {"id": mismatched[0].round_id},
        ).scalar_one()
    assert total == mismatched[0].bets_payout_cents


def test_payments_stuck_visible_until_healed(gamedb: GameDatabase, probe_engine: Engine) -> None:
    """payments_stuck leaves payments pending for over 20 minutes; heal approves them."""
    gamedb.inject("payments_stuck", GAMEDB_NAME)
    with probe_engine.connect() as conn:
        assert count_stuck_payments(conn) == 3
        assert count_stuck_payments(conn, older_than=timedelta(minutes=45)) == 0
    gamedb.heal(GAMEDB_NAME)
    with probe_engine.connect() as conn:
        assert count_stuck_payments(conn) == 0


def test_payment_failures_raise_decline_rate_until_healed(
    gamedb: GameDatabase, probe_engine: Engine
) -> None:
    """payment_failures puts about 60 % declines in the last 5 minutes, kept up; heal ends it."""
    gamedb.inject("payment_failures", GAMEDB_NAME)
    with probe_engine.connect() as conn:
        at_once = payment_outcomes(conn)
    assert 0.5 < at_once.decline_rate < 0.7, at_once
    time.sleep(1.5)
    with probe_engine.connect() as conn:
        later = payment_outcomes(conn)
    assert later.declined > at_once.declined  # the generator keeps the burst going
    assert 0.5 < later.decline_rate < 0.7, later
    gamedb.heal(GAMEDB_NAME)
    with probe_engine.connect() as conn:
        healed = payment_outcomes(conn)
    assert healed.decided > 300
    assert healed.decline_rate < 0.08, healed


def test_all_faults_together_heal_at_once(gamedb: GameDatabase, probe_engine: Engine) -> None:
    """Every fault can be in force at once and one heal() undoes them all."""
    for fault in gamedb.faults():
        gamedb.inject(fault, GAMEDB_NAME)
    assert gamedb.active_faults() == {GAMEDB_NAME: sorted(gamedb.faults())}
    gamedb.heal()
    with probe_engine.connect() as conn:
        assert count_stuck_bets(conn) == 0
        assert find_mismatched_rounds(conn) == []
        assert count_stuck_payments(conn) == 0
        assert payment_outcomes(conn).decline_rate < 0.08


def test_unknown_fault_or_target_is_rejected(gamedb: GameDatabase) -> None:
    """An unknown fault, or a fault on another target, raises a SandboxError naming it."""
    with pytest.raises(SandboxError, match="unknown fault 'slow_queries'"):
        gamedb.inject("slow_queries", GAMEDB_NAME)
    with pytest.raises(SandboxError, match="does not apply to 'gateway-dns'"):
        gamedb.inject("stuck_bets", "gateway-dns")
    with pytest.raises(SandboxError, match="unknown target 'gateway-dns'"):
        gamedb.heal("gateway-dns")
    assert gamedb.active_faults() == {}


def test_unknown_backend_is_rejected(tmp_path: Path) -> None:
    """A backend other than sqlite or postgresql is refused at construction."""
    with pytest.raises(SandboxError, match="unknown backend 'mysql'"):
        GameDatabase(Layout(tmp_path / "sb", free_base_port()), backend="mysql")  # type: ignore[arg-type]


def generator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gamedb-generator"]


def test_stop_joins_the_generator(tmp_path: Path) -> None:
    """After stop() the generator thread is gone and no further rows are written."""
    component = GameDatabase(Layout(tmp_path / "sb", free_base_port()))
    before = len(generator_threads())
    try:
        component.start()
        assert len(generator_threads()) == before + 1
        component.inject("payment_failures", GAMEDB_NAME)
    finally:
        component.stop()
    assert len(generator_threads()) == before
    engine = sa.create_engine(component.describe()[GAMEDB_NAME]["url"])
    try:
        counts = table_counts(engine)
        time.sleep(0.6)
        assert table_counts(engine) == counts
    finally:
        engine.dispose()
    component.stop()  # twice is harmless


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A folder the ``postgres`` account can reach (pytest's tmp folders are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="floorwatch-gamedb-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (closed connections may linger)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited; a zombie counts, since this container's init reaps late."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.slow
def test_postgresql_backend_shows_and_heals_faults(traversable_dir: Path) -> None:
    """On PostgreSQL the same probe queries see stuck bets and failures, then their healing."""
    layout = Layout(traversable_dir / "sb", free_base_port())
    component = GameDatabase(layout, backend="postgresql")
    pid_file = layout.dir / "gamedb" / "pgdata" / "postmaster.pid"
    try:
        component.start()
        postmaster = int(pid_file.read_text().split()[0])
        info = component.describe()[GAMEDB_NAME]
        assert info["backend"] == "postgresql"
        assert info["url"].startswith("postgresql+psycopg://")
        engine = sa.create_engine(info["url"], poolclass=sa.NullPool)
        component.inject("stuck_bets", GAMEDB_NAME)
        component.inject("payment_failures", GAMEDB_NAME)
        component.inject("settlement_mismatch", GAMEDB_NAME)
        with engine.connect() as conn:
            assert count_stuck_bets(conn) == 4
            assert len(find_mismatched_rounds(conn)) == 1
            assert payment_outcomes(conn).decline_rate > 0.5
        before = table_counts(engine)
        time.sleep(1.5)
        assert table_counts(engine)["bets"] > before["bets"]
        component.heal()
        with engine.connect() as conn:
            assert count_stuck_bets(conn) == 0
            assert find_mismatched_rounds(conn) == []
            assert payment_outcomes(conn).decline_rate < 0.08
        engine.dispose()
    finally:
        component.stop()
    assert _port_free(layout.port(25))
    assert not pid_file.exists()
    assert _process_gone(postmaster)
