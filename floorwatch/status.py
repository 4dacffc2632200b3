"""The platform's status at a glance: per zone, how many targets are up, down, degraded,
in maintenance or unknown, and the open incidents. Pure: the sweep flow feeds it the latest
results and the unresolved incidents and publishes the table as a Prefect artifact."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from floorwatch.detect import UNREACHABLE_FAULTS
from floorwatch.inventory import Inventory, Target
from floorwatch.results import ProbeResult

STATES = ("up", "down", "degraded", "maintenance", "unknown")


class IncidentLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def target(self) -> str: ...
    @property
    def fault_kind(self) -> str: ...


@dataclass(frozen=True)
class ZoneStatus:
    zone: str
    up: int
    down: int
    degraded: int
    maintenance: int
    unknown: int
    open_incidents: tuple[str, ...]  # "#12 api-gateway service_down"

    @property
    def targets(self) -> int:
        return self.up + self.down + self.degraded + self.maintenance + self.unknown


def target_state(
    inventory: Inventory, target: Target, latest: list[ProbeResult],
    incidents: list[IncidentLike], now: datetime,
) -> str:
    """up, down, degraded, maintenance or unknown, for one target now."""
    if inventory.in_maintenance(target.name, now):
        return "maintenance"
    faults = {i.fault_kind for i in incidents}
    for result in latest:
        faults.update(result.faults)
    if faults & UNREACHABLE_FAULTS:
        return "down"
    if faults:
        return "degraded"
    # A result older than three probe intervals says nothing about now.
    fresh = [
        r for r in latest
        if now - r.ts <= timedelta(seconds=3 * max((p.interval for p in target.probes),
                                                    default=60.0))
    ]
    return "up" if fresh else "unknown"


def platform_status(
    inventory: Inventory, latest: Iterable[ProbeResult], unresolved: Iterable[IncidentLike],
    now: datetime,
) -> list[ZoneStatus]:
    """One row per zone, in inventory order."""
    latest_by_target: dict[str, list[ProbeResult]] = {}
    for result in latest:
        latest_by_target.setdefault(result.target, []).append(result)
    incidents_by_target: dict[str, list[IncidentLike]] = {}
    for incident in unresolved:
        incidents_by_target.setdefault(incident.target, []).append(incident)
    rows = []
    for zone in inventory.zones:
        counts = dict.fromkeys(STATES, 0)
        open_here: list[str] = []
        for target in zone.targets:
            incidents = incidents_by_target.get(target.name, [])
            state = target_state(
                inventory, target, latest_by_target.get(target.name, []), incidents, now
            )
            counts[state] += 1
            open_here.extend(f"#{i.id} {i.target} {i.fault_kind}" for i in incidents)
        rows.append(ZoneStatus(zone=zone.name, open_incidents=tuple(open_here), **counts))
    return rows
