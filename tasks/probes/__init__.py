"""Probes: one async function per probe kind, all of the same shape.

    async def probe_<kind>(target: Target, probe: <Kind>Probe, ctx: ProbeContext) -> ProbeResult

A probe returns a failed result for a broken target; it raises only ``AdapterError``
subclasses (translated from library errors at the boundary), which ``run_probe`` turns into
a failed result with the fault the target's kind points at. Blocking libraries (paramiko,
pyserial, SQLAlchemy) run in worker threads. Shared clients live in the ``ProbeContext`` for
one sweep, so a sweep reuses connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

from floorwatch.catalogue import ProbeKind
from floorwatch.errors import AdapterError, ConnectError, ProbeTimeout
from floorwatch.inventory import Probe, Target
from floorwatch.results import ProbeResult, failed, fault_for_error, now_utc, probe_id

T = TypeVar("T")

# Grace beyond a probe's own timeout before run_probe gives up on it: the probe enforces
# its timeout itself; this only catches one that does not.
TIMEOUT_GRACE_S = 1.0


@dataclass
class ProbeContext:
    """What the probes of one sweep share: the zone, credentials and pooled clients.

    ``credentials`` maps a block name (``target.connection.block``) to the loaded block
    (``SshHost``, ``DnsZone``...); the sweep loads them once, tests build them directly.
    """

    zone: str
    credentials: Mapping[str, Any] = field(default_factory=dict)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _resources: dict[str, Any] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def resource(
        self, key: str, factory: Callable[[], AbstractAsyncContextManager[T]]
    ) -> T:
        """The shared resource named ``key``, entered once per sweep and closed with it."""
        if key in self._resources:
            return self._resources[key]  # type: ignore[no-any-return]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._resources:
                self._resources[key] = await self._stack.enter_async_context(factory())
        return self._resources[key]  # type: ignore[no-any-return]

    def credential(self, target: Target, expected: type[T]) -> T:
        """The block named by the target's connection, of the expected type."""
        name = target.connection.block
        if name is None:
            raise AdapterError(target.name, "its connection names no block")
        block = self.credentials.get(name)
        if block is None:
            raise AdapterError(target.name, f"block {name!r} is not loaded")
        if not isinstance(block, expected):
            raise AdapterError(
                target.name, f"block {name!r} is a {type(block).__name__}, "
                f"expected {expected.__name__}"
            )
        return block

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._resources.clear()

    async def __aenter__(self) -> ProbeContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


ProbeFn = Callable[[Target, Any, ProbeContext], Awaitable[ProbeResult]]
PROBES: dict[ProbeKind, ProbeFn] = {}


def register(kind: ProbeKind) -> Callable[[ProbeFn], ProbeFn]:
    """Decorator: make ``fn`` the probe for ``kind``."""

    def wrap(fn: ProbeFn) -> ProbeFn:
        PROBES[kind] = fn
        return fn

    return wrap


# The module implementing each probe kind, imported on first use: a process that only
# sweeps HTTP (the sweep's worker processes) never imports paramiko, pyserial or Prefect's
# blocks.
PROBE_MODULES: dict[ProbeKind, str] = {
    ProbeKind.HTTP: "tasks.probes.http",
    ProbeKind.TCP: "tasks.probes.net",
    ProbeKind.DNS: "tasks.probes.net",
    ProbeKind.SSH_METRICS: "tasks.probes.ssh",
    ProbeKind.SQL: "tasks.probes.sql",
    ProbeKind.TERMINAL: "tasks.probes.serial",
    ProbeKind.BILL_ACCEPTOR: "tasks.probes.serial",
    ProbeKind.PRINTER: "tasks.probes.serial",
}


def probe_for(kind: ProbeKind | str) -> ProbeFn:
    """The probe function of ``kind``, importing its module on first use."""
    kind = ProbeKind(kind)
    if kind not in PROBES:
        import importlib

        importlib.import_module(PROBE_MODULES[kind])
    return PROBES[kind]


def load_all() -> dict[ProbeKind, ProbeFn]:
    """Every probe, all modules imported."""
    for kind in PROBE_MODULES:
        probe_for(kind)
    return PROBES


def _path(probe: Probe) -> str | None:
    return getattr(probe, "path", None)


def fault_of(target: Target, probe: Probe, error: AdapterError) -> str:
    """The fault an I/O failure points at: an unreachable target by its kind; a wrong answer
    the probe's own ``fault`` when the inventory names one."""
    if probe.fault is not None and not isinstance(error, (ConnectError, ProbeTimeout)):
        return str(probe.fault)
    return str(fault_for_error(target.kind, error))


async def run_probe(target: Target, probe: Probe, ctx: ProbeContext) -> ProbeResult:
    """Run one probe; never raises for a broken target or a broken probe."""
    started = time.perf_counter()
    ts = now_utc()
    try:
        fn = probe_for(probe.kind)
        return await asyncio.wait_for(fn(target, probe, ctx), probe.timeout + TIMEOUT_GRACE_S)
    except TimeoutError:
        error: AdapterError = ProbeTimeout(target.name, f"no answer within {probe.timeout:g} s")
    except AdapterError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - a probe bug must not take the sweep down
        error = AdapterError(target.name, f"probe error: {type(exc).__name__}: {exc}")
    return failed(
        target.name, ctx.zone, probe.kind, ts=ts,
        faults=(fault_of(target, probe, error),), probe=probe_id(probe.kind, _path(probe)),
        message=str(error), error_class=type(error).__name__,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
