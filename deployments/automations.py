"""Prefect automations the main job creates on its server.

Flow failures are announced by the server, not by the failing process: a flow run that
crashes (killed, out of memory, lost heartbeat) runs no in-process hook, but the server
still emits its ``prefect.flow-run.Crashed`` event::

    flow run Failed / Crashed / TimedOut ──event──> automation "floorwatch-flow-failures"
        ──RunDeployment──> announce-flow-failure (flow run id, name, state, message)
        ──> chat notification in the outbox, with a link to the run in the UI

Every flow run on the server is matched except the announcer's own, so a failing announcer
cannot start itself in a loop (its failures are still in the UI). ``ensure_failure_automation``
is idempotent: it registers the announce deployment and creates or updates the automation by
name, so each main-job start leaves exactly one.
"""

from __future__ import annotations

import asyncio
from typing import Final
from uuid import UUID

from prefect.automations import AutomationCore, EventTrigger, Posture, RunDeployment

FAILURE_AUTOMATION: Final = "floorwatch-flow-failures"
ANNOUNCE_FLOW: Final = "announce-flow-failure"
# TimedOut is a failure too (a flow past its timeout_seconds), with its own event name.
FAILURE_EVENTS: Final = frozenset(
    {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
)
# Rendered by the server from the triggering event (Jinja), then passed as parameters.
ANNOUNCE_PARAMETERS: Final = {
    "flow_run_id": "{{ event.resource.id }}",
    "flow_run_name": "{{ event.resource.name }}",
    "state_name": "{{ event.resource['prefect.state-name'] }}",
    "state_message": "{{ event.resource['prefect.state-message'] }}",
}


def failure_automation(announce_deployment_id: UUID) -> AutomationCore:
    """The automation: any failed or crashed flow run but the announcer's starts the
    announce deployment once."""
    return AutomationCore(
        name=FAILURE_AUTOMATION,
        description="Announce failed and crashed Floorwatch flow runs in chat.",
        enabled=True,
        trigger=EventTrigger(
            expect=set(FAILURE_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow",
                           "prefect.resource.name": f"!{ANNOUNCE_FLOW}"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[RunDeployment(source="selected", deployment_id=announce_deployment_id,
                               parameters=dict(ANNOUNCE_PARAMETERS))],
    )


async def aensure_failure_automation(announce_deployment_id: UUID | None = None) -> UUID:
    """Create or update the flow-failure automation on the current Prefect API; returns its
    id. Without ``announce_deployment_id`` the announce deployment is registered first."""
    from prefect import get_client

    if announce_deployment_id is None:
        from deployments.catalog import announce_deployment_options
        from flows.flow_failures import announce_flow_failure

        deployment = await announce_flow_failure.ato_deployment(**announce_deployment_options())
        announce_deployment_id = await deployment.aapply()
    wanted = failure_automation(announce_deployment_id)
    async with get_client() as client:
        existing = await client.read_automations_by_name(FAILURE_AUTOMATION)
        if not existing:
            return await client.create_automation(wanted)
        keep, *extra = existing
        await client.update_automation(keep.id, wanted)
        for duplicate in extra:  # two main jobs raced at start: keep one announcer
            await client.delete_automation(duplicate.id)
        return keep.id


def ensure_failure_automation(announce_deployment_id: UUID | None = None) -> UUID:
    """``aensure_failure_automation`` for synchronous callers (the main job at start)."""
    return asyncio.run(aensure_failure_automation(announce_deployment_id))
