"""Escalation and acknowledgement against a real store and the session's Prefect server:
unacknowledged incidents climb a level per timeout, acknowledged ones stop, and every climb
and acknowledgement is in the timeline and the outbox."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from floorwatch.errors import FloorwatchError, PolicyError, StoreError
from floorwatch.escalation import ACK_EVENT, LEVEL_EVENT
from floorwatch.inventory import load_inventory
from floorwatch.results import now_utc
from floorwatch.store import IncidentRow, Store, upgrade
from tasks.escalation import acknowledge, escalate_unacknowledged_incidents
from tests.fixtures.runbooks import People

pytestmark = pytest.mark.integration

ACK_TIMEOUT_S = 2.0

INVENTORY = f"""\
version: 1
contacts:
  ops-oncall: {{channel: slack, address: "#ops-oncall"}}
  devops: {{channel: email, address: devops@example.test}}
  backend: {{channel: telegram, address: "-100123"}}
zones:
  - name: core
    escalation: [ops-oncall, devops, backend]
    ack_timeout_s: {ACK_TIMEOUT_S}
    targets:
      - name: api-gateway
        kind: http_service
        connection: {{url: "http://127.0.0.1:9/health"}}
        probes: [{{kind: http}}]
      - name: user-service
        kind: http_service
        connection: {{url: "http://127.0.0.1:9/users"}}
        probes: [{{kind: http}}]
"""


@pytest.fixture
def inventory_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small inventory with three escalation levels and a short acknowledgement timeout."""
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    monkeypatch.setenv("FLOORWATCH_INVENTORY", str(path))
    return path


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A fresh migrated SQLite store, also the one flows open (FLOORWATCH_DATABASE_URL)."""
    url = f"sqlite:///{tmp_path / 'floorwatch.db'}"
    monkeypatch.setenv("FLOORWATCH_DATABASE_URL", url)
    monkeypatch.setenv("FLOORWATCH_HOME", str(tmp_path))
    upgrade(url)
    with Store(url) as opened:
        yield opened


@pytest.fixture
def people(store: Store, monkeypatch: pytest.MonkeyPatch) -> People:
    """People enrolled on the test store's roster, each with a real authenticator secret."""
    from floorwatch.roster import new_roster_key

    monkeypatch.setenv("FLOORWATCH_ROSTER_KEY", new_roster_key())
    return People(str(store.url))


def open_incident(store: Store, target: str, ago_s: float = 0.0) -> IncidentRow:
    detected = now_utc() - timedelta(seconds=ago_s)
    return store.open_incident(
        target=target, zone="core", fault_kind="service_down", severity="critical",
        summary=f"{target} answers 503", onset_at=detected, detected_at=detected,
    )


def levels(store: Store, incident_id: int) -> list[tuple[int, str]]:
    return [(e.data["level"], e.data["contact"]) for e in store.events(incident_id)
            if e.kind == LEVEL_EVENT]


def outbox(store: Store, incident_id: int) -> list[tuple[str, str]]:
    return [(n.event, n.channel) for n in store.notifications(incident_id=incident_id)]


async def test_unacknowledged_incident_climbs_per_timeout_and_acknowledged_one_stops(
    prefect_harness: str, inventory_file: Path, store: Store, people: People
) -> None:
    """Through the flows: the unacknowledged incident calls devops after one timeout and
    backend after two, then stops at the top; the acknowledged one never climbs, and its
    acknowledgement is in the timeline and the outbox."""
    from flows.escalation import escalate_unacknowledged
    from runbooks.acknowledge import acknowledge_incident

    loud = open_incident(store, "api-gateway")
    quiet = open_incident(store, "user-service")

    first = await escalate_unacknowledged(inventory_path=str(inventory_file))
    assert {o["incident_id"]: o["verdict"] for o in first} == {loud.id: "wait",
                                                              quiet.id: "wait"}
    ana = people.enroll("operator", name="ana")
    acked = await acknowledge_incident(incident_id=quiet.id, person=ana, note="on it",
                                       code=people.code(ana))
    assert acked["state"] == "acknowledged"

    deadline = time.monotonic() + 5 * ACK_TIMEOUT_S
    while len(levels(store, loud.id)) < 2 and time.monotonic() < deadline:
        await escalate_unacknowledged(inventory_path=str(inventory_file))
        time.sleep(0.2)
    assert levels(store, loud.id) == [(2, "devops"), (3, "backend")]

    # Each level had its full timeout, measured on the timeline's own timestamps.
    stamps = [loud.detected_at] + [e.ts for e in store.events(loud.id) if e.kind == LEVEL_EVENT]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert all(ACK_TIMEOUT_S <= gap < ACK_TIMEOUT_S + 1.5 for gap in gaps), gaps

    time.sleep(ACK_TIMEOUT_S + 0.1)
    last = await escalate_unacknowledged(inventory_path=str(inventory_file))
    assert {o["incident_id"]: o["verdict"] for o in last} == {loud.id: "top_level",
                                                             quiet.id: "acknowledged"}
    assert levels(store, loud.id) == [(2, "devops"), (3, "backend")]
    assert levels(store, quiet.id) == []

    # Each climb was queued for its level's contact, besides the zone's usual routing.
    assert outbox(store, loud.id) == [
        ("escalation_level_2", "ops-oncall"), ("escalation_level_2", "devops"),
        ("escalation_level_3", "ops-oncall"), ("escalation_level_3", "backend"),
    ]

    ack_events = [e for e in store.events(quiet.id) if e.kind == ACK_EVENT]
    assert [(e.actor, e.message) for e in ack_events] == [("ana", "acknowledged by ana: on it")]
    assert store.get_incident(quiet.id).acknowledged_at is not None
    assert [e for e, _ in outbox(store, quiet.id)] == ["acknowledged"]
    assert store.notifications(incident_id=quiet.id)[0].payload["state"] == "acknowledged"


def test_remediating_incident_is_acknowledged_without_leaving_remediation(
    inventory_file: Path, store: Store
) -> None:
    """A remediating incident keeps its state; the acknowledgement is recorded, audited and
    queued, and it stops escalation even long after the timeout."""
    inventory = load_inventory(inventory_file)
    incident = open_incident(store, "api-gateway", ago_s=60)
    store.set_incident_state(incident.id, "remediating", message="restart_service: 1 step(s)")

    result = acknowledge(store, inventory, incident.id, "bo", "watching the restart")

    assert result["state"] == "remediating"
    row = store.get_incident(incident.id)
    assert (row.state, row.acknowledged_at) == ("remediating", None)
    event = [e for e in store.events(incident.id) if e.kind == ACK_EVENT][-1]
    assert (event.actor, event.data) == ("bo", {"note": "watching the restart",
                                                 "state": "remediating"})
    assert [e for e, _ in outbox(store, incident.id)] == ["acknowledged"]
    assert store.audit_entries()[-1].action == "acknowledge"
    assert store.audit_entries()[-1].actor == "bo"

    store.set_incident_state(incident.id, "escalated", message="restart failed")
    later = now_utc() + timedelta(seconds=10 * ACK_TIMEOUT_S)
    outcome = escalate_unacknowledged_incidents(store, inventory, now=later)
    assert [o["verdict"] for o in outcome] == ["acknowledged"]
    assert levels(store, incident.id) == []


def test_cli_acknowledgement_refuses_twice_resolved_and_unknown_incidents(
    inventory_file: Path, store: Store, people: People
) -> None:
    """`floorwatch ack` answers a line to print, and refuses with the reason: already taken
    (naming who), resolved, or no such incident."""
    from runbooks.acknowledge import ack_incident

    def code(person: str) -> str:  # a fresh person per acknowledgement: codes are spent
        return people.code(people.enroll("operator", name=person))

    incident = open_incident(store, "api-gateway")
    line = ack_incident(incident.id, "ana", "looking", code("ana"))
    assert line.startswith(f"incident #{incident.id} (api-gateway service_down")
    assert line.endswith("acknowledged by ana: looking (now acknowledged)")

    with pytest.raises(PolicyError, match="already acknowledged by ana"):
        ack_incident(incident.id, "bo", code=code("bo"))
    assert [e for e, _ in outbox(store, incident.id)] == ["acknowledged"]

    fixed = open_incident(store, "user-service")
    store.set_incident_state(fixed.id, "resolved", message="recovered")
    with pytest.raises(PolicyError, match="is resolved"):
        ack_incident(fixed.id, "cy", code=code("cy"))
    with pytest.raises(StoreError, match="no incident #999"):
        ack_incident(999, "di", code=code("di"))


def test_acknowledgement_without_a_valid_code_is_refused_audited_and_changes_nothing(
    inventory_file: Path, store: Store, people: People
) -> None:
    """A wrong code, a replayed code, an unknown or blank name: each is refused with the
    reason, audited as a refusal, and the incident stays open with nothing queued."""
    from runbooks.acknowledge import ack_incident

    incident = open_incident(store, "api-gateway")
    other = open_incident(store, "user-service")
    ana = people.enroll("operator", name="ana")
    good = people.code(ana)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"

    with pytest.raises(PolicyError, match=rf"incident #{incident.id} refused: .*code"):
        ack_incident(incident.id, ana, "looking", wrong)
    ack_incident(other.id, ana, "looking", good)
    with pytest.raises(PolicyError, match="already used"):
        ack_incident(incident.id, ana, "looking", good)
    with pytest.raises(PolicyError, match="unknown person 'zed'"):
        ack_incident(incident.id, "zed", "looking", good)
    with pytest.raises(PolicyError, match="refused"):
        ack_incident(incident.id, " ", "looking", good)

    row = store.get_incident(incident.id)
    assert (row.state, row.acknowledged_at) == ("open", None)
    assert [e.kind for e in store.events(incident.id)] == ["opened"]
    assert outbox(store, incident.id) == []
    refusals = [e for e in store.audit_entries() if e.action == "auth.refused"]
    assert len(refusals) == 4
    assert all(e.subject == f"acknowledge incident #{incident.id}" for e in refusals)
    assert store.get_incident(other.id).state == "acknowledged"


def test_incident_of_an_unknown_zone_fails_loudly_but_others_still_climb(
    inventory_file: Path, store: Store
) -> None:
    """An incident whose zone left the inventory is reported by id; the others are handled."""
    inventory = load_inventory(inventory_file)
    good = open_incident(store, "api-gateway", ago_s=10 * ACK_TIMEOUT_S)
    lost = store.open_incident(
        target="old-box", zone="gone", fault_kind="service_down", severity="high",
        summary="old-box down", onset_at=now_utc(), detected_at=now_utc(),
    )
    with pytest.raises(FloorwatchError, match=rf"incident #{lost.id}: unknown zone 'gone'"):
        escalate_unacknowledged_incidents(store, inventory)
    assert levels(store, good.id) == [(2, "devops")]


def test_catalog_serves_escalation_acknowledgement_and_announcer(inventory_file: Path) -> None:
    """The main job's catalog holds the three deployments, escalation every 30 s."""
    from deployments.catalog import escalation_deployments

    built = {d.name: d for d in escalation_deployments(str(inventory_file))}
    assert set(built) == {"escalate-unacknowledged", "acknowledge-incident",
                          "announce-flow-failure"}
    schedule = built["escalate-unacknowledged"].schedules[0].schedule
    assert schedule.interval == timedelta(seconds=30)
    assert built["escalate-unacknowledged"].parameters == {"inventory_path": str(inventory_file)}


def test_child_incident_climbs_only_once_its_parent_is_resolved(
    inventory_file: Path, store: Store
) -> None:
    """A suppressed child calls nobody while its parent is unresolved, then climbs alone."""
    inventory = load_inventory(inventory_file)
    parent = open_incident(store, "api-gateway", ago_s=10 * ACK_TIMEOUT_S)
    detected = now_utc() - timedelta(seconds=10 * ACK_TIMEOUT_S)
    child = store.open_incident(
        target="user-service", zone="core", fault_kind="service_down", severity="high",
        summary="user-service behind the gateway", onset_at=detected, detected_at=detected,
        parent_incident_id=parent.id,
    )
    store.set_incident_state(parent.id, "acknowledged", message="acknowledged by ana",
                             actor="ana")

    held = escalate_unacknowledged_incidents(store, inventory)
    assert {o["incident_id"]: o["verdict"] for o in held} == {parent.id: "acknowledged",
                                                             child.id: "suppressed"}
    assert levels(store, child.id) == []

    store.set_incident_state(parent.id, "resolved", message="recovered")
    escalate_unacknowledged_incidents(store, inventory)
    assert levels(store, child.id) == [(2, "devops")]
