"""The sweep engine: run many checks concurrently, each through ``run_probe``, one result each.

``sweep_checks`` is the one entry point a Prefect task calls::

    results = await sweep_checks(checks, zone, credentials)   # list[ProbeResult], in order

Small sweeps run in this process (``run_sweep``: an asyncio fan-out bounded by
``concurrency``). A large HTTP sweep is CPU-bound on the client side (about 2,000 fresh
HTTP probes/s per core here), so from ``SHARD_THRESHOLD`` HTTP checks it is split over a pool
of worker processes, one per core (``run_sweep_sharded``), each running its own event loop
and ``ProbeContext``. The rest of the checks run here meanwhile.

Workers only run HTTP checks, so they import only the HTTP probe (not Prefect, paramiko or
pyserial); the pool is still created once, on first use or with ``start_workers``, and kept
for the life of the process. Workers fork from a forkserver
that has those modules preloaded: a pool that is replaced (after a worker died) starts in
about 0.1 s. Workers receive plain data (targets and probes as JSON, which each worker
validates once and caches), never live objects.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import logging
import math
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pydantic import TypeAdapter

from floorwatch.catalogue import ProbeKind
from floorwatch.errors import FloorwatchError
from floorwatch.inventory import AnyProbe, Probe, Target
from floorwatch.results import ProbeResult
from tasks.probes import PROBE_MODULES, TIMEOUT_GRACE_S, ProbeContext, probe_for, run_probe

log = logging.getLogger(__name__)

Check = tuple[Target, Probe]

DEFAULT_CONCURRENCY = 500
# From this many HTTP checks a sweep is sharded over worker processes. Below it one core
# finishes within about a second and the hand-over to workers would not pay for itself.
SHARD_THRESHOLD = 2000
# Modules the forkserver imports once, so that every worker forked from it starts warm:
# this one and every probe module (``run_probe`` imports them all on its first call).
PRELOAD_BASE = ("tasks.sweep", "tasks.probes")
# Slack on top of the computed bound of a shard: process hand-over, pickling, and (cold)
# the workers' start.
SHARD_SLACK_S = 10.0
COLD_START_S = 30.0
WORKER_GC_THRESHOLD = 50_000
# A worker keeps at most this many validated targets and probes between sweeps.
WORKER_CACHE_LIMIT = 100_000


# -- in process ------------------------------------------------------------------------------


async def run_sweep(
    checks: Sequence[Check], ctx: ProbeContext, concurrency: int = DEFAULT_CONCURRENCY
) -> list[ProbeResult]:
    """Run every check once, at most ``concurrency`` at a time; results in input order.

    Each check goes through ``run_probe``, which applies the probe's timeout and turns any
    failure into a failed result, so a broken target never fails the sweep.
    """
    if concurrency < 1:
        raise FloorwatchError(f"sweep concurrency must be at least 1, not {concurrency}")
    results: list[ProbeResult | None] = [None] * len(checks)
    pending = iter(enumerate(checks))

    # A fixed set of runners pulling from one iterator bounds concurrency like a semaphore,
    # without parking thousands of waiting tasks on it (which costs a large sweep ~10%).
    async def runner() -> None:
        for index, (target, probe) in pending:
            results[index] = await run_probe(target, probe, ctx)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(checks))):
            group.create_task(runner())
    return _filled(results)


def _filled(results: list[ProbeResult | None]) -> list[ProbeResult]:
    """``results`` once every slot holds one; a gap is a bug in the sweep, never dropped."""
    missing = [index for index, result in enumerate(results) if result is None]
    if missing:
        raise FloorwatchError(f"sweep lost the results of checks {missing[:10]}")
    return [result for result in results if result is not None]


# -- worker processes ------------------------------------------------------------------------

_pool: ProcessPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _mp_context() -> multiprocessing.context.BaseContext:
    # forkserver, not fork: the parent runs an event loop and threads (Prefect's among
    # them), which a plain fork would copy mid-flight. The preload makes each fork warm.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(preload_modules())
        return context
    return multiprocessing.get_context("spawn")


def preload_modules() -> list[str]:
    """The modules sweep workers need: the sweep, the probe registry and the HTTP probe."""
    return [*PRELOAD_BASE, PROBE_MODULES[ProbeKind.HTTP]]


def _worker_init() -> None:
    """Runs once in each worker: many sockets allowed, Ctrl-C left to the parent, warm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    probe_for(ProbeKind.HTTP)
    # A sweep allocates a few hundred short-lived objects per probe; with the default
    # threshold (700) the collector runs every few probes and walks the whole young heap.
    # Measured: a larger threshold, with the preloaded modules frozen out of collection,
    # saves 10-20% of a worker's CPU. Workers only sweep, so this stays local to them.
    gc.freeze()
    gc.set_threshold(WORKER_GC_THRESHOLD, 20, 20)


def _worker_ready() -> int:
    time.sleep(0.05)  # long enough for every idle worker to take one of these
    return os.getpid()


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is not None and _pool_workers != workers:
            _pool.shutdown(wait=True)
            _pool = None
        if _pool is None:
            _pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=_mp_context(), initializer=_worker_init
            )
            _pool_workers = workers
        return _pool


def _default_workers() -> int:
    return os.cpu_count() or 1


def start_workers(workers: int | None = None) -> float:
    """Start the worker pool now (it otherwise starts with the first large sweep) and wait
    until every worker is ready; returns the seconds it took. Blocking; call at start-up."""
    count = workers if workers is not None else _default_workers()
    if count < 1:
        raise FloorwatchError(f"sweep workers must be at least 1, not {count}")
    began = time.perf_counter()
    pool = _get_pool(count)
    seen: set[int] = set()
    try:
        for _ in range(10):  # each round gives every idle worker a job; bounded, not a spin
            jobs = [pool.submit(_worker_ready) for _ in range(count)]
            seen.update(job.result(timeout=COLD_START_S) for job in jobs)
            if len(seen) >= count:
                break
    except (TimeoutError, BrokenProcessPool) as exc:
        shutdown_workers(kill=True)
        reason = "not ready in time" if isinstance(exc, TimeoutError) else f"broken: {exc}"
        raise FloorwatchError(f"sweep workers could not start ({reason})") from exc
    return time.perf_counter() - began


def worker_pids() -> list[int]:
    """Process ids of the running sweep workers (empty when none runs)."""
    with _pool_lock:
        if _pool is None:
            return []
        # No public accessor before Python 3.14; read-only use of the executor's table.
        return sorted(process.pid for process in _pool._processes.values() if process.pid)


def shutdown_workers(kill: bool = False) -> None:
    """Stop the worker pool; ``kill`` ends busy workers at once instead of waiting."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    if kill:
        # ProcessPoolExecutor cannot cancel running work before 3.14 (terminate_workers).
        for process in list(pool._processes.values()):
            with contextlib.suppress(OSError):
                process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_workers)

# Per worker: validated targets and probes by their JSON, so that a worker validates each
# target once in its life, not on every sweep (validation is most of the hand-over cost).
_targets_seen: dict[str, Target] = {}
_probes_seen: dict[str, Probe] = {}
_probe_adapter: TypeAdapter[Probe] = TypeAdapter(AnyProbe)


def _target_from(text: str) -> Target:
    target = _targets_seen.get(text)
    if target is None:
        if len(_targets_seen) >= WORKER_CACHE_LIMIT:
            _targets_seen.clear()
        target = _targets_seen[text] = Target.model_validate_json(text)
    return target


def _probe_from(target: Target, ref: int | str) -> Probe:
    if isinstance(ref, int):
        return target.probes[ref]
    probe = _probes_seen.get(ref)
    if probe is None:
        if len(_probes_seen) >= WORKER_CACHE_LIMIT:
            _probes_seen.clear()
        probe = _probes_seen[ref] = _probe_adapter.validate_json(ref)
    return probe


def _run_shard(
    zone: str,
    targets: list[str],
    items: list[tuple[int, int | str]],
    credentials: Mapping[str, Any],
    concurrency: int,
) -> list[dict[str, Any]]:
    """In a worker: run one shard with its own event loop; results as plain dicts."""
    built = [_target_from(text) for text in targets]
    checks = [(built[t], _probe_from(built[t], ref)) for t, ref in items]

    async def sweep() -> list[ProbeResult]:
        async with ProbeContext(zone=zone, credentials=credentials) as ctx:
            return await run_sweep(checks, ctx, concurrency)

    return [result.model_dump() for result in asyncio.run(sweep())]


def _shard_payload(checks: Sequence[Check]) -> tuple[list[str], list[tuple[int, int | str]]]:
    """Targets as JSON (each once) and, per check, its target's index and its probe: the
    probe's index in the target when it is one of the target's own, else its JSON."""
    index_of: dict[int, int] = {}
    targets: list[str] = []
    items: list[tuple[int, int | str]] = []
    for target, probe in checks:
        position = index_of.get(id(target))
        if position is None:
            position = index_of[id(target)] = len(targets)
            targets.append(target.model_dump_json())
        ref: int | str = next(
            (i for i, own in enumerate(target.probes) if own is probe or own == probe),
            -1,
        )
        if ref == -1:
            ref = probe.model_dump_json()
        items.append((position, ref))
    return targets, items


def _shard_bound(checks: Sequence[Check], concurrency: int, cold: bool) -> float:
    """How long a shard may take: every wave of probes at its longest timeout, plus slack."""
    if not checks:
        return SHARD_SLACK_S
    longest = max(probe.timeout for _, probe in checks) + TIMEOUT_GRACE_S
    waves = math.ceil(len(checks) / concurrency)
    return waves * longest + SHARD_SLACK_S + (COLD_START_S if cold else 0.0)


async def run_sweep_sharded(
    checks: Sequence[Check],
    zone: str,
    credentials: Mapping[str, Any] | None = None,
    workers: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[ProbeResult]:
    """Run ``checks`` split over ``workers`` processes (default: one per CPU), with
    ``concurrency`` shared among them; results in input order.

    ``credentials`` are sent to the workers and must pickle (HTTP probes need none). A
    shard whose worker dies or overruns its time bound is run again in this process, so
    every check still gets its one result.
    """
    count = workers if workers is not None else _default_workers()
    if count < 1:
        raise FloorwatchError(f"sweep workers must be at least 1, not {count}")
    if concurrency < 1:
        raise FloorwatchError(f"sweep concurrency must be at least 1, not {concurrency}")
    if not checks:
        return []
    per_worker = max(1, concurrency // count)
    shards = [list(range(start, len(checks), count)) for start in range(min(count, len(checks)))]
    cold = _pool is None
    creds = dict(credentials or {})

    payloads = [_shard_payload([checks[i] for i in shard]) for shard in shards]

    def submit_all() -> list[Future[list[dict[str, Any]]]] | None:
        # In a thread: the first submit starts the workers, and a cold forkserver blocks
        # until it has imported its preload (seconds), which must not stall the event loop.
        for _attempt in range(2):
            pool = _get_pool(count)
            try:
                return [
                    pool.submit(_run_shard, zone, targets, items, creds, per_worker)
                    for targets, items in payloads
                ]
            except BrokenProcessPool:  # a worker died since the last sweep: start afresh
                log.warning("sweep %s: the worker pool is broken; starting a new one", zone)
                shutdown_workers(kill=True)
        return None

    jobs = await asyncio.to_thread(submit_all)
    if jobs is None:
        log.error("sweep %s: no worker pool could be started; sweeping in this process", zone)
        async with ProbeContext(zone=zone, credentials=creds) as ctx:
            return await run_sweep(checks, ctx, concurrency)
    futures = [asyncio.wrap_future(job) for job in jobs]
    bound = max(_shard_bound([checks[i] for i in s], per_worker, cold) for s in shards)
    _done, late = await asyncio.wait(futures, timeout=bound)
    if late:
        log.error("sweep %s: %d shard(s) overran %.0f s; restarting the workers",
                  zone, len(late), bound)
        for future in late:
            future.cancel()
        await asyncio.to_thread(shutdown_workers, True)

    results: list[ProbeResult | None] = [None] * len(checks)
    retry: list[int] = []
    for shard, future in zip(shards, futures, strict=True):
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            if error is not None:
                log.error("sweep %s: a worker failed (%s: %s); running its %d checks here",
                          zone, type(error).__name__, error, len(shard))
                if isinstance(error, BrokenProcessPool):  # a worker died: replace the pool
                    await asyncio.to_thread(shutdown_workers, True)
            retry.extend(shard)
            continue
        for index, row in zip(shard, future.result(), strict=True):
            results[index] = ProbeResult.model_validate(row)
    if retry:
        async with ProbeContext(zone=zone, credentials=creds) as ctx:
            again = await run_sweep([checks[i] for i in retry], ctx, concurrency)
        for index, result in zip(retry, again, strict=True):
            results[index] = result
    return _filled(results)


# -- the entry point -------------------------------------------------------------------------


async def sweep_checks(
    checks: Sequence[Check],
    zone: str,
    credentials: Mapping[str, Any] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    workers: int | None = None,
    shard_threshold: int = SHARD_THRESHOLD,
) -> list[ProbeResult]:
    """Probe every (target, probe) of ``zone`` once; one result per check, in input order.

    With ``shard_threshold`` HTTP checks or more and more than one worker (``workers``
    None: one per CPU), the HTTP checks are sharded over worker processes while the others
    run here; otherwise everything runs in this process. Never raises for a target.
    """
    if workers is not None and workers < 1:
        raise FloorwatchError(f"sweep workers must be at least 1, not {workers}")
    count = workers if workers is not None else _default_workers()
    http = [i for i, (_, probe) in enumerate(checks) if probe.kind == ProbeKind.HTTP]
    if count <= 1 or len(http) < shard_threshold:
        async with ProbeContext(zone=zone, credentials=credentials or {}) as ctx:
            return await run_sweep(checks, ctx, concurrency)

    others = [i for i, (_, probe) in enumerate(checks) if probe.kind != ProbeKind.HTTP]
    http_checks = [checks[i] for i in http]
    # Only the blocks the HTTP targets name go to the workers; the others stay here.
    names = {t.connection.block for t, _ in http_checks if t.connection.block}
    shared = {k: v for k, v in (credentials or {}).items() if k in names}

    async def here() -> list[ProbeResult]:
        if not others:
            return []
        async with ProbeContext(zone=zone, credentials=credentials or {}) as ctx:
            return await run_sweep([checks[i] for i in others], ctx, concurrency)

    sharded, local = await asyncio.gather(
        run_sweep_sharded(http_checks, zone, shared, count, concurrency), here()
    )
    results: list[ProbeResult | None] = [None] * len(checks)
    for index, result in zip(http, sharded, strict=True):
        results[index] = result
    for index, result in zip(others, local, strict=True):
        results[index] = result
    return _filled(results)
