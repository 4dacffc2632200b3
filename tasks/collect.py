"""The sweep task: probe every target of one zone and probe kind, write the results."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from floorwatch.catalogue import ProbeKind
from floorwatch.inventory import Inventory, Probe, Target
from floorwatch.store import Store
from tasks.incidents import write_results
from tasks.sweep import sweep_checks


def checks_of(inventory: Inventory, zone: str, probe_kind: str) -> list[tuple[Target, Probe]]:
    """Every (target, probe) of ``probe_kind`` in ``zone``."""
    kind = ProbeKind(probe_kind)
    return [
        (target, probe)
        for target in inventory.zone(zone).targets
        for probe in target.probes
        if probe.kind == kind
    ]


async def load_credentials(checks: list[tuple[Target, Probe]]) -> dict[str, Any]:
    """The blocks the checks' connections name, each loaded once from the Prefect server.

    A block that cannot be loaded is logged and left out: its targets then fail their probe
    with "block ... is not loaded" instead of the whole sweep failing.
    """
    from blocks import DnsZone, SshHost

    names = {t.connection.block for t, _ in checks if t.connection.block}
    loaded: dict[str, Any] = {}
    for name in sorted(n for n in names if n):
        kinds = {t.kind for t, _ in checks if t.connection.block == name}
        block_type = SshHost if "server" in kinds else DnsZone
        try:
            loaded[name] = await block_type.aload(name)
        except ValueError as exc:  # Prefect's "Unable to find block document named ..."
            get_run_logger().error("block %r could not be loaded: %s", name, exc)
    return loaded


@task(name="probe-zone", cache_policy=NO_CACHE)
async def probe_zone(inventory: Inventory, zone: str, probe_kind: str) -> dict[str, Any]:
    """One sweep: every check concurrently, then one bulk insert of the results."""
    logger = get_run_logger()
    checks = checks_of(inventory, zone, probe_kind)
    started = time.perf_counter()
    credentials = await load_credentials(checks)
    results = await sweep_checks(checks, zone, credentials)
    probed_s = time.perf_counter() - started
    with Store() as store:
        written = write_results(store, results)
    if written["spooled"]:
        logger.error("store unavailable, %d results spooled to %s: %s",
                     written["spooled"], written["spool"], written["error"])
    failing = {r.target: list(r.faults) for r in results if not r.ok}
    logger.info("%s/%s: %d probes in %.2f s, %d failing", zone, probe_kind, len(results),
                probed_s, len(failing))
    return {
        "targets": sorted({t.name for t, _ in checks}),
        "probes": len(results), "failing": failing, "probe_s": round(probed_s, 3), **written,
    }
