"""The deployments the main job serves for an inventory, and how many flow run processes its
runner may run at once."""

from __future__ import annotations

from pathlib import Path

from deployments.catalog import build_deployments, sweep_deployment_name
from deployments.main import RUNBOOK_SLOTS, process_limit
from floorwatch.inventory import load_inventory
from runbooks.registry import FLOWS, deployment_name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory.example.yaml"


def test_one_sweep_deployment_per_zone_and_probe_kind_on_its_interval() -> None:
    inventory = load_inventory(EXAMPLE)
    by_name = {d.name: d for d in build_deployments(inventory, EXAMPLE)}
    for zone, kind in inventory.sweep_groups():
        sweep = by_name[sweep_deployment_name(zone, kind)]
        (schedule,) = sweep.schedules
        assert schedule.schedule.interval.total_seconds() == inventory.sweep_interval(zone, kind)
        assert sweep.concurrency_limit == 1
        assert sweep.concurrency_options.collision_strategy == "CANCEL_NEW"
        assert sweep.parameters == {"zone": zone, "probe_kind": str(kind),
                                    "inventory_path": str(EXAMPLE)}
    for runbook in FLOWS:
        started_by = by_name[deployment_name(runbook)]
        assert not started_by.schedules
        assert started_by.triggers, runbook


def test_runbooks_never_wait_behind_sweeps_for_a_process() -> None:
    """Every scheduled deployment runs one at a time; the runner's limit leaves room for
    RUNBOOK_SLOTS runbooks even when every one of them is running."""
    deployments = build_deployments(load_inventory(EXAMPLE), EXAMPLE)
    scheduled = [d for d in deployments if d.schedules]
    assert all(d.concurrency_limit == 1 for d in scheduled if d.name != "check-inventory")
    assert process_limit(deployments) == len(scheduled) + RUNBOOK_SLOTS
    assert len(scheduled) > 5  # Prefect's own default limit of 5 would be taken by sweeps
