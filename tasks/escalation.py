"""Escalation I/O: climb unacknowledged incidents a level, and acknowledge incidents.

The decisions are ``floorwatch.escalation``'s; these functions read the store, record each
climb and acknowledgement in the incident's timeline and send them through the outbox
(``tasks.notify.notify_incident_event``). The plain functions serve the CLI, which runs
without a Prefect server; the tasks wrap them for the flows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from floorwatch.errors import FloorwatchError
from floorwatch.escalation import (
    ACK_EVENT,
    LEVEL_EVENT,
    EscalationDecision,
    decide,
    escalation_state,
    plan_acknowledgement,
)
from floorwatch.inventory import Inventory
from floorwatch.results import now_utc
from floorwatch.store import IncidentRow, Store
from tasks.notify import notify_incident_event

ESCALATOR: Final = "floorwatch"
ACK_NOTIFICATION: Final = "acknowledged"


def level_notification(level: int) -> str:
    """The outbox event of a climb: one per level, so each level is told exactly once."""
    return f"escalation_level_{level}"


def _describe(incident: IncidentRow) -> str:
    return f"incident #{incident.id} ({incident.target} {incident.fault_kind}, {incident.severity})"


def escalate_incident(
    store: Store, inventory: Inventory, incident: IncidentRow, now: datetime,
    unresolved: frozenset[int] = frozenset(),
) -> EscalationDecision:
    """Decide for one incident and, on a climb, notify the new level and record it.
    ``unresolved`` holds the ids of unresolved incidents (a child of one is suppressed)."""
    zone = inventory.zone(incident.zone)
    parent = incident.parent_incident_id
    state = escalation_state(incident, store.events(incident.id),
                             suppressed_by=parent if parent in unresolved else None)
    decision = decide(state, zone.escalation, zone.ack_timeout_s, now)
    if not decision.climbs:
        return decision
    data = decision.event_data(zone.ack_timeout_s)
    text = (f"{_describe(incident)} was not acknowledged within {zone.ack_timeout_s:g} s: "
            f"escalated to level {decision.level} ({decision.contact}). {incident.summary}")
    # The outbox first: its idempotency key makes a retry after a failed timeline write
    # harmless, whereas a timeline entry without its notification would never be sent.
    notify_incident_event(store, inventory, incident, level_notification(decision.level), text,
                          data=data)
    store.add_event(incident.id, LEVEL_EVENT,
                    f"escalated to level {decision.level} ({decision.contact}): "
                    f"{decision.reason}", actor=ESCALATOR, data=data, ts=now)
    return decision


def escalate_unacknowledged_incidents(
    store: Store, inventory: Inventory, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Climb every unresolved, unacknowledged incident whose level has timed out. One
    incident's failure does not stop the others; all failures are raised together after."""
    moment = now or now_utc()
    outcomes: list[dict[str, Any]] = []
    failures: list[str] = []
    incidents = store.unresolved_incidents()
    unresolved = frozenset(i.id for i in incidents)
    for incident in incidents:
        try:
            decision = escalate_incident(store, inventory, incident, moment, unresolved)
        except FloorwatchError as exc:  # unknown zone, malformed timeline, store outage
            failures.append(f"incident #{incident.id}: {exc}")
            continue
        outcomes.append({
            "incident_id": incident.id, "target": incident.target,
            "verdict": str(decision.verdict), "level": decision.level,
            "contact": decision.contact, "reason": decision.reason,
            "due_at": decision.due_at.isoformat() if decision.due_at else None,
        })
    if failures:
        raise FloorwatchError(
            f"escalation failed for {len(failures)} incident(s) (the others were handled): "
            + "; ".join(failures)
        )
    return outcomes


def acknowledge(
    store: Store, inventory: Inventory, incident_id: int, person: str, note: str = ""
) -> dict[str, Any]:
    """Acknowledge incident ``incident_id`` for ``person``: stop its escalation, show it in
    the timeline, the audit log and chat. A remediating incident keeps its state."""
    incident = store.get_incident(incident_id)
    state = escalation_state(incident, store.events(incident_id))
    plan = plan_acknowledgement(state, person)
    person = person.strip()
    note = note.strip()
    message = f"acknowledged by {person}" + (f": {note}" if note else "")
    if plan.moves_state:
        incident = store.set_incident_state(incident_id, "acknowledged", message=message,
                                            actor=person)
    else:
        store.add_event(incident_id, ACK_EVENT, f"{message} (remediation continues)",
                        actor=person, data={"note": note, "state": plan.previous_state})
        incident = store.get_incident(incident_id)
    store.append_audit(actor=person, action="acknowledge", subject=f"incident #{incident_id}",
                       details={"note": note, "previous_state": plan.previous_state,
                                "level": state.level})
    text = f"{_describe(incident)} {message}"
    data = {"person": person, "note": note, "level": state.level,
            "previous_state": plan.previous_state}
    notify_incident_event(store, inventory, incident, ACK_NOTIFICATION, text, data=data)
    return {"incident_id": incident_id, "state": incident.state, "person": person,
            "note": note, "level": state.level, "message": text}


@task(name="escalate-unacknowledged-incidents", cache_policy=NO_CACHE)
def escalate_unacknowledged_task(inventory: Inventory) -> list[dict[str, Any]]:
    """Climb the incidents nobody acknowledged in time; log each climb."""
    with Store() as store:
        outcomes = escalate_unacknowledged_incidents(store, inventory)
    logger = get_run_logger()
    for outcome in outcomes:
        if outcome["verdict"] == "climb":
            logger.warning("incident #%s: %s", outcome["incident_id"], outcome["reason"])
    return outcomes


@task(name="acknowledge-incident", cache_policy=NO_CACHE)
def acknowledge_task(
    inventory: Inventory, incident_id: int, person: str, note: str
) -> dict[str, Any]:
    """Acknowledge one incident (see ``acknowledge``)."""
    with Store() as store:
        return acknowledge(store, inventory, incident_id, person, note)
