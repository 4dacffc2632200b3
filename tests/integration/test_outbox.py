"""The durable outbox end to end: producers enqueue, ``deliver_pending`` (and the
``deliver-notifications`` flow) delivers to the sandbox's chat stand-ins through the real
clients. A chat outage delays messages, which then arrive once, in order; a channel that can
never take a message is failed with its reason, reported elsewhere, and not retried again.
The store's queue operations run on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from blocks import SlackChat, SmsGateway, TelegramBot
from deployments.sandbox_blocks import chat_blocks
from floorwatch import store as store_module
from floorwatch.errors import UnknownNameError
from floorwatch.inventory import Inventory, parse_inventory
from floorwatch.notify import Message, RetryPolicy, idempotency_key
from floorwatch.store import IncidentRow, Store
from sandbox.saas import SLACK_CHANNELS, TELEGRAM, SaasStandIns
from sandbox.topology import Layout, free_base_port
from tasks.notify import (
    Channels,
    deliver_pending,
    enqueue,
    notifier_for,
    notify_incident_event,
    notify_timeline,
    post_summary,
    secret_values,
    timeline_event,
)

pytestmark = pytest.mark.integration

FAST = RetryPolicy(base_s=0.05, cap_s=0.2)
OPS = SLACK_CHANNELS["ops-oncall"]

INVENTORY = """\
version: 1
contacts:
  ops-oncall: {channel: slack, address: "#ops-oncall", block: outbox-slack}
  backend: {channel: telegram, address: "-1001234567890", block: outbox-telegram}
  techs: {channel: sms, address: "+35699000000", block: outbox-sms}
  wrong-number: {channel: sms, address: "+0000000", block: outbox-sms}
routing:
  - severities: [critical]
    channels: [ops-oncall, backend]
  - zones: [hall]
    channels: [wrong-number]
zones:
  - name: core
    escalation: [ops-oncall, backend]
    targets:
      - {name: api, kind: http_service, connection: {url: "http://127.0.0.1:1/health"}}
  - name: hall
    escalation: [techs, ops-oncall]
    targets:
      - {name: gate, kind: http_service, connection: {url: "http://127.0.0.1:2/health"}}
"""


@pytest.fixture(scope="module")
def saas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaasStandIns]:
    """The chat stand-ins for the module, always stopped."""
    component = SaasStandIns(Layout(tmp_path_factory.mktemp("saas") / "sb", free_base_port()))
    component.start()
    try:
        yield component
    finally:
        component.stop()


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "saas" in request.fixturenames:
        request.getfixturevalue("saas").heal()


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return parse_inventory(INVENTORY)


def _named_blocks(saas: SaasStandIns) -> dict[str, SlackChat | TelegramBot | SmsGateway]:
    """The stand-ins' blocks under the names this test's contacts use."""
    by_type = {type(b): b for b in chat_blocks(saas.describe()).values()}
    return {"outbox-slack": by_type[SlackChat], "outbox-telegram": by_type[TelegramBot],
            "outbox-sms": by_type[SmsGateway]}


@pytest.fixture
def channels(saas: SaasStandIns, inventory: Inventory) -> Channels:
    """A notifier per contact, built from the stand-ins' blocks (no Prefect server)."""
    blocks = _named_blocks(saas)
    notifiers = {c.name: notifier_for(c, blocks[c.block or ""])
                 for c in inventory.contacts.values()}
    return Channels(notifiers=notifiers, secrets=secret_values(blocks.values()))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh, migrated SQLite store."""
    url = f"sqlite:///{tmp_path / 'floorwatch.db'}"
    store_module.upgrade(url)
    with Store(url) as opened:
        yield opened


def _incident(s: Store, target: str = "api", zone: str = "core",
              severity: str = "critical") -> IncidentRow:
    now = datetime.now(UTC)
    return s.open_incident(target=target, zone=zone, fault_kind="service_down",
                           severity=severity, summary=f"{target} refuses connections",
                           onset_at=now, detected_at=now)


def _timeline(s: Store, inventory: Inventory, incident: IncidentRow, kind: str,
              text: str, data: dict[str, Any] | None = None) -> None:
    """What the runbook frame's ctx.timeline does: the timeline entry, then its chat."""
    event_id = s.add_event(incident.id, kind, text, actor="automation", data=data)
    notify_timeline(s, inventory, incident, kind, text, data, event_id)


def _slack_since(saas: SaasStandIns, before: int) -> list[dict[str, Any]]:
    return saas.received()["slack"][before:]


# -- the outage --------------------------------------------------------------------------------


def test_a_chat_outage_delays_every_message_which_then_arrives_once_in_order(
    saas: SaasStandIns, store: Store, inventory: Inventory, channels: Channels,
) -> None:
    """Slack is down while an incident runs its course; when it is back, the incident's
    message and its thread arrive once, in order, and Telegram was never held up."""
    slack_before = len(saas.received()["slack"])
    telegram_before = len(saas.received()[TELEGRAM])
    saas.inject("chat_down", "slack")

    incident = _incident(store)
    notify_incident_event(store, inventory, incident, "opened", incident.summary)
    first = deliver_pending(store, channels, inventory, policy=FAST, time_budget_s=5)
    assert first.delivered == [f"{incident.id}:opened:backend"]
    assert "ops-oncall" in first.deferred
    _timeline(store, inventory, incident, "diagnosis", "game-engine is not listening")
    incident = store.set_incident_state(incident.id, "remediating", message="restarting")
    _timeline(store, inventory, incident, "step", "restarted game-engine", {"output": "ok"})
    incident = store.set_incident_state(incident.id, "resolved", message="verified")
    _timeline(store, inventory, incident, "report", "restart_service: resolved",
              {"outcome": "resolved", "reason": "recovery verified by the probes",
               "runbook": "restart_service"})
    for _ in range(3):  # the outage goes on: retries, but nothing overtakes the first
        time.sleep(0.25)
        during = deliver_pending(store, channels, inventory, policy=FAST, time_budget_s=5)
        assert not [k for k in during.delivered if k.endswith(":ops-oncall")]
    slack_rows = store.notifications(incident.id, "ops-oncall")
    assert [r.state for r in slack_rows] == ["pending"] * 4
    assert slack_rows[0].attempts == 4
    assert [r.attempts for r in slack_rows[1:]] == [0, 0, 0]
    assert "cannot reach the service" in (slack_rows[0].last_error or "")

    saas.heal("slack")
    time.sleep(0.25)  # the head's backoff
    after = deliver_pending(store, channels, inventory, policy=FAST, time_budget_s=5)
    events = [r.event for r in slack_rows]
    assert events[0] == "opened"
    assert events[-1] == "resolved"
    assert [k for k in after.delivered if k.endswith(":ops-oncall")] == [
        idempotency_key(incident.id, e, "ops-oncall") for e in events]

    posted = _slack_since(saas, slack_before)
    assert len(posted) == 4
    root, *thread = posted
    assert [m["thread_ts"] for m in thread] == [root["ts"]] * 3
    assert [m["text"].split(":")[0] for m in thread] == ["Diagnosis", "Action", "Resolved"]
    assert root["edited"]
    assert "(resolved)" in root["text"]
    assert len(saas.received()[TELEGRAM]) - telegram_before == 4

    again = deliver_pending(store, channels, inventory, policy=FAST, time_budget_s=5)
    assert again.delivered == []
    assert len(_slack_since(saas, slack_before)) == 4
    assert {r.state for r in store.notifications(incident.id)} == {"delivered"}


def test_two_delivery_runs_at_once_send_each_message_once(
    saas: SaasStandIns, store: Store, inventory: Inventory, channels: Channels,
) -> None:
    """Leases keep concurrent delivery runs from sending the same row twice."""
    before = len(saas.received()["slack"])
    incidents = [_incident(store, target=t) for t in ("api", "gate")]
    for incident in incidents:
        for n in range(5):
            notify_incident_event(store, inventory, incident, f"step#{n}",
                                  f"{incident.target} step {n}", channels=["ops-oncall"])
    runs = [threading.Thread(target=deliver_pending, args=(store, channels, inventory),
                             kwargs={"policy": FAST, "time_budget_s": 10}) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(30)
    posted = _slack_since(saas, before)
    texts = [m["text"] for m in posted if "step" in m["text"]]
    assert len(texts) == len(set(texts)) == 8  # the first event of each is its incident message
    assert len(posted) == 10
    for incident in incidents:
        rows = store.notifications(incident.id, "ops-oncall")
        assert {r.state for r in rows} == {"delivered"}
        refs = [r.delivery_ref for r in rows]
        assert refs == sorted(refs, key=lambda ts: float(ts or 0))  # in order per incident


# -- channels that never work ------------------------------------------------------------------


def test_a_revoked_token_fails_the_message_reports_it_elsewhere_and_never_retries(
    saas: SaasStandIns, store: Store, inventory: Inventory, channels: Channels,
) -> None:
    """token_revoked fails the Slack message for good with its reason; the zone's next
    contact (Telegram) is told; later runs leave the failed row alone."""
    telegram_before = len(saas.received()[TELEGRAM])
    saas.inject("token_revoked", "slack")
    incident = _incident(store, severity="high")  # routed to the zone's first level only
    notify_incident_event(store, inventory, incident, "opened", incident.summary)

    report = deliver_pending(store, channels, inventory, policy=FAST, time_budget_s=5)
    key = f"{incident.id}:opened:ops-oncall"
    assert list(report.failed) == [key]
    (row,) = store.notifications(incident.id, "ops-oncall")
    assert row.state == "failed"
    assert row.last_error is not None
    assert row.last_error.startswith("permanent error: ops-oncall:")
    assert "token_revoked" in row.last_error
    told = saas.received()[TELEGRAM][telegram_before:]
    assert len(told) == 1
    assert "Could not deliver “Incident opened” to ops-oncall" in told[0]["text"]
    assert "token_revoked" in told[0]["text"]
    (notice,) = store.notifications(incident.id, "backend")
    assert notice.event == "delivery_failed#ops-oncall"
    assert notice.state == "delivered"

    for _ in range(2):
        later = deliver_pending(store, channels, inventory, policy=FAST, time_budget_s=5)
        assert later.delivered == []
        assert later.failed == {}
    (row,) = store.notifications(incident.id, "ops-oncall")
    assert row.attempts == 1


def test_a_bad_phone_number_fails_at_once_and_is_reported_on_slack(
    saas: SaasStandIns, store: Store, inventory: Inventory, channels: Channels,
) -> None:
    """The gateway's 422 invalid_number is permanent; the hall's other contact hears of it."""
    slack_before = len(saas.received()["slack"])
    incident = _incident(store, target="gate", zone="hall", severity="medium")
    notify_incident_event(store, inventory, incident, "opened", incident.summary)
    report = deliver_pending(store, channels, inventory, policy=FAST, time_budget_s=5)
    (failed,) = report.failed.values()
    assert "invalid_number" in failed
    (notice,) = _slack_since(saas, slack_before)
    assert "Could not deliver" in notice["blocks"][2]["text"]["text"]
    assert "wrong-number" in notice["blocks"][2]["text"]["text"]


def test_an_outage_longer_than_the_retry_limit_fails_and_is_reported(
    saas: SaasStandIns, store: Store, inventory: Inventory, channels: Channels,
) -> None:
    """After max_attempts transient failures the message is failed with its last error."""
    saas.inject("chat_down", "slack")
    incident = _incident(store, severity="high")
    notify_incident_event(store, inventory, incident, "opened", incident.summary)
    limited = RetryPolicy(base_s=0.05, cap_s=0.05, max_attempts=3)
    for _ in range(3):
        deliver_pending(store, channels, inventory, policy=limited, time_budget_s=5)
        time.sleep(0.1)
    (row,) = store.notifications(incident.id, "ops-oncall")
    assert (row.state, row.attempts) == ("failed", 3)
    assert (row.last_error or "").startswith("gave up after 3 attempts; last error: ops-oncall")
    (notice,) = store.notifications(incident.id, "backend")
    assert (notice.event, notice.state) == ("delivery_failed#ops-oncall", "delivered")


def test_a_contact_without_a_usable_block_waits_and_says_why(
    store: Store, inventory: Inventory,
) -> None:
    """A missing block is a fixable configuration: retried later, the reason recorded."""
    broken = Channels(problems={"ops-oncall": "cannot load the SlackChat block 'outbox-slack'"})
    incident = _incident(store, severity="high")
    notify_incident_event(store, inventory, incident, "opened", incident.summary)
    report = deliver_pending(store, broken, inventory, policy=FAST, time_budget_s=5)
    assert report.failed == {}
    (row,) = store.notifications(incident.id, "ops-oncall")
    assert row.state == "pending"
    assert "cannot load the SlackChat block 'outbox-slack'" in (row.last_error or "")


# -- producers ---------------------------------------------------------------------------------


def test_enqueueing_the_same_event_twice_queues_it_once(
    store: Store, inventory: Inventory,
) -> None:
    """The key <incident>:<event>:<channel> makes a repeated producer harmless."""
    incident = _incident(store)
    first = notify_incident_event(store, inventory, incident, "opened", "down")
    again = notify_incident_event(store, inventory, incident, "opened", "down")
    assert [(e.channel, e.created) for e in first] == [("ops-oncall", True), ("backend", True)]
    assert [(e.channel, e.created) for e in again] == [("ops-oncall", False), ("backend", False)]
    assert len(store.notifications(incident.id)) == 2


def test_an_escalation_levels_contact_is_added_to_the_routed_channels(
    store: Store, inventory: Inventory,
) -> None:
    """data['contact'] (the level climbed to) is told besides the routed channels; an
    unknown contact is refused by name."""
    incident = _incident(store, severity="high")
    queued = notify_incident_event(store, inventory, incident, "escalation_level_2",
                                   "not acknowledged", {"level": 2, "contact": "backend"})
    assert [e.channel for e in queued] == ["ops-oncall", "backend"]
    payload = store.notifications(incident.id, "backend")[0].payload
    assert payload["fields"] == {"level": "2", "contact": "backend"}
    with pytest.raises(UnknownNameError, match="unknown contact 'pager'"):
        notify_incident_event(store, inventory, incident, "escalation_level_3", "x",
                              {"contact": "pager"})


def test_secrets_never_reach_the_outbox(store: Store, inventory: Inventory) -> None:
    """Token-shaped text and known secret values are redacted before the row is written."""
    incident = _incident(store)
    notify_incident_event(store, inventory, incident, "step#1",
                          "used xoxb-111111111111-secretsecret and hunter2hunter2",
                          {"output": "password=letmein"}, secrets=["hunter2hunter2"])
    payload = store.notifications(incident.id)[0].payload
    dumped = str(payload)
    assert "xoxb-111111111111" not in dumped
    assert "hunter2hunter2" not in dumped
    assert "letmein" not in dumped


def test_the_frame_hook_maps_timeline_entries_to_outbox_events() -> None:
    """Chat hears of steps, approvals and outcomes; a verified resolution is 'resolved'."""
    assert timeline_event("step", 57, {}) == "step#57"
    assert timeline_event("approval_requested", 8, {}) == "approval_requested#8"
    assert timeline_event("report", 9, {"outcome": "resolved"}) == "resolved"
    assert timeline_event("report", 9, {"outcome": "escalated"}) == "escalated#9"
    assert timeline_event("report", 9, {"outcome": "dry_run"}) is None
    assert timeline_event("runbook_started", 3, {}) is None


def test_an_approval_request_links_to_the_flow_run_in_the_prefect_ui(
    store: Store, inventory: Inventory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The approval message carries the flow run's UI page as its link."""
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    incident = _incident(store)
    with temporary_settings({PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        _timeline(store, inventory, incident, "approval_requested", "waiting 900 s",
                  {"flow_run_id": "5b7f0000-0000-0000-0000-000000000001", "plan": [{}]})
    payload = store.notifications(incident.id, "ops-oncall")[0].payload
    assert payload["link"] == (
        "http://127.0.0.1:4200/runs/flow-run/5b7f0000-0000-0000-0000-000000000001")
    assert payload["event"].startswith("approval_requested#")


def test_a_summary_goes_to_the_platform_wide_route_once_per_key(
    store: Store, inventory: Inventory,
) -> None:
    """post_summary queues for the default route; the same key twice is one message."""
    first = post_summary("3 incidents, all resolved", "http://ui.test/r", key="daily-1",
                         store=store, inventory=inventory)
    again = post_summary("3 incidents, all resolved", key="daily-1", store=store,
                         inventory=inventory)
    assert [(e.channel, e.created) for e in first] == [("ops-oncall", True)]
    assert [e.created for e in again] == [False]
    (row,) = store.notifications()
    assert (row.incident_id, row.idempotency_key) == (None, "none:summary#daily-1:ops-oncall")


def test_enqueue_without_a_channel_is_refused() -> None:
    """A message with nowhere to go is an error, not silently dropped."""
    with pytest.raises(ValueError, match="no channel given"):
        enqueue(Store("sqlite://"), Message(event="summary#x", title="t", text=""), [])


# -- the store's queue, on both backends -------------------------------------------------------


@pytest.fixture
def migrated(store_url: str) -> Iterator[Store]:
    store_module.upgrade(store_url)
    with Store(store_url) as opened:
        yield opened


def _row(s: Store, incident_id: int | None, event: str, channel: str = "ops") -> int:
    row_id, _ = s.enqueue_notification(
        event=event, channel=channel, idempotency_key=f"{incident_id}:{event}:{channel}",
        payload={"event": event}, incident_id=incident_id)
    return row_id


def test_only_the_oldest_pending_row_of_each_incident_and_channel_is_due(
    migrated: Store,
) -> None:
    """A waiting head holds back its own queue only; rows of no incident queue alone."""
    a, b = _incident(migrated, "api").id, _incident(migrated, "gate", "hall").id
    a1, a2 = _row(migrated, a, "opened"), _row(migrated, a, "step#1")
    b1 = _row(migrated, b, "opened")
    a_mail = _row(migrated, a, "opened", channel="mail")
    s1, s2 = _row(migrated, None, "summary#1"), _row(migrated, None, "summary#2")
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert [r.id for r in migrated.notification_heads(now)] == [a1, b1, a_mail, s1, s2]

    migrated.mark_notification(a1, "pending", error="refused",
                               next_attempt_at=now + timedelta(minutes=5))
    assert [r.id for r in migrated.notification_heads(now)] == [b1, a_mail, s1, s2]
    migrated.mark_notification(a1, "failed", error="token_revoked")
    assert a2 in [r.id for r in migrated.notification_heads(now)]


def test_a_claimed_row_is_leased_to_one_run_until_marked_or_expired(migrated: Store) -> None:
    """Claiming is exclusive while the lease runs; marking releases it."""
    row = _row(migrated, _incident(migrated).id, "opened")
    now = datetime.now(UTC)
    assert migrated.claim_notification(row, now + timedelta(seconds=60), now)
    assert not migrated.claim_notification(row, now + timedelta(seconds=60), now)
    assert migrated.notification_heads(now + timedelta(seconds=1)) == []
    later = now + timedelta(seconds=61)
    assert migrated.claim_notification(row, later + timedelta(seconds=60), later)
    migrated.mark_notification(row, "delivered", delivery_ref="1.000001",
                               thread_ref={"conversation": "C1", "root": "1.000001"})
    assert not migrated.claim_notification(row, later + timedelta(seconds=120), later)


def test_the_first_delivered_row_with_a_thread_names_the_incidents_thread(
    migrated: Store,
) -> None:
    """notification_thread finds the thread the incident's first message started."""
    incident = _incident(migrated).id
    root, reply = _row(migrated, incident, "opened"), _row(migrated, incident, "step#1")
    assert migrated.notification_thread(incident, "ops") is None
    migrated.mark_notification(root, "delivered", delivery_ref="1.1",
                               thread_ref={"conversation": "C1", "root": "1.1"})
    migrated.mark_notification(reply, "delivered", delivery_ref="1.2")
    assert migrated.notification_thread(incident, "ops") == {"conversation": "C1", "root": "1.1"}
    assert migrated.notification_thread(incident, "mail") is None
    rows = migrated.notifications(incident)
    assert [(r.delivery_ref, r.locked_until) for r in rows] == [("1.1", None), ("1.2", None)]


# -- the flow ----------------------------------------------------------------------------------


async def test_the_deliver_notifications_flow_loads_blocks_and_delivers(
    prefect_harness: str, saas: SaasStandIns, inventory: Inventory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flow loads each contact's block from Prefect and delivers the outbox."""
    from flows.notifications import deliver_notifications

    for name, block in _named_blocks(saas).items():
        await block.save(name, overwrite=True)
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    url = f"sqlite:///{tmp_path / 'fw.db'}"
    store_module.upgrade(url)
    monkeypatch.setenv("FLOORWATCH_DATABASE_URL", url)
    with Store(url) as s:
        incident = _incident(s)
        notify_incident_event(s, inventory, incident, "opened", incident.summary)
    result = await deliver_notifications(inventory_path=str(path))
    assert sorted(result["delivered"]) == [f"{incident.id}:opened:backend",
                                           f"{incident.id}:opened:ops-oncall"]
    assert result["failed"] == {}
    with Store(url) as s:
        assert {r.state for r in s.notifications(incident.id)} == {"delivered"}
