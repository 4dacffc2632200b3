"""The deployments the main job serves for an inventory, and how many flow run processes its
runner may run at once."""

from __future__ import annotations

from pathlib import Path

from deployments.catalog import build_deployments, sweep_deployment_name
from deployments.main import ON_DEMAND_SLOTS, split_deployments
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
    """Scheduled deployments and those started on demand get separate runners, so every
    runbook (and acknowledgement) is served apart from the sweeps."""
    deployments = build_deployments(load_inventory(EXAMPLE), EXAMPLE)
    scheduled, on_demand = split_deployments(deployments)
    assert len(scheduled) + len(on_demand) == len(deployments)
    assert {d.name for d in on_demand} >= {deployment_name(r) for r in FLOWS}
    assert "acknowledge-incident" in {d.name for d in on_demand}
    assert all(d.name.startswith("sweep-") for d in scheduled
               if d.name not in {"check-inventory", "escalate-unacknowledged",
                                 "deliver-notifications"})
    assert ON_DEMAND_SLOTS >= 2


def test_a_sweep_loads_only_the_fast_path_runbooks_its_targets_can_need() -> None:
    """The DNS sweep loads fail_over_dns, the service sweeps restart_service; the hall's and
    the providers' sweeps load nothing (no fast-path runbook can act on their targets)."""
    from flows.sweep import warm_fast_path

    inventory = load_inventory(EXAMPLE)
    assert warm_fast_path(inventory, "dns", "dns") == ["fail_over_dns"]
    assert warm_fast_path(inventory, "online-core", "http") == ["restart_service"]
    assert warm_fast_path(inventory, "hall-1", "terminal") == []
    assert warm_fast_path(inventory, "providers", "http") == []
