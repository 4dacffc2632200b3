"""The sweep engine: one result per check in input order, bounded by the probes' timeouts, and
the same results whether it runs in this process or sharded over worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from floorwatch.catalogue import FaultKind, ProbeKind
from floorwatch.errors import FloorwatchError
from floorwatch.inventory import HttpProbe, Inventory, Probe, Target, TcpProbe
from floorwatch.results import ProbeResult
from sandbox.control import Sandbox
from tasks.probes import TIMEOUT_GRACE_S, ProbeContext
from tasks.sweep import (
    run_sweep,
    run_sweep_sharded,
    shutdown_workers,
    start_workers,
    sweep_checks,
    worker_pids,
)

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
FARM_TARGETS = 300
STOP_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0


class Farm:
    """A small HTTP/1.1 server on its own event loop in a thread, answering by path prefix:
    ``/ok/...`` 200 ``{"status": "ok"}``, ``/degraded/...`` 200 ``{"status": "degraded"}``,
    ``/error/...`` 503; every connection is closed after its answer."""

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        self.port = ready.result(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(STOP_TIMEOUT_S)
            assert not self._thread.is_alive(), "the farm's loop did not stop"

    def _run(self, ready: Future[int]) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._answer, HOST, 0, backlog=1024)
        ready.set_result(server.sockets[0].getsockname()[1])
        async with server:
            await self._stop.wait()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            path = head.split(b" ", 2)[1].decode()
            if path.startswith("/ok/"):
                status, body = "200 OK", b'{"status": "ok"}'
            elif path.startswith("/degraded/"):
                status, body = "200 OK", b'{"status": "degraded"}'
            else:
                status, body = "503 Service Unavailable", b'{"error": "unavailable"}'
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # a client that went away: nothing to answer
        finally:
            writer.close()


@pytest.fixture
def farm() -> Iterator[Farm]:
    """The farm server, stopped after the test."""
    server = Farm()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workers() -> Iterator[None]:
    """Stops the sweep worker pool after the test."""
    try:
        yield
    finally:
        shutdown_workers(kill=True)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def farm_checks(port: int, count: int = FARM_TARGETS) -> list[tuple[Target, Probe]]:
    """``count`` checks over the farm: healthy, degraded, erroring and refused targets, some
    of them game providers (whose failures are provider outages)."""
    refused = closed_port()
    routes = ["ok", "ok", "ok", "degraded", "error", "refused"]
    checks: list[tuple[Target, Probe]] = []
    for i in range(count):
        route = routes[i % len(routes)]
        where = f"{HOST}:{refused}" if route == "refused" else f"{HOST}:{port}"
        target = Target.model_validate({
            "name": f"farm-{i:04d}",
            "kind": "game_provider" if i % 4 == 0 else "http_service",
            "connection": {"url": f"http://{where}/{route}/{i}"},
            "probes": [{"kind": "http", "timeout": 3,
                        "expect": {"json_path": "$.status", "json_equals": "ok"}}],
        })
        checks.append((target, target.probes[0]))
    return checks


def outcome(result: ProbeResult) -> tuple[Any, ...]:
    """What a result says, without its timings."""
    return (result.target, result.probe_id, result.ok, result.faults, result.error_class,
            result.values.get("status"), result.values.get("json_value"))


async def in_process(checks: list[tuple[Target, Probe]], concurrency: int) -> list[ProbeResult]:
    async with ProbeContext(zone="farm") as ctx:
        return await run_sweep(checks, ctx, concurrency)


def http_checks(inventory: Inventory, **changes: Any) -> list[tuple[Target, Probe]]:
    """Every HTTP check of the sandbox, with ``changes`` applied to each probe."""
    return [
        (target, probe.model_copy(update=changes))
        for target in inventory.targets()
        for probe in target.probes
        if probe.kind == ProbeKind.HTTP
    ]


# in process, against the sandbox


async def test_sweep_of_sandbox_http_targets_gives_one_result_per_check_in_order(
    sandbox_state: dict[str, Any], sandbox_inventory: Inventory
) -> None:
    """Every HTTP check of the healthy sandbox passes, one result each, in input order."""
    checks = http_checks(sandbox_inventory)
    assert len(checks) >= 7
    results = await sweep_checks(checks, "sandbox")
    assert [(r.target, r.probe_id) for r in results] == [
        (t.name, f"http:{p.path}" if isinstance(p, HttpProbe) and p.path else "http")
        for t, p in checks
    ]
    assert all(r.ok for r in results), [r.error_message for r in results if not r.ok]


async def test_dead_and_slow_targets_are_reported_within_the_timeout_bound(
    sandbox_platform: Sandbox, sandbox_state: dict[str, Any], sandbox_inventory: Inventory
) -> None:
    """A refused and a hung provider are both reported, and the sweep ends within the longest
    probe timeout plus run_probe's grace, while the others pass."""
    sandbox_platform.inject("down", "provider-beta")
    sandbox_platform.inject("slow", "provider-alpha")  # 1.5 s, over the 1 s timeout below
    checks = http_checks(sandbox_inventory, timeout=1.0)
    began = time.perf_counter()
    results = await sweep_checks(checks, "sandbox", concurrency=4)
    elapsed = time.perf_counter() - began
    assert elapsed < 1.0 + TIMEOUT_GRACE_S
    by_target = {r.target: r for r in results if r.probe_id == "http"}
    assert by_target["provider-beta"].faults == (FaultKind.PROVIDER_OUTAGE,)
    assert by_target["provider-beta"].error_class == "ConnectError"
    assert by_target["provider-alpha"].faults == (FaultKind.PROVIDER_OUTAGE,)
    assert by_target["provider-alpha"].error_class == "ProbeTimeout"
    others = [r for r in results if r.target not in ("provider-alpha", "provider-beta")]
    assert others
    assert all(r.ok for r in others), [r.error_message for r in others if not r.ok]


async def test_concurrency_bounds_checks_in_flight(farm: Farm) -> None:
    """With concurrency 1 the checks run one after another and still all come back."""
    checks = farm_checks(farm.port, count=12)
    results = await in_process(checks, concurrency=1)
    assert [r.target for r in results] == [t.name for t, _ in checks]


async def test_empty_sweep_returns_no_results() -> None:
    """A sweep of nothing returns an empty list, in process and sharded."""
    assert await sweep_checks([], "empty") == []
    assert await run_sweep_sharded([], "empty") == []


async def test_concurrency_below_one_is_refused(farm: Farm) -> None:
    """A concurrency of 0 is a FloorwatchError naming it, not a sweep that never ends."""
    with pytest.raises(FloorwatchError, match="concurrency must be at least 1"):
        await sweep_checks(farm_checks(farm.port, count=2), "farm", concurrency=0)


# sharded over worker processes


async def test_sharded_sweep_gives_the_same_results_as_in_process(
    farm: Farm, workers: None
) -> None:
    """300 mixed targets give the same outcomes, in the same order, over two workers."""
    checks = farm_checks(farm.port)
    local = await in_process(checks, concurrency=100)
    sharded = await run_sweep_sharded(checks, "farm", workers=2, concurrency=100)
    assert len(worker_pids()) == 2
    assert [outcome(r) for r in sharded] == [outcome(r) for r in local]
    faults = {r.faults for r in local}
    assert faults == {(), (FaultKind.API_INTEGRATION_ERROR,), (FaultKind.PROVIDER_OUTAGE,),
                      (FaultKind.SERVICE_DOWN,)}


async def test_large_sweep_is_sharded_automatically(farm: Farm, workers: None) -> None:
    """From the shard threshold on, sweep_checks hands HTTP checks to worker processes and
    runs the others here, keeping the input order across both."""
    checks = farm_checks(farm.port)
    for position in (0, 7, 150, 299):  # TCP checks of some targets, between the HTTP ones
        target = checks[position][0]
        checks.insert(position, (target, TcpProbe(timeout=2)))
    assert worker_pids() == []
    results = await sweep_checks(checks, "farm", concurrency=100, workers=2,
                                 shard_threshold=FARM_TARGETS)
    assert len(worker_pids()) == 2
    local = await in_process(checks, concurrency=100)
    assert [outcome(r) for r in results] == [outcome(r) for r in local]
    assert [r.probe_kind for r in results].count("tcp") == 4


async def test_sweep_survives_a_killed_worker(farm: Farm, workers: None) -> None:
    """A worker killed between sweeps costs nothing: every check still gets its result."""
    checks = farm_checks(farm.port, count=60)
    await asyncio.to_thread(start_workers, 2)
    victim = worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    results = await run_sweep_sharded(checks, "farm", workers=2, concurrency=50)
    local = await in_process(checks, concurrency=50)
    assert [outcome(r) for r in results] == [outcome(r) for r in local]
    assert victim not in worker_pids()
