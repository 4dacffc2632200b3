"""Every deployment the main job serves, built from the inventory."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from floorwatch.inventory import Inventory

# A sweep never overlaps itself: a run due while the last one still runs is cancelled
# (and the late one reports its overrun), so a slow zone cannot pile up runs.
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def sweep_deployment_name(zone: str, probe_kind: str) -> str:
    return f"sweep-{zone}-{probe_kind}".replace("_", "-")


def build_deployments(inventory: Inventory, inventory_path: Path) -> list[Any]:
    """The deployments for one inventory (RunnerDeployment objects for ``prefect.serve``)."""
    from flows.housekeeping import check_inventory
    from flows.notifications import notifications_deployment
    from flows.sweep import sweep_zone

    path = str(inventory_path.resolve())
    deployments = [
        check_inventory.to_deployment(
            name="check-inventory",
            interval=timedelta(hours=1),
            parameters={"inventory_path": path},
            description="Validate the inventory and publish the platform summary.",
            tags=["floorwatch", "housekeeping"],
        ),
    ]
    for zone, probe_kind in inventory.sweep_groups():
        interval = inventory.sweep_interval(zone, probe_kind)
        deployments.append(
            sweep_zone.to_deployment(
                name=sweep_deployment_name(zone, probe_kind),
                interval=timedelta(seconds=interval),
                parameters={"zone": zone, "probe_kind": str(probe_kind), "inventory_path": path},
                description=f"Probe every {probe_kind} target of {zone} every {interval:g} s "
                "and open or resolve incidents.",
                tags=["floorwatch", "sweep", f"zone:{zone}"],
                concurrency_limit=ONE_AT_A_TIME,
            )
        )
    deployments.extend(escalation_deployments(path))
    deployments.append(notifications_deployment(path))
    deployments.extend(runbook_deployments())
    return deployments


ESCALATION_INTERVAL_S = 30


def escalation_deployments(inventory_path: str) -> list[Any]:
    """Escalation every 30 s, acknowledgement from the UI, and the flow-failure announcer
    (started by the automation ``deployments.automations`` creates)."""
    from flows.escalation import escalate_unacknowledged
    from runbooks.acknowledge import acknowledge_incident

    return [
        escalate_unacknowledged.to_deployment(
            name="escalate-unacknowledged",
            interval=timedelta(seconds=ESCALATION_INTERVAL_S),
            parameters={"inventory_path": inventory_path},
            description="Call the next escalation level about incidents nobody acknowledged "
            "within their zone's ack_timeout_s.",
            tags=["floorwatch", "escalation"],
            concurrency_limit=ONE_AT_A_TIME,
        ),
        acknowledge_incident.to_deployment(
            name="acknowledge-incident",
            description="Acknowledge an incident: stop its escalation and tell the team "
            "who has it.",
            tags=["floorwatch", "escalation"],
        ),
        announce_deployment(),
    ]


def announce_deployment_options() -> dict[str, Any]:
    """How the announce deployment is defined, shared by the catalog and the automation's
    setup (which registers it before the main job serves it: both name the same one)."""
    return {
        "name": "announce-flow-failure",
        "description": "Announce a failed or crashed flow run in chat (started by the "
        "floorwatch-flow-failures automation).",
        "tags": ["floorwatch", "notifications"],
    }


def announce_deployment() -> Any:
    """The deployment the flow-failure automation runs (call it outside an event loop)."""
    from flows.flow_failures import announce_flow_failure

    return announce_flow_failure.to_deployment(**announce_deployment_options())


def runbook_deployments() -> list[Any]:
    """One deployment per runbook, startable from the UI with its typed form, and started
    by the `floorwatch.incident.opened` events whose labels name it (policy automatic or
    approval; manual runbooks wait for a person, fast-path ones already ran)."""
    from prefect.events import DeploymentEventTrigger

    from runbooks.registry import FLOWS, deployment_name, runbook_flow

    built = []
    for name in FLOWS:
        flow = runbook_flow(name)
        trigger = DeploymentEventTrigger(
            name=f"incident opened: {name}",
            expect={"floorwatch.incident.opened"},
            match={"floorwatch.runbook": str(name),
                   "floorwatch.policy": ["automatic", "approval"]},
            parameters={
                "target": "{{ event.resource.name }}",
                "incident_id": "{{ event.payload.incident_id }}",
                "requested_by": "automation",
            },
        )
        built.append(flow.to_deployment(
            name=deployment_name(name),
            description=(flow.description or "").strip().splitlines()[0] if flow.description
            else str(name),
            tags=["floorwatch", "runbook"],
            triggers=[trigger],
        ))
    return built
