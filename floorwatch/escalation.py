"""Escalation: whom to call next about an incident nobody has acknowledged. Pure.

A zone's ``escalation: [contact, ...]`` lists its levels, first level first, and its
``ack_timeout_s`` (default 900) how long each level has to acknowledge::

    detected ── level 1 ──(ack_timeout_s, no ack)──> level 2 ──(...)──> top level: stop
                   │                                    │
                   └──────── acknowledged / resolved: stop, whatever the level

The level lives in the incident's timeline, so no migration is needed and a person reading
the timeline sees each climb: every climb is an ``escalation_level`` event whose data holds
the new ``level`` (1-based) and ``contact``. An incident without one is at level 1, since it
was detected, or since it was last handed to people (an ``escalated`` state event), whichever
is later. Each level gets its full timeout: one decision climbs at most one level, even when
the flow that asks was down for longer than several timeouts.

An incident is acknowledged when its ``acknowledged_at`` is set or its timeline holds an
``acknowledged`` event. The second form exists because an incident under remediation is
acknowledged without leaving ``remediating``: the runbook frame owns that state (it moves it
to ``resolved`` or ``escalated`` with evidence), and a person saying "I am looking" must not
hide from the UI and the reports that automation is acting. A ``remediating`` incident does
not climb either: automation is working on it and will resolve or escalate it. Nor does a
child incident while its parent is unresolved (dependency suppression): people are called
about the parent, not once more per target behind it.

``decide(state, levels, ack_timeout_s, now)`` never reads the clock; ``escalation_state``
derives the state from a stored incident and its timeline; ``plan_acknowledgement`` says
what acknowledging an incident does (or why it cannot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from floorwatch.errors import FloorwatchError, PolicyError

LEVEL_EVENT: Final = "escalation_level"
ACK_EVENT: Final = "acknowledged"  # also the kind store.set_incident_state logs for the state
ESCALATED_EVENT: Final = "escalated"
# States from which a person's acknowledgement moves the incident to "acknowledged".
ACK_MOVES_STATE: Final = frozenset({"open", "escalated"})


class IncidentLike(Protocol):
    """What escalation reads of a stored incident (``store.IncidentRow`` fits)."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def detected_at(self) -> datetime: ...
    @property
    def acknowledged_at(self) -> datetime | None: ...


class EventLike(Protocol):
    """What escalation reads of a timeline event (``store.IncidentEventRow`` fits)."""

    @property
    def id(self) -> int: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


class Verdict(StrEnum):
    CLIMB = "climb"                # notify the next level now
    WAIT = "wait"                  # the current level still has time
    ACKNOWLEDGED = "acknowledged"  # a person has it: stop
    RESOLVED = "resolved"          # nothing to escalate: stop
    REMEDIATING = "remediating"    # automation is acting: hold
    SUPPRESSED = "suppressed"      # its parent incident is unresolved: hold
    TOP_LEVEL = "top_level"        # every level has been called: stop


@dataclass(frozen=True)
class EscalationState:
    """Where an incident stands: its level (1-based), since when, and who acknowledged it."""

    incident_id: int
    incident_state: str
    level: int
    since: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    suppressed_by: int | None = None  # the unresolved parent incident, if any

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None


@dataclass(frozen=True)
class EscalationDecision:
    """What to do about one incident now. ``level`` and ``contact`` are the level after the
    decision (the new one on a climb); ``due_at`` is when the current level runs out."""

    incident_id: int
    verdict: Verdict
    level: int
    contact: str | None
    reason: str
    due_at: datetime | None = None

    @property
    def climbs(self) -> bool:
        return self.verdict is Verdict.CLIMB

    def event_data(self, ack_timeout_s: float) -> dict[str, Any]:
        """The data of the ``escalation_level`` event a climb records (JSON)."""
        return {"level": self.level, "contact": self.contact, "previous_level": self.level - 1,
                "ack_timeout_s": ack_timeout_s}


@dataclass(frozen=True)
class AcknowledgementPlan:
    """What acknowledging does: move the incident to ``acknowledged``, or (under
    remediation) only record the acknowledgement in the timeline."""

    incident_id: int
    moves_state: bool
    previous_state: str


def escalation_state(
    incident: IncidentLike, events: Sequence[EventLike], suppressed_by: int | None = None
) -> EscalationState:
    """The escalation state of ``incident`` from its timeline (any order);
    ``suppressed_by`` is its parent incident when that one is unresolved."""
    ordered = sorted(events, key=lambda e: (e.ts, e.id))
    level, since = 1, incident.detected_at
    for event in ordered:
        if event.kind == LEVEL_EVENT:
            level, since = _level_of(incident.id, event), event.ts
    climbed = any(e.kind == LEVEL_EVENT for e in ordered)
    if not climbed:
        handed = [e.ts for e in ordered if e.kind == ESCALATED_EVENT]
        since = max([incident.detected_at, *handed])
    acks = [e for e in ordered if e.kind == ACK_EVENT]
    acknowledged_by = acks[0].actor if acks else None
    acknowledged_at = incident.acknowledged_at or (acks[0].ts if acks else None)
    return EscalationState(
        incident_id=incident.id, incident_state=incident.state, level=level, since=since,
        acknowledged_by=acknowledged_by, acknowledged_at=acknowledged_at,
        suppressed_by=suppressed_by,
    )


def _level_of(incident_id: int, event: EventLike) -> int:
    level = event.data.get("level")
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise FloorwatchError(
            f"incident #{incident_id}: timeline event #{event.id} ({LEVEL_EVENT}) has no valid "
            f"level (data: {event.data!r})"
        )
    return level


def decide(
    state: EscalationState, levels: Sequence[str], ack_timeout_s: float, now: datetime
) -> EscalationDecision:
    """Climb to the next level once the current one has had ``ack_timeout_s`` without an
    acknowledgement; else wait, hold (remediating) or stop (acknowledged, resolved, top)."""
    if not levels:
        raise FloorwatchError(f"incident #{state.incident_id}: the zone has no escalation levels")
    if ack_timeout_s <= 0:
        raise FloorwatchError(f"ack_timeout_s must be > 0, not {ack_timeout_s}")
    current = min(state.level, len(levels))
    contact = levels[current - 1]

    def decision(verdict: Verdict, reason: str, **more: Any) -> EscalationDecision:
        fields: dict[str, Any] = {"level": current, "contact": contact} | more
        return EscalationDecision(state.incident_id, verdict, reason=reason, **fields)

    if state.incident_state == "resolved":
        return decision(Verdict.RESOLVED, "resolved")
    if state.acknowledged:
        who = state.acknowledged_by or "someone"
        return decision(Verdict.ACKNOWLEDGED, f"acknowledged by {who}")
    if state.incident_state == "remediating":
        return decision(Verdict.REMEDIATING, "automation is remediating it")
    if state.suppressed_by is not None:
        return decision(Verdict.SUPPRESSED,
                        f"its parent incident #{state.suppressed_by} is unresolved")
    if state.level >= len(levels):
        return decision(Verdict.TOP_LEVEL,
                        f"level {current} ({contact}) is the last of {len(levels)}")
    due = state.since + timedelta(seconds=ack_timeout_s)
    if now < due:
        left = (due - now).total_seconds()
        return decision(Verdict.WAIT, f"level {current} ({contact}) has {left:.0f} s left",
                        due_at=due)
    nxt = levels[current]
    return decision(
        Verdict.CLIMB,
        f"not acknowledged within {ack_timeout_s:g} s at level {current} ({contact}): "
        f"level {current + 1} ({nxt})",
        level=current + 1, contact=nxt, due_at=now + timedelta(seconds=ack_timeout_s),
    )


def plan_acknowledgement(state: EscalationState, person: str) -> AcknowledgementPlan:
    """What acknowledging the incident does; ``PolicyError`` when it cannot be acknowledged
    (resolved, or acknowledged already) and ``ValueError`` for a blank ``person``."""
    if not person.strip():
        raise ValueError("an acknowledgement needs the name of the person acknowledging")
    if state.incident_state == "resolved":
        raise PolicyError(f"incident #{state.incident_id} is resolved; nothing to acknowledge")
    if state.acknowledged:
        when = f" at {state.acknowledged_at:%Y-%m-%d %H:%M:%S} UTC" if state.acknowledged_at else ""
        raise PolicyError(
            f"incident #{state.incident_id} was already acknowledged by "
            f"{state.acknowledged_by or 'someone'}{when}"
        )
    return AcknowledgementPlan(
        incident_id=state.incident_id, moves_state=state.incident_state in ACK_MOVES_STATE,
        previous_state=state.incident_state,
    )
