"""acknowledge_incident: a person says "I have it"; escalation stops for that incident.

Started from the Prefect UI (the ``acknowledge-incident`` deployment) or ``floorwatch ack``
(``ack_incident``, which needs no Prefect server). An open or escalated incident moves to
``acknowledged``; a remediating one keeps its state (the runbook frame owns it and will
resolve or escalate it with evidence) and only records the acknowledgement. Either way the
acknowledgement is in the timeline, the audit log and chat, and a second one is refused
with the name of the first person. The person proves who they are with the one-time code
from their authenticator app and needs at least the operator role; a refusal is audited and
changes nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from floorwatch.audit import AuditLog, sinks_from_env
from floorwatch.errors import PolicyError
from floorwatch.inventory import load_inventory
from floorwatch.roster import Roster
from floorwatch.security import ACKNOWLEDGE, required_role
from floorwatch.store import Store
from runbooks.frame import default_inventory_path
from tasks.escalation import acknowledge, acknowledge_task
from tasks.inventory import cached_inventory


@flow(name="acknowledge-incident")
async def acknowledge_incident(
    incident_id: int, person: str, note: str = "", code: str = ""
) -> dict[str, Any]:
    """Acknowledge an incident: stop its escalation and tell the team who has it.

    Args:
        incident_id: The incident to acknowledge, e.g. 12
        person: Who takes it: your name on the roster
        note: What you are doing about it, in a few words
        code: Your one-time code from your authenticator app
    """
    inventory = cached_inventory(default_inventory_path())
    with Store() as store:
        authenticate_acknowledgement(store, incident_id, person, code)
    return acknowledge_task(inventory, incident_id, person, note)


def authenticate_acknowledgement(store: Store, incident_id: int, person: str, code: str) -> None:
    """Check that ``person`` may acknowledge (operator or more) with ``code``, spending the
    code; the check is audited either way. PolicyError with the reason when refused."""
    audit = AuditLog(store, sinks_from_env())
    try:
        decision = Roster(store, audit).authenticate(
            person, code, required_role(ACKNOWLEDGE), what=f"acknowledge incident #{incident_id}"
        )
    finally:
        audit.close()
    if not decision.allowed:
        raise PolicyError(f"acknowledging incident #{incident_id} refused: {decision.reason}")


def ack_incident(incident_id: int, person: str, note: str = "", code: str = "") -> str:
    """Acknowledge ``incident_id`` from the command line; returns the line to print.
    Raises PolicyError (refused person or code, resolved, already acknowledged), StoreError
    (no such incident)."""
    inventory = load_inventory(default_inventory_path())
    with Store() as store:
        authenticate_acknowledgement(store, incident_id, person, code)
        result = acknowledge(store, inventory, incident_id, person, note)
    return f"{result['message']} (now {result['state']})"
