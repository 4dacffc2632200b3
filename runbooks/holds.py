"""Holds: take a target out of Floorwatch's hands, and give it back.

A held target opens no incident, nor does anything depending on it (``floorwatch.detect``),
and no runbook acts on it or on what runs on it (``runbooks.frame.hold_over``): the runbook
escalates instead. fail_over_server holds the primary it fenced, so the fenced server is not
"repaired" by restart_service while its traffic is on the standby; a person releases it
once it is fixed. People place and release holds with ``floorwatch hold``, proving who they
are with their one-time code (placing needs a technician, releasing an administrator); each
is audited, written to the hold's incident timeline and told to the team in chat.
"""

from __future__ import annotations

from floorwatch.audit import AuditLog, sinks_from_env
from floorwatch.errors import PolicyError, UnknownNameError
from floorwatch.inventory import Inventory, load_inventory
from floorwatch.roster import Roster
from floorwatch.security import HOLD, RELEASE_HOLD, required_role
from floorwatch.store import HoldRow, Store
from runbooks.frame import default_inventory_path


def _authenticate(store: Store, audit: AuditLog, person: str, code: str, action: str,
                  what: str) -> None:
    decision = Roster(store, audit).authenticate(person, code, required_role(action), what=what)
    if not decision.allowed:
        raise PolicyError(f"{what} refused: {decision.reason}")


def _tell(store: Store, inventory: Inventory, hold: HoldRow, kind: str, text: str,
          person: str) -> None:
    """Into the hold's incident timeline when it has one, and to the team either way."""
    from tasks.notify import post_summary

    if hold.incident_id is not None:
        store.add_event(hold.incident_id, kind, text, actor=person, data={"target": hold.target})
    post_summary(text, title="Hold", key=f"{kind}-{hold.id}", store=store, inventory=inventory)


def place(target: str, person: str, code: str, reason: str) -> str:
    """Hold ``target`` for ``person``; returns the line to print. PolicyError when refused,
    UnknownNameError for a target the inventory does not know, ValueError without a reason."""
    if not reason.strip():
        raise ValueError("say why the target is held (--reason)")
    inventory = load_inventory(default_inventory_path())
    inventory.target(target)  # UnknownNameError with the names it knows
    with Store() as store:
        audit = AuditLog(store, sinks_from_env())
        try:
            _authenticate(store, audit, person, code, HOLD, f"hold {target}")
            hold, placed = store.place_hold(target, reason.strip(), set_by=person)
            if not placed:
                return (f"{target} is already held since {hold.set_at:%Y-%m-%d %H:%M:%S} UTC "
                        f"by {hold.set_by}: {hold.reason}")
            audit.record(actor=person, action="hold.place", subject=target,
                         details={"reason": hold.reason, "hold_id": hold.id})
            text = (f"{target} held by {person}: {hold.reason}. No incident opens for it and "
                    "no runbook acts on it until it is released.")
            _tell(store, inventory, hold, "held", text, person)
        finally:
            audit.close()
    return text


def release(target: str, person: str, code: str) -> str:
    """Release the hold on ``target``; returns the line to print. PolicyError when refused,
    UnknownNameError when it is not held."""
    inventory = load_inventory(default_inventory_path())
    with Store() as store:
        if target not in store.active_holds():
            raise UnknownNameError(f"{target!r} is not held (floorwatch hold list)")
        audit = AuditLog(store, sinks_from_env())
        try:
            _authenticate(store, audit, person, code, RELEASE_HOLD, f"release the hold on {target}")
            hold = store.release_hold(target, released_by=person)
            audit.record(actor=person, action="hold.release", subject=target,
                         details={"reason": hold.reason, "hold_id": hold.id,
                                  "held_since": hold.set_at.isoformat()})
            text = (f"{target} released by {person} (held since "
                    f"{hold.set_at:%Y-%m-%d %H:%M:%S} UTC: {hold.reason}); Floorwatch watches "
                    "and repairs it again.")
            _tell(store, inventory, hold, "released", text, person)
        finally:
            audit.close()
    return text


def listing() -> str:
    """The active holds, one per line."""
    with Store() as store:
        holds = store.active_holds()
    if not holds:
        return "nothing is held"
    return "\n".join(
        f"{h.target}\tsince {h.set_at:%Y-%m-%d %H:%M:%S} UTC\tby {h.set_by}\t{h.reason}"
        for h in holds.values()
    )
