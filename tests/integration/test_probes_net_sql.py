"""The tcp, dns and sql probes against the real sandbox: sockets, BIND 9 and the game database."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dns.query
import dns.rcode
import dns.update
import pytest
import sqlalchemy as sa

from blocks import DnsZone
from floorwatch.catalogue import FaultKind
from floorwatch.inventory import (
    Connection,
    DnsProbe,
    DnsThresholds,
    Inventory,
    SqlProbe,
    SqlThresholds,
    Target,
    TcpProbe,
    TcpThresholds,
)
from floorwatch.results import ProbeResult
from sandbox.control import Sandbox
from tasks.probes import ProbeContext, run_probe
from tasks.probes.sql import engine_for

pytestmark = pytest.mark.integration

GATEWAY_DNS = "gateway-dns"
GAME_DB = "game-db"
RECOVERY_S = 10.0


# -- helpers --------------------------------------------------------------------------------


async def probe_once(target: Target, probe: Any, credentials: dict[str, Any] | None = None,
                     zone: str = "test-zone") -> ProbeResult:
    """One run of ``probe`` through run_probe, in a context of its own."""
    async with ProbeContext(zone=zone, credentials=credentials or {}) as ctx:
        return await run_probe(target, probe, ctx)


async def until_ok(run: Callable[[], Awaitable[ProbeResult]]) -> ProbeResult:
    """Probe again until the result is ok (a restarted service takes a moment), bounded."""
    deadline = time.monotonic() + RECOVERY_S
    result = await run()
    while not result.ok and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        result = await run()
    return result


def with_connection(target: Target, **changes: Any) -> Target:
    """A copy of ``target`` whose connection has ``changes``."""
    return target.model_copy(update={"connection": target.connection.model_copy(update=changes)})


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing is bound to right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def url_port(target: Target) -> int:
    """The port of an HTTP target's URL."""
    port = urlsplit(target.connection.url or "").port
    assert port is not None
    return port


def tcp_target(name: str, port: int, kind: str = "tcp_endpoint") -> Target:
    return Target(name=name, kind=kind, connection=Connection(host="127.0.0.1", port=port))


def sqlite_target(path: Path) -> Target:
    return Target(name="scratch-db", kind="database", connection=Connection(url=f"sqlite:///{path}"))


def zone_update(zone: DnsZone, name: str, rdtype: str, values: list[str]) -> None:
    """Replace (or, with no values, delete) a record set by a TSIG-signed dynamic update."""
    update = dns.update.UpdateMessage(
        zone.zone_name(), keyring=zone.keyring(), keyalgorithm=zone.tsig_algorithm
    )
    if values:
        update.replace(name, 30, rdtype, *values)
    else:
        update.delete(name, rdtype)
    response = dns.query.tcp(update, zone.server, port=zone.port, timeout=3)
    assert response.rcode() == dns.rcode.NOERROR


@pytest.fixture
def dns_zone(sandbox_credentials: dict[str, Any]) -> DnsZone:
    zone = sandbox_credentials["sandbox-dns"]
    assert isinstance(zone, DnsZone)
    return zone


@pytest.fixture
def gateway(sandbox_inventory: Inventory, sandbox_state: dict[str, Any]) -> Target:
    """The gateway record target; healed after the test by sandbox_state."""
    return sandbox_inventory.target(GATEWAY_DNS)


@pytest.fixture
def game_db(sandbox_inventory: Inventory, sandbox_state: dict[str, Any]) -> Target:
    """The game database target; every fault healed after the test by sandbox_state."""
    return sandbox_inventory.target(GAME_DB)


@pytest.fixture
def silent_udp_port() -> Iterator[int]:
    """A UDP port bound on loopback that reads queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A listening port whose accept queue is full: further connects get no answer."""
    server = socket.socket()
    filler = socket.socket()
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # never accepted: one queued connection fills it
        port = server.getsockname()[1]
        filler.settimeout(2)
        filler.connect(("127.0.0.1", port))
        yield port
    finally:
        filler.close()
        server.close()


# -- tcp ------------------------------------------------------------------------------------


async def test_tcp_probe_passes_with_connect_latency(sandbox_inventory: Inventory) -> None:
    """A TCP probe of an HTTP service takes host and port from its URL and times the connect."""
    target = sandbox_inventory.target("api-gateway")
    result = await probe_once(target, TcpProbe(timeout=2))
    assert result.ok, result.error_message
    assert result.probe_id == "tcp"
    assert result.latency_ms is not None
    assert 0 < result.latency_ms < 2000
    assert result.values["address"] == f"127.0.0.1:{url_port(target)}"


async def test_tcp_probe_reports_a_down_service_as_refused(
    sandbox_platform: Sandbox, sandbox_inventory: Inventory, sandbox_state: dict[str, Any]
) -> None:
    """A service whose socket is closed fails with ConnectError and service_down, then heals."""
    target = sandbox_inventory.target("api-gateway")
    sandbox_platform.inject("down", "api-gateway")
    try:
        result = await probe_once(target, TcpProbe(timeout=2))
        assert not result.ok
        assert result.faults == (FaultKind.SERVICE_DOWN,)
        assert result.error_class == "ConnectError"
        assert "refused the connection" in (result.error_message or "")
    finally:
        sandbox_platform.heal("api-gateway")
    assert (await until_ok(lambda: probe_once(target, TcpProbe(timeout=2)))).ok


async def test_tcp_probe_sees_a_crashed_game_engine(
    sandbox_platform: Sandbox, sandbox_inventory: Inventory, sandbox_state: dict[str, Any]
) -> None:
    """After service_crash on app-primary its game engine port refuses; healing restores it."""
    target = sandbox_inventory.target("app-primary-game-engine")
    assert (await probe_once(target, TcpProbe(timeout=2))).ok
    sandbox_platform.inject("service_crash", "app-primary")
    try:
        result = await probe_once(target, TcpProbe(timeout=2))
        assert result.faults == (FaultKind.SERVICE_DOWN,)
        assert result.error_class == "ConnectError"
    finally:
        sandbox_platform.heal("app-primary")
    assert (await until_ok(lambda: probe_once(target, TcpProbe(timeout=2)))).ok


async def test_tcp_probe_times_out_when_the_accept_queue_is_full(full_backlog_port: int) -> None:
    """A connect that gets no answer ends at the probe's timeout as ProbeTimeout."""
    started = time.perf_counter()
    result = await probe_once(tcp_target("busy-endpoint", full_backlog_port), TcpProbe(timeout=0.5))
    elapsed = time.perf_counter() - started
    assert result.error_class == "ProbeTimeout"
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert "within 0.5 s" in (result.error_message or "")
    assert 0.4 < elapsed < 1.4


async def test_tcp_latency_over_threshold_is_overload_not_an_outage(
    sandbox_inventory: Inventory,
) -> None:
    """A connect slower than the threshold is infrastructure_overload for a plain endpoint and
    api_integration_error for an HTTP service, never service_down."""
    gateway = sandbox_inventory.target("api-gateway")
    strict = TcpProbe(timeout=2, thresholds=TcpThresholds(latency_ms=0.0001))
    endpoint = await probe_once(tcp_target("gateway-port", url_port(gateway)), strict)
    assert endpoint.faults == (FaultKind.INFRASTRUCTURE_OVERLOAD,)
    assert endpoint.error_class is None
    assert "threshold 0.0001 ms" in (endpoint.error_message or "")
    service = await probe_once(gateway, strict)
    assert service.faults == (FaultKind.API_INTEGRATION_ERROR,)


# -- dns ------------------------------------------------------------------------------------


async def test_dns_probe_sees_the_primary_set(gateway: Target) -> None:
    """The gateway record answers its expected address: ok, serving primary, over UDP."""
    result = await probe_once(gateway, gateway.probes[0], zone="dns")
    assert result.ok, result.error_message
    assert result.values["answer"] == ["127.0.10.1"]
    assert result.values["serving"] == "primary"
    assert result.values["transport"] == "udp"
    assert result.latency_ms is not None
    assert result.latency_ms > 0


async def test_dns_probe_reports_a_wrong_record_then_its_healing(
    sandbox_platform: Sandbox, gateway: Target
) -> None:
    """dns_wrong makes the record point elsewhere: service_down with both sets named."""
    sandbox_platform.inject("dns_wrong", GATEWAY_DNS)
    try:
        result = await probe_once(gateway, gateway.probes[0], zone="dns")
        assert result.faults == (FaultKind.SERVICE_DOWN,)
        assert result.error_class is None
        assert result.error_message == (
            "api.play.sandbox.test. A is 127.0.10.66; expected 127.0.10.1 (or backup 127.0.10.2)"
        )
        assert result.values["answer"] == ["127.0.10.66"]
        assert result.values["serving"] is None
    finally:
        sandbox_platform.heal(GATEWAY_DNS)
    healed = await probe_once(gateway, gateway.probes[0], zone="dns")
    assert healed.ok
    assert healed.values["serving"] == "primary"


async def test_dns_probe_accepts_the_backup_set_after_a_failover(
    gateway: Target, dns_zone: DnsZone
) -> None:
    """A record moved to its backup set is served (ok, serving backup), not a fault."""
    record = gateway.connection.record or ""
    zone_update(dns_zone, record, "A", ["127.0.10.2"])
    try:
        result = await probe_once(gateway, gateway.probes[0], zone="dns")
    finally:
        zone_update(dns_zone, record, "A", ["127.0.10.1"])
    assert result.ok, result.error_message
    assert result.values["answer"] == ["127.0.10.2"]
    assert result.values["serving"] == "backup"


async def test_dns_probe_reports_a_missing_name_as_nxdomain(gateway: Target) -> None:
    """A name the zone does not hold fails with service_down and says NXDOMAIN."""
    missing = with_connection(gateway, record="nowhere.play.sandbox.test.")
    result = await probe_once(missing, gateway.probes[0], zone="dns")
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.values["rcode"] == "NXDOMAIN"
    assert result.error_message == "nowhere.play.sandbox.test. does not exist (NXDOMAIN)"


async def test_dns_probe_reports_a_name_without_that_type_as_empty(gateway: Target) -> None:
    """A name that exists but has no record of the type asked fails with service_down."""
    no_aaaa = with_connection(gateway, rdtype="AAAA", expected=("::1",), backup=())
    result = await probe_once(no_aaaa, gateway.probes[0], zone="dns")
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.error_message == "api.play.sandbox.test. AAAA has no records"


async def test_dns_probe_falls_back_to_tcp_for_a_truncated_answer(
    gateway: Target, dns_zone: DnsZone
) -> None:
    """An answer too large for a datagram is asked again over TCP and compared whole."""
    name = f"big.{dns_zone.zone}"
    chunks = [f"chunk-{i:02d}-" + "x" * 90 for i in range(10)]  # about 1 KB, over 512 bytes
    zone_update(dns_zone, name, "TXT", chunks)
    try:
        big = with_connection(gateway, record=name, rdtype="TXT", expected=tuple(chunks),
                              backup=())
        result = await probe_once(big, gateway.probes[0], zone="dns")
    finally:
        zone_update(dns_zone, name, "TXT", [])
    assert result.ok, result.error_message
    assert result.values["transport"] == "tcp"
    assert result.values["answer"] == sorted(chunks)


async def test_dns_probe_times_out_on_a_silent_server(
    gateway: Target, silent_udp_port: int
) -> None:
    """A server that never answers ends at the probe's timeout as ProbeTimeout."""
    silent = with_connection(gateway, port=silent_udp_port)
    started = time.perf_counter()
    result = await probe_once(silent, DnsProbe(timeout=0.5), zone="dns")
    assert result.error_class == "ProbeTimeout"
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert time.perf_counter() - started < 1.4


async def test_dns_probe_reports_a_closed_port_as_refused(gateway: Target) -> None:
    """A closed UDP port (ICMP port unreachable) is a ConnectError at once, not a timeout."""
    closed = with_connection(gateway, port=free_port(socket.SOCK_DGRAM))
    started = time.perf_counter()
    result = await probe_once(closed, DnsProbe(timeout=2), zone="dns")
    assert result.error_class == "ConnectError"
    assert "refused the DNS query" in (result.error_message or "")
    assert time.perf_counter() - started < 1.0


async def test_dns_latency_over_threshold_is_overload(gateway: Target) -> None:
    """A right answer slower than the threshold is infrastructure_overload, still serving."""
    strict = DnsProbe(timeout=2, thresholds=DnsThresholds(latency_ms=0.0001))
    result = await probe_once(gateway, strict, zone="dns")
    assert result.faults == (FaultKind.INFRASTRUCTURE_OVERLOAD,)
    assert result.values["serving"] == "primary"


# -- sql ------------------------------------------------------------------------------------


async def test_sql_probe_passes_on_a_healthy_game_database(game_db: Target) -> None:
    """The live game database: reachable, quick, nothing stuck, decline rate low."""
    result = await probe_once(game_db, game_db.probes[0], zone="online-core")
    assert result.ok, result.error_message
    values = result.values
    assert values["stuck_bets"] == values["stuck_payments"] == values["mismatched_rounds"] == 0
    assert values["payments_decided_5m"] >= 20
    assert values["payment_decline_rate"] < 0.2
    assert result.latency_ms is not None
    assert result.latency_ms < 1000


async def test_sql_probe_lists_stuck_bets_then_their_healing(
    sandbox_platform: Sandbox, game_db: Target
) -> None:
    """Bets pending for 20-25 minutes are stuck_bets, with their ids and age."""
    sandbox_platform.inject("stuck_bets", GAME_DB)
    result = await probe_once(game_db, game_db.probes[0])
    assert result.faults == (FaultKind.STUCK_BETS,)
    assert result.values["stuck_bets"] == 4
    assert len(result.values["stuck_bet_ids"]) == 4
    # 20-25 minutes: the UTC times survive the round trip through SQLite's text columns.
    assert 19 < result.values["oldest_stuck_bet_minutes"] < 27
    assert "4 bets pending for over 10 min" in (result.error_message or "")
    sandbox_platform.heal(GAME_DB)
    assert (await probe_once(game_db, game_db.probes[0])).ok


async def test_sql_probe_finds_a_settlement_mismatch(
    sandbox_platform: Sandbox, game_db: Target
) -> None:
    """A round paying 2500.00 more than its bets is settlement_mismatch, with its id."""
    sandbox_platform.inject("settlement_mismatch", GAME_DB)
    result = await probe_once(game_db, game_db.probes[0])
    assert result.faults == (FaultKind.SETTLEMENT_MISMATCH,)
    assert result.values["mismatched_rounds"] == 1
    assert len(result.values["mismatched_round_ids"]) == 1
    assert result.values["mismatch_cents"] == 250_000
    sandbox_platform.heal(GAME_DB)
    assert (await probe_once(game_db, game_db.probes[0])).ok


async def test_sql_probe_finds_stuck_payments(sandbox_platform: Sandbox, game_db: Target) -> None:
    """Withdrawals pending 25-40 minutes are a payment_processing_delay, with their ids."""
    sandbox_platform.inject("payments_stuck", GAME_DB)
    result = await probe_once(game_db, game_db.probes[0])
    assert result.faults == (FaultKind.PAYMENT_PROCESSING_DELAY,)
    assert result.values["stuck_payments"] == 3
    assert len(result.values["stuck_payment_ids"]) == 3
    assert 39 < result.values["oldest_stuck_payment_minutes"] < 42
    sandbox_platform.heal(GAME_DB)
    assert (await probe_once(game_db, game_db.probes[0])).ok


async def test_sql_probe_finds_a_payment_failure_burst(
    sandbox_platform: Sandbox, game_db: Target
) -> None:
    """About 60 % declined over five minutes is a payment_processing_delay with the rate."""
    sandbox_platform.inject("payment_failures", GAME_DB)
    result = await probe_once(game_db, game_db.probes[0])
    assert result.faults == (FaultKind.PAYMENT_PROCESSING_DELAY,)
    assert result.values["payment_decline_rate"] > 0.5
    assert result.values["stuck_payments"] == 0
    assert "were declined (threshold 20%)" in (result.error_message or "")
    sandbox_platform.heal(GAME_DB)
    assert (await probe_once(game_db, game_db.probes[0])).ok


async def test_sql_probe_lists_every_fault_at_once(
    sandbox_platform: Sandbox, game_db: Target
) -> None:
    """Four data faults at once give three fault kinds and four findings in the message."""
    for fault in ("stuck_bets", "settlement_mismatch", "payments_stuck", "payment_failures"):
        sandbox_platform.inject(fault, GAME_DB)
    result = await probe_once(game_db, game_db.probes[0])
    assert result.faults == (
        FaultKind.STUCK_BETS, FaultKind.SETTLEMENT_MISMATCH, FaultKind.PAYMENT_PROCESSING_DELAY
    )
    assert len((result.error_message or "").split("; ")) == 4


async def test_sql_latency_over_threshold_is_overload(game_db: Target) -> None:
    """SELECT 1 slower than the latency threshold is infrastructure_overload."""
    strict = SqlProbe(timeout=5, thresholds=SqlThresholds(latency_ms=0.0001))
    result = await probe_once(game_db, strict)
    assert result.faults == (FaultKind.INFRASTRUCTURE_OVERLOAD,)
    assert "SELECT 1 took" in (result.error_message or "")


async def test_sql_probe_shares_one_engine_per_url_in_a_sweep(game_db: Target) -> None:
    """Two probes of one database in a sweep use one engine, disposed when the sweep ends."""
    async with ProbeContext(zone="online-core") as ctx:
        first = await engine_for(ctx, game_db, 5)
        assert await engine_for(ctx, game_db, 5) is first
        assert (await run_probe(game_db, game_db.probes[0], ctx)).ok
        pool = first.pool
    assert first.pool is not pool  # dispose() replaced the pool the sweep used


async def test_sql_probe_reports_a_missing_sqlite_file_without_creating_it(
    tmp_path: Path,
) -> None:
    """A database file that is not there is a ConnectError, and the probe does not create it."""
    path = tmp_path / "absent.sqlite"
    result = await probe_once(sqlite_target(path), SqlProbe(timeout=2))
    assert result.error_class == "ConnectError"
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert "does not exist" in (result.error_message or "")
    assert not path.exists()


async def test_sql_probe_reports_an_unreachable_server_without_its_password() -> None:
    """A PostgreSQL URL nobody listens on is a ConnectError whose message hides the password."""
    url = f"postgresql+psycopg://floorwatch:s3cret-pw@127.0.0.1:{free_port()}/gamedb"
    target = Target(name="pg-db", kind="database", connection=Connection(url=url))
    result = await probe_once(target, SqlProbe(timeout=2))
    assert result.error_class == "ConnectError"
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    message = result.error_message or ""
    assert "cannot connect to postgresql 127.0.0.1" in message
    assert "s3cret-pw" not in message


async def test_sql_probe_reports_a_database_without_the_schema(tmp_path: Path) -> None:
    """A database that answers but lacks the tables fails the collections: CommandFailed."""
    path = tmp_path / "empty.sqlite"
    sqlite3.connect(path).close()
    result = await probe_once(sqlite_target(path), SqlProbe(timeout=2))
    assert result.error_class == "CommandFailed"
    assert result.faults == (FaultKind.API_INTEGRATION_ERROR,)
    assert "no such table" in (result.error_message or "")


async def test_sql_probe_times_out_on_a_locked_database(tmp_path: Path) -> None:
    """A database held under an exclusive lock ends the probe at its timeout: ProbeTimeout."""
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE bets (id INTEGER)")
        holder.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        result = await probe_once(sqlite_target(path), SqlProbe(timeout=0.5))
        assert result.error_class == "ProbeTimeout"
        assert time.perf_counter() - started < 1.4
    finally:
        holder.close()


@pytest.mark.slow
async def test_sql_probe_finds_every_fault_on_postgresql(postgres_url: str) -> None:
    """On PostgreSQL the same probe finds stuck bets, a mismatch, a stuck payment and declines."""
    from sandbox.gamedb import bets, metadata, payments, rounds

    now = datetime.now(UTC)
    engine = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(sa.insert(rounds), [
                # Same keys in every row: an executemany takes its columns from the first.
                {"id": 1, "provider": "p", "game": "g", "started_at": now - timedelta(minutes=31),
                 "ended_at": None, "total_payout_cents": 0},
                {"id": 2, "provider": "p", "game": "g", "started_at": now - timedelta(minutes=2),
                 "ended_at": now - timedelta(minutes=2), "total_payout_cents": 500},
            ])
            conn.execute(sa.insert(bets), [
                {"round_id": 1, "player_id": "p1", "amount_cents": 100, "state": "pending",
                 "placed_at": now - timedelta(minutes=30), "settled_at": None,
                 "payout_cents": None},
                {"round_id": 2, "player_id": "p2", "amount_cents": 100, "state": "settled",
                 "placed_at": now - timedelta(minutes=2), "settled_at": now,
                 "payout_cents": 100},
            ])
            decided = [
                {"player_id": "p3", "kind": "deposit", "amount_cents": 1000,
                 "state": "declined" if i < 10 else "approved",
                 "created_at": now - timedelta(minutes=1), "updated_at": now, "provider": "c"}
                for i in range(25)
            ]
            stuck = {"player_id": "p4", "kind": "withdrawal", "amount_cents": 5000,
                     "state": "pending", "created_at": now - timedelta(minutes=30),
                     "updated_at": now - timedelta(minutes=30), "provider": "sepa"}
            conn.execute(sa.insert(payments), [*decided, stuck])
    finally:
        engine.dispose()
    target = Target(name="pg-db", kind="database", connection=Connection(url=postgres_url))
    result = await probe_once(target, SqlProbe(timeout=5))
    assert result.faults == (
        FaultKind.STUCK_BETS, FaultKind.SETTLEMENT_MISMATCH, FaultKind.PAYMENT_PROCESSING_DELAY
    )
    values = result.values
    assert values["stuck_bets"] == 1
    assert 29.5 < values["oldest_stuck_bet_minutes"] < 31
    assert values["mismatched_round_ids"] == [2]
    assert values["mismatch_cents"] == 400
    assert values["stuck_payments"] == 1
    assert 29.5 < values["oldest_stuck_payment_minutes"] < 31
    assert values["payment_decline_rate"] == 0.4


async def test_sql_probe_refuses_a_bad_url_without_quoting_it() -> None:
    """A URL SQLAlchemy cannot parse fails the probe with a message that does not quote it."""
    url = "postgresql://floorwatch:s3cret-pw@127.0.0.1:port/gamedb"
    target = Target(name="bad-db", kind="database", connection=Connection(url=url))
    result = await probe_once(target, SqlProbe(timeout=2))
    assert result.error_class == "AdapterError"
    assert result.error_message == "bad-db: connection.url is not a valid SQLAlchemy URL"
