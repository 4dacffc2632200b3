"""acknowledge_incident: a person says "I have it"; escalation stops for that incident.

Started from the Prefect UI (the ``acknowledge-incident`` deployment) or ``floorwatch ack``
(``ack_incident``, which needs no Prefect server). An open or escalated incident moves to
``acknowledged``; a remediating one keeps its state (the runbook frame owns it and will
resolve or escalate it with evidence) and only records the acknowledgement. Either way the
acknowledgement is in the timeline, the audit log and chat, and a second one is refused
with the name of the first person.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from floorwatch.inventory import load_inventory
from floorwatch.store import Store
from runbooks.frame import default_inventory_path
from tasks.escalation import acknowledge, acknowledge_task
from tasks.inventory import cached_inventory


@flow(name="acknowledge-incident")
async def acknowledge_incident(incident_id: int, person: str, note: str = "") -> dict[str, Any]:
    """Acknowledge an incident: stop its escalation and tell the team who has it.

    Args:
        incident_id: The incident to acknowledge, e.g. 12
        person: Who takes it: your name as the team knows it
        note: What you are doing about it, in a few words
    """
    inventory = cached_inventory(default_inventory_path())
    return acknowledge_task(inventory, incident_id, person, note)


def ack_incident(incident_id: int, person: str, note: str = "") -> str:
    """Acknowledge ``incident_id`` from the command line; returns the line to print.
    Raises PolicyError (resolved, already acknowledged), StoreError (no such incident)."""
    inventory = load_inventory(default_inventory_path())
    with Store() as store:
        result = acknowledge(store, inventory, incident_id, person, note)
    return f"{result['message']} (now {result['state']})"
