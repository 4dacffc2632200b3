"""Escalation timing, pure: levels climb after the acknowledgement timeout, one at a time,
and stop when acknowledged, resolved or at the top; the zone's ack_timeout_s is validated."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from floorwatch.errors import FloorwatchError, InventoryError, PolicyError
from floorwatch.escalation import (
    ACK_EVENT,
    ESCALATED_EVENT,
    LEVEL_EVENT,
    EscalationState,
    Verdict,
    decide,
    escalation_state,
    plan_acknowledgement,
)
from floorwatch.inventory import DEFAULT_ACK_TIMEOUT_S, parse_inventory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEVELS = ("ops-oncall", "devops", "backend")
TIMEOUT = 60.0


@dataclass(frozen=True)
class FakeIncident:
    id: int = 7
    state: str = "open"
    detected_at: datetime = T0
    acknowledged_at: datetime | None = None


@dataclass(frozen=True)
class FakeEvent:
    id: int
    ts: datetime
    kind: str
    actor: str = "floorwatch"
    data: dict[str, Any] = field(default_factory=dict)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def level_event(event_id: int, seconds: float, level: int) -> FakeEvent:
    return FakeEvent(event_id, at(seconds), LEVEL_EVENT, data={"level": level})


def state(level: int = 1, since: float = 0, incident_state: str = "open",
          acknowledged_by: str | None = None) -> EscalationState:
    return EscalationState(
        incident_id=7, incident_state=incident_state, level=level, since=at(since),
        acknowledged_by=acknowledged_by,
        acknowledged_at=at(since) if acknowledged_by else None,
    )


# -- decide --------------------------------------------------------------------------------


def test_unacknowledged_incident_waits_until_the_timeout() -> None:
    """Before the timeout the current level keeps the incident, with the moment it runs out."""
    decision = decide(state(), LEVELS, TIMEOUT, at(59.9))
    assert decision.verdict is Verdict.WAIT
    assert (decision.level, decision.contact, decision.due_at) == (1, "ops-oncall", at(60))


def test_unacknowledged_incident_climbs_one_level_at_the_timeout() -> None:
    """At the timeout the next level's contact is called, and its own timeout starts."""
    decision = decide(state(), LEVELS, TIMEOUT, at(60))
    assert decision.climbs
    assert (decision.level, decision.contact, decision.due_at) == (2, "devops", at(120))
    assert "not acknowledged within 60 s" in decision.reason
    assert decision.event_data(TIMEOUT) == {"level": 2, "contact": "devops",
                                            "previous_level": 1, "ack_timeout_s": 60.0}


def test_long_silence_climbs_only_one_level_per_decision() -> None:
    """Several timeouts missed at once still climb a single level: each level gets its turn."""
    decision = decide(state(level=1, since=0), LEVELS, TIMEOUT, at(10 * TIMEOUT))
    assert (decision.verdict, decision.level) == (Verdict.CLIMB, 2)


def test_top_level_stops_climbing() -> None:
    """The last level is never followed by another climb, however long it waits."""
    decision = decide(state(level=3, since=0), LEVELS, TIMEOUT, at(3600))
    assert decision.verdict is Verdict.TOP_LEVEL
    assert (decision.level, decision.contact) == (3, "backend")


def test_acknowledged_incident_stops() -> None:
    """An acknowledgement stops escalation even long after the timeout."""
    decision = decide(state(acknowledged_by="ana"), LEVELS, TIMEOUT, at(3600))
    assert decision.verdict is Verdict.ACKNOWLEDGED
    assert decision.reason == "acknowledged by ana"


def test_resolved_incident_stops() -> None:
    """A resolved incident is never escalated."""
    decision = decide(state(incident_state="resolved"), LEVELS, TIMEOUT, at(3600))
    assert decision.verdict is Verdict.RESOLVED


def test_remediating_incident_holds() -> None:
    """While automation acts, nobody more is called."""
    decision = decide(state(incident_state="remediating"), LEVELS, TIMEOUT, at(3600))
    assert decision.verdict is Verdict.REMEDIATING


def test_child_of_an_unresolved_parent_holds() -> None:
    """A suppressed child incident calls nobody while its parent is unresolved."""
    held = EscalationState(incident_id=7, incident_state="open", level=1, since=T0,
                           suppressed_by=3)
    decision = decide(held, LEVELS, TIMEOUT, at(3600))
    assert decision.verdict is Verdict.SUPPRESSED
    assert decision.reason == "its parent incident #3 is unresolved"


def test_escalated_incident_climbs_like_an_open_one() -> None:
    """An incident handed to people climbs on the same timer as an open one."""
    decision = decide(state(incident_state="escalated"), LEVELS, TIMEOUT, at(61))
    assert (decision.verdict, decision.contact) == (Verdict.CLIMB, "devops")


def test_levels_removed_from_the_inventory_count_as_top_level() -> None:
    """A stored level above the zone's current levels stops instead of failing."""
    decision = decide(state(level=5), LEVELS[:2], TIMEOUT, at(3600))
    assert (decision.verdict, decision.level, decision.contact) == (
        Verdict.TOP_LEVEL, 2, "devops")


def test_zone_without_levels_or_with_a_bad_timeout_is_an_error() -> None:
    """Decisions need levels and a positive timeout, and say so."""
    with pytest.raises(FloorwatchError, match="no escalation levels"):
        decide(state(), (), TIMEOUT, at(0))
    with pytest.raises(FloorwatchError, match="must be > 0"):
        decide(state(), LEVELS, 0, at(0))


# -- escalation_state ------------------------------------------------------------------------


def test_incident_without_climbs_is_at_level_one_since_detection() -> None:
    """No escalation_level event: level 1, counted from detection."""
    derived = escalation_state(FakeIncident(), [FakeEvent(1, at(1), "evidence")])
    assert (derived.level, derived.since, derived.acknowledged) == (1, T0, False)


def test_hand_over_to_people_restarts_the_first_level_timer() -> None:
    """An `escalated` event (a runbook gave up) starts level 1's timeout again."""
    derived = escalation_state(FakeIncident(state="escalated"),
                               [FakeEvent(1, at(300), ESCALATED_EVENT)])
    assert (derived.level, derived.since) == (1, at(300))


def test_latest_climb_sets_the_level_and_its_start() -> None:
    """The newest escalation_level event wins, whatever order the events come in."""
    events = [level_event(3, 130, 3), level_event(2, 65, 2), FakeEvent(4, at(200),
                                                                      ESCALATED_EVENT)]
    derived = escalation_state(FakeIncident(state="escalated"), events)
    assert (derived.level, derived.since) == (3, at(130))


def test_acknowledged_event_counts_without_the_state() -> None:
    """An `acknowledged` event on a remediating incident makes it acknowledged, by its actor."""
    events = [FakeEvent(1, at(30), ACK_EVENT, actor="ana")]
    derived = escalation_state(FakeIncident(state="remediating"), events)
    assert (derived.acknowledged, derived.acknowledged_by, derived.acknowledged_at) == (
        True, "ana", at(30))


def test_malformed_level_event_is_an_error_naming_it() -> None:
    """A climb event without a valid level is reported, not guessed."""
    bad = FakeEvent(9, at(60), LEVEL_EVENT, data={"level": "two"})
    with pytest.raises(FloorwatchError, match=r"incident #7: timeline event #9"):
        escalation_state(FakeIncident(), [bad])


# -- acknowledgement -------------------------------------------------------------------------


@pytest.mark.parametrize(("incident_state", "moves"), [
    ("open", True), ("escalated", True), ("remediating", False),
])
def test_acknowledgement_moves_the_state_except_under_remediation(
    incident_state: str, moves: bool
) -> None:
    """Open and escalated incidents become acknowledged; a remediating one keeps its state."""
    plan = plan_acknowledgement(state(incident_state=incident_state), "ana")
    assert (plan.moves_state, plan.previous_state) == (moves, incident_state)


def test_acknowledging_twice_or_a_resolved_incident_is_refused() -> None:
    """A second acknowledgement names the first; a resolved incident cannot be acknowledged."""
    with pytest.raises(PolicyError, match="already acknowledged by ana"):
        plan_acknowledgement(state(acknowledged_by="ana"), "bo")
    with pytest.raises(PolicyError, match="is resolved"):
        plan_acknowledgement(state(incident_state="resolved"), "bo")
    with pytest.raises(ValueError, match="name of the person"):
        plan_acknowledgement(state(), "  ")


# -- inventory: ack_timeout_s -------------------------------------------------------------------

ZONE = """\
version: 1
contacts:
  ops: {channel: slack, address: "#ops"}
  devops: {channel: email, address: devops@example.test}
zones:
  - name: core
    escalation: [ops, devops]
"""


def test_zone_ack_timeout_defaults_to_fifteen_minutes() -> None:
    """A zone without ack_timeout_s gives each level 900 s."""
    inventory = parse_inventory(ZONE + "    targets: []\n")
    assert inventory.zone("core").ack_timeout_s == DEFAULT_ACK_TIMEOUT_S == 900.0


def test_zone_ack_timeout_is_read_from_the_zone() -> None:
    """ack_timeout_s set on a zone is its timeout, integers accepted."""
    inventory = parse_inventory(ZONE + "    ack_timeout_s: 120\n    targets: []\n")
    assert inventory.zone("core").ack_timeout_s == 120.0


@pytest.mark.parametrize(("value", "message"), [
    ("0", "must be > 0"), ("-30", "must be > 0"), ("soon", "must be a number"),
    ("true", "must be a number"),
])
def test_bad_zone_ack_timeout_is_located(value: str, message: str) -> None:
    """A zero, negative or non-numeric ack_timeout_s is reported at its line and path."""
    text = ZONE + f"    ack_timeout_s: {value}\n    targets: []\n"
    with pytest.raises(InventoryError) as caught:
        parse_inventory(textwrap.dedent(text))
    assert [str(p) for p in caught.value.problems] == [
        f"inventory.yaml:8 zones[0].ack_timeout_s: {message}"]
