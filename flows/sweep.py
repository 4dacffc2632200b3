"""The scheduled sweep: probe one zone's targets of one probe kind, detect incidents,
refresh the platform status. One deployment per (zone, probe kind)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event

from floorwatch.catalogue import FaultKind, Policy, ProbeKind, RunbookName, TargetKind
from floorwatch.inventory import Inventory, Target
from runbooks.frame import AUTOMATION
from runbooks.registry import FAST_PATH, FAST_PATH_POLICY, runbook_flow
from tasks.collect import probe_zone
from tasks.incidents import detect_incidents, publish_platform_status
from tasks.inventory import cached_inventory


@flow(name="sweep-zone", log_prints=False)
async def sweep_zone(zone: str, probe_kind: str, inventory_path: str) -> dict[str, Any]:
    """Probe every target of ``zone`` with ``probe_kind``, then open and resolve incidents."""
    started = time.perf_counter()
    inventory = cached_inventory(inventory_path)
    # Load the zone's fast-path runbooks while the probes wait on the network, so a repair
    # the sweep starts does not wait for its imports (1-3 s in a busy sweep process).
    warming = asyncio.create_task(
        asyncio.to_thread(warm_fast_path, inventory, zone, probe_kind))
    sweep = await probe_zone(inventory, zone, probe_kind)
    detection = detect_incidents(inventory, sweep["targets"])
    await warming
    # Repairs first: the status table can wait a second, a failover should not.
    remediations = [await run_fast_path(opened) for opened in detection["opened"]
                    if opened["policy"] == FAST_PATH_POLICY]
    await publish_platform_status(inventory)
    elapsed = time.perf_counter() - started
    interval = inventory.sweep_interval(zone, probe_kind)
    if elapsed > interval:
        # The deployment never overlaps runs (limit 1, new runs cancelled); say it ran late.
        get_run_logger().warning("sweep %s/%s took %.1f s, longer than its %g s interval",
                                 zone, probe_kind, elapsed, interval)
        emit_event(event="floorwatch.sweep.overrun",
                   resource={"prefect.resource.id": f"floorwatch.sweep.{zone}.{probe_kind}"},
                   payload={"elapsed_s": elapsed, "interval_s": interval})
    return {"sweep": sweep, "detection": detection, "elapsed_s": round(elapsed, 3),
            "overrun": elapsed > interval, "fast_path": remediations}


def warm_fast_path(inventory: Inventory, zone: str, probe_kind: str) -> list[str]:
    """Import the fast-path runbooks this sweep's incidents may start; their names. Only
    runbooks that can act on one of the sweep's targets count, so most sweeps (the hall,
    the providers) import nothing and pay nothing."""
    targets = inventory.sweep_groups().get((zone, ProbeKind(probe_kind)), ())
    names = sorted({
        str(rule.runbook) for fault in FaultKind
        if (rule := inventory.remediation_for(zone, fault)) is not None
        and rule.runbook in FAST_PATH and rule.policy == Policy.AUTOMATIC
        and any(_can_act(rule.runbook, target) for target in targets)
    })
    for name in names:
        runbook_flow(name)
    return names


def _can_act(runbook: RunbookName, target: Target) -> bool:
    if runbook == RunbookName.FAIL_OVER_DNS:
        return target.kind == TargetKind.DNS_RECORD
    if runbook == RunbookName.FAIL_OVER_SERVER:
        return target.kind == TargetKind.SERVER and target.connection.standby is not None
    return target.kind == TargetKind.SERVER or target.connection.service is not None


async def run_fast_path(opened: dict[str, Any]) -> dict[str, Any]:
    """Start a failover at once, as a subflow, instead of waiting for the event's trigger."""
    runbook = runbook_flow(opened["runbook"])
    report: dict[str, Any] = await runbook(
        target=opened["target"], incident_id=opened["incident_id"], requested_by=AUTOMATION
    )
    return report
