"""Tasks around the inventory file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import acreate_markdown_artifact

from floorwatch.inventory import Inventory, load_inventory

_CACHE: dict[str, tuple[int, Inventory]] = {}


def cached_inventory(path: str) -> Inventory:
    """The inventory at ``path``, parsed again only when the file changes: flows in a
    long-lived serve process run every few seconds and must not re-parse it each time."""
    resolved = str(Path(path).resolve())
    mtime = Path(resolved).stat().st_mtime_ns
    hit = _CACHE.get(resolved)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    inventory = load_inventory(resolved)
    _CACHE[resolved] = (mtime, inventory)
    return inventory


def summarize_inventory(inventory: Inventory) -> dict[str, Any]:
    """Zones with their target counts by kind: what the platform looks like."""
    zones: dict[str, dict[str, int]] = {}
    for zone in inventory.zones:
        kinds: dict[str, int] = {}
        for target in zone.targets:
            kinds[str(target.kind)] = kinds.get(str(target.kind), 0) + 1
        zones[zone.name] = kinds
    return {
        "zones": zones,
        "targets": len(inventory.targets()),
        "probes": sum(len(t.probes) for t in inventory.targets()),
        "maintenance_windows": len(inventory.maintenance),
    }


@task(name="validate-inventory", retries=0)
def validate_inventory(path: str) -> dict[str, Any]:
    """Load and validate the inventory; an invalid file fails the task with every problem."""
    return summarize_inventory(load_inventory(Path(path)))


@task(name="publish-inventory-summary")
async def publish_inventory_summary(path: str, summary: dict[str, Any]) -> None:
    """A markdown artifact with the platform's zones and targets, keyed `platform-inventory`."""
    rows = "\n".join(
        f"| {zone} | {sum(kinds.values())} | "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) + " |"
        for zone, kinds in summary["zones"].items()
    )
    await acreate_markdown_artifact(
        key="platform-inventory",
        markdown=(
            f"# Platform inventory\n\n`{path}`: {summary['targets']} targets, "
            f"{summary['probes']} probes, {summary['maintenance_windows']} maintenance windows\n\n"
            f"| zone | targets | kinds |\n|---|---|---|\n{rows}\n"
        ),
        description="Zones and targets Floorwatch watches",
    )
