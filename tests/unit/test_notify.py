"""Notifications, the pure part: routing rules and their validation, outbox keys, retries,
redaction and how each channel renders a message."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from floorwatch.errors import InventoryError, UnknownNameError
from floorwatch.inventory import Inventory, parse_inventory
from floorwatch.notify import (
    SLACK_HEADER_MAX,
    SMS_MAX_CHARS,
    DeliveryFailed,
    Message,
    RetryPolicy,
    contact_block,
    fallback_channel,
    idempotency_key,
    redact,
    redact_message,
    render_email,
    render_slack_reply,
    render_slack_root,
    render_sms,
    render_telegram,
    route,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

INVENTORY = """\
version: 1
contacts:
  ops: {channel: slack, address: "#ops"}
  devops: {channel: email, address: devops@example.test}
  backend: {channel: telegram, address: "-1001234567890", block: backend-bot}
  techs: {channel: sms, address: "+35699000000"}
  payments-chat: {channel: slack, address: "#payments"}
routing:
  - severities: [critical]
    channels: [ops, backend]
  - zones: [payments]
    fault_kinds: [stuck_bets, settlement_mismatch]
    channels: [payments-chat]
zones:
  - name: core
    escalation: [ops, devops]
    targets:
      - {name: api, kind: http_service, connection: {url: "http://127.0.0.1:1/health"}}
  - name: payments
    escalation: [devops, ops]
    targets:
      - {name: pay, kind: http_service, connection: {url: "http://127.0.0.1:2/health"}}
  - name: hall
    escalation: [techs]
    targets:
      - {name: gate, kind: http_service, connection: {url: "http://127.0.0.1:3/health"}}
"""


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return parse_inventory(INVENTORY)


def problems(text: str) -> list[str]:
    """The located problems parse_inventory reports for ``text``, as printed."""
    with pytest.raises(InventoryError) as caught:
        parse_inventory(textwrap.dedent(text))
    return [str(problem) for problem in caught.value.problems]


def message(**changes: object) -> Message:
    base: dict[str, object] = {
        "incident_id": 12, "event": "opened", "title": "service_down on app-primary",
        "text": "game-engine refuses connections", "severity": "critical",
        "zone": "online-core", "target": "app-primary", "fault_kind": "service_down",
        "state": "open",
    }
    return Message.model_validate(base | changes)


# -- routing -----------------------------------------------------------------------------------


def test_every_matching_rule_adds_its_channels_in_rule_order(inventory: Inventory) -> None:
    """A critical settlement fault in payments goes to both rules' channels, deduplicated."""
    assert route(inventory, "payments", "critical", "settlement_mismatch") == [
        "ops", "backend", "payments-chat"
    ]
    assert route(inventory, "core", "critical", "service_down") == ["ops", "backend"]


def test_no_matching_rule_routes_to_the_zones_first_escalation_contact(
    inventory: Inventory,
) -> None:
    """Without a matching rule, the zone's first escalation level hears of it."""
    assert route(inventory, "payments", "high", "stuck_bets") == ["payments-chat"]
    assert route(inventory, "payments", "low", "service_down") == ["devops"]
    assert route(inventory, "hall", "medium", "terminal_offline") == ["techs"]


def test_platform_wide_messages_match_only_rules_without_filters(inventory: Inventory) -> None:
    """A summary (no zone, severity or fault) skips filtered rules and defaults to the first
    zone's first contact; a catch-all rule takes it."""
    assert route(inventory, None) == ["ops"]
    catch_all = parse_inventory(INVENTORY.replace(
        "routing:\n", "routing:\n  - channels: [techs]\n"))
    assert route(catch_all, None) == ["techs"]
    assert route(catch_all, "core", "critical", "service_down") == ["techs", "ops", "backend"]


def test_routing_for_an_unknown_zone_is_refused_by_name(inventory: Inventory) -> None:
    """A message about a zone the inventory lacks is an error, not a silent default."""
    with pytest.raises(UnknownNameError, match="unknown zone 'nowhere'"):
        route(inventory, "nowhere", "high", "service_down")


def test_routing_rules_naming_unknown_contacts_and_zones_are_located() -> None:
    """Every unknown contact and zone in a rule is reported with its line and path."""
    found = problems("""\
        version: 1
        contacts:
          ops: {channel: slack, address: "#ops"}
        routing:
          - zones: [core, elsewhere]
            channels: [ops, pager]
        zones:
          - name: core
            escalation: [ops]
            targets:
              - {name: api, kind: http_service, connection: {url: "http://h/health"}}
        """)
    assert found == [
        "inventory.yaml:5 routing[0].zones[1]: unknown zone 'elsewhere'",
        "inventory.yaml:6 routing[0].channels[1]: unknown contact 'pager' (known: ops)",
    ]


def test_routing_rules_with_bad_filters_or_no_channels_are_located() -> None:
    """Unknown severities and fault kinds, and a rule without channels, are each reported."""
    found = problems("""\
        version: 1
        contacts:
          ops: {channel: slack, address: "#ops"}
        routing:
          - severities: [urgent]
            fault_kinds: [meteor]
            channels: []
          - channels: [ops]
            colour: red
        zones:
          - name: core
            escalation: [ops]
            targets:
              - {name: api, kind: http_service, connection: {url: "http://h/health"}}
        """)
    assert found[0].startswith("inventory.yaml:5 routing[0].severities[0]: unknown criticality "
                               "'urgent'")
    assert found[1].startswith("inventory.yaml:6 routing[0].fault_kinds[0]: unknown fault kind "
                               "'meteor'")
    assert found[2:] == [
        "inventory.yaml:7 routing[0].channels: must not be empty",
        "inventory.yaml:9 routing[1].colour: unknown key 'colour'",
    ]


def test_a_contact_reads_its_own_block_or_its_channels_default(inventory: Inventory) -> None:
    """A contact naming a block uses it; the others use their channel kind's default."""
    assert contact_block(inventory.contacts["backend"]) == "backend-bot"
    assert contact_block(inventory.contacts["ops"]) == "notify-slack"
    assert contact_block(inventory.contacts["devops"]) == "notify-email"


def test_a_failed_channel_is_reported_on_another_kind_of_channel_first(
    inventory: Inventory,
) -> None:
    """A dead Slack is reported by mail (the zone's next level), never on Slack again."""
    assert fallback_channel(inventory, "ops", "core") == "devops"
    assert fallback_channel(inventory, "devops", "payments") == "ops"
    assert fallback_channel(inventory, "techs", "hall") == "ops"
    alone = parse_inventory(
        'version: 1\ncontacts:\n  ops: {channel: slack, address: "#ops"}\nzones:\n'
        '  - name: core\n    escalation: [ops]\n    targets:\n'
        '      - {name: api, kind: http_service, connection: {url: "http://h/health"}}\n')
    assert fallback_channel(alone, "ops", "core") is None


# -- keys and messages -------------------------------------------------------------------------


def test_idempotency_key_names_incident_event_and_channel() -> None:
    """The key is <incident>:<event>:<channel>; a platform message uses 'none'."""
    assert idempotency_key(12, "step#57", "ops-oncall") == "12:step#57:ops-oncall"
    assert idempotency_key(None, "summary#20261124T1200", "ops") == "none:summary#20261124T1200:ops"


@pytest.mark.parametrize("event", ["Opened", "step:57", "", "step#", "a b"])
def test_events_that_would_break_the_key_are_refused(event: str) -> None:
    """Events are lowercase kinds with an optional '#id', so keys stay unambiguous."""
    with pytest.raises(ValueError, match="event"):
        idempotency_key(1, event, "ops")
    with pytest.raises(ValidationError):
        message(event=event)


def test_a_link_must_be_an_http_url() -> None:
    """A message refuses a link nobody could open."""
    with pytest.raises(ValidationError, match="not an http"):
        message(link="javascript:alert(1)")
    assert message(link="http://127.0.0.1:4200/runs/flow-run/1").link is not None


def test_kind_and_label_come_from_the_event() -> None:
    """``step#57`` is a step, shown to people as an action."""
    shown = message(event="step#57")
    assert (shown.kind, shown.label) == ("step", "Action")
    assert message(event="escalation_level_2").label == "Escalation level 2"


# -- retries -----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_retry_after_wins() -> None:
    """2, 4, 8 ... capped at 60 s; a longer Retry-After is honoured."""
    policy = RetryPolicy(base_s=2, cap_s=60)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 6, 7, 500)] == [2, 4, 8, 16, 60, 60, 60]
    assert policy.delay(1, retry_after=30) == 30
    assert policy.delay(6, retry_after=5) == 60


def test_a_transient_failure_is_retried_later_with_its_error() -> None:
    """A refused connection schedules the next attempt after the backoff."""
    policy = RetryPolicy(base_s=2, cap_s=60)
    error = DeliveryFailed("ops", "connection refused", permanent=False)
    retry_at, reason = policy.verdict(error, 3, T0, T0 + timedelta(minutes=1))
    assert retry_at == T0 + timedelta(minutes=1, seconds=8)
    assert reason == "ops: connection refused"


def test_permanent_errors_and_exhausted_retries_are_given_up_with_the_reason() -> None:
    """A revoked token fails at once; a long outage fails after max attempts or max age."""
    policy = RetryPolicy(max_attempts=5, max_age_s=600)
    revoked = DeliveryFailed("ops", "token_revoked", permanent=True)
    assert policy.verdict(revoked, 1, T0, T0) == (None, "permanent error: ops: token_revoked")
    down = DeliveryFailed("ops", "connection refused", permanent=False)
    when, reason = policy.verdict(down, 5, T0, T0 + timedelta(seconds=30))
    assert when is None
    assert reason == "gave up after 5 attempts; last error: ops: connection refused"
    when, reason = policy.verdict(down, 2, T0, T0 + timedelta(seconds=601))
    assert when is None
    assert reason.startswith("gave up after 601 s (2 attempts)")


# -- redaction ---------------------------------------------------------------------------------


def test_known_secret_values_are_removed_wherever_they_appear() -> None:
    """Each known secret becomes ***; secrets shorter than six characters are left alone."""
    text = "ssh with hunter2hunter2 failed; key abc; again hunter2hunter2"
    assert redact(text, ["hunter2hunter2", "abc"]) == "ssh with *** failed; key abc; again ***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token xoxb-123456789012-abcdefABCDEF", "token ***"),
        ("Authorization: Bearer sk_live_abcdef123456", "Authorization: Bearer ***"),
        ("postgresql+psycopg://floorwatch:s3cret@db:5432/fw", "postgresql+psycopg://***@db:5432/fw"),
        ("login?user=ops&password=letmein;", "login?user=ops&password=***;"),
        ("bot 7000000001:AAFakeTokenFakeTokenFakeTokenFake12 said", "bot *** said"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----", "***"),
    ],
)
def test_anything_shaped_like_a_credential_is_removed(text: str, expected: str) -> None:
    """Tokens, bearer credentials, URL passwords and private keys never leave."""
    assert redact(text) == expected


def test_redacting_a_message_covers_title_text_fields_and_link() -> None:
    """No text a channel shows keeps a secret."""
    dirty = message(title="leak s3cr3t-value", text="s3cr3t-value in text",
                    fields={"output": "s3cr3t-value"},
                    link="http://ui.test/runs?s=s3cr3t-value")
    clean = redact_message(dirty, ["s3cr3t-value"])
    assert "s3cr3t-value" not in clean.model_dump_json()


# -- rendering ---------------------------------------------------------------------------------


def test_slack_root_shows_severity_state_zone_target_and_latest_event() -> None:
    """The incident's message carries its facts as Block Kit fields and a fallback text."""
    text, blocks = render_slack_root(message(state="remediating", event="step#3",
                                             text="restarted game-engine"))
    assert text == "[CRITICAL] service_down on app-primary (remediating): Action"
    assert blocks[0] == {"type": "header", "text": {
        "type": "plain_text", "emoji": True, "text": "service_down on app-primary"}}
    facts = [field["text"] for field in blocks[1]["fields"]]
    assert facts == ["*Severity*\n:red_circle: CRITICAL",
                     "*State*\n:hammer_and_wrench: remediating", "*Zone*\nonline-core",
                     "*Target*\napp-primary", "*Fault*\nservice_down", "*Incident*\n#12"]
    assert blocks[2]["text"]["text"] == "*Action:* restarted game-engine"


def test_slack_text_is_escaped_and_clipped_to_block_kit_limits() -> None:
    """<, > and & are escaped; a long title fits the 150-character header."""
    _, blocks = render_slack_root(message(title="x" * 400, text="<@channel> & <script>"))
    assert len(blocks[0]["text"]["text"]) == SLACK_HEADER_MAX
    assert blocks[2]["text"]["text"].endswith("&lt;@channel&gt; &amp; &lt;script&gt;")
    _, reply = render_slack_reply(message(text="y" * 5000,
                                          fields={f"k{i}": "v" for i in range(20)}))
    assert len(reply[0]["text"]["text"]) <= 3000
    assert len(reply[1]["fields"]) == 10


def test_an_approval_request_carries_a_button_to_the_flow_run() -> None:
    """The link becomes an 'Open in Prefect' button in the thread reply."""
    link = "http://127.0.0.1:4200/runs/flow-run/5b7f"
    _, blocks = render_slack_reply(message(event="approval_requested#9", link=link))
    assert blocks[-1]["elements"][0]["url"] == link
    assert blocks[0]["text"]["text"].startswith("*Approval needed*\n")


def test_email_has_the_incident_in_the_subject_and_the_link_in_the_body() -> None:
    """Subject names the incident, severity and event; the body ends with the link."""
    subject, body = render_email(message(event="approval_requested#9",
                                         link="http://ui.test/runs/flow-run/1",
                                         fields={"runbook": "restart_service"}))
    assert subject == ("[Floorwatch #12] [CRITICAL] service_down on app-primary: "
                       "Approval needed")
    assert "incident #12 · online-core · app-primary · service_down · state open" in body
    assert "runbook: restart_service" in body
    assert "Open in Prefect: http://ui.test/runs/flow-run/1" in body


def test_telegram_html_escapes_the_text() -> None:
    """Text with markup characters is escaped so Telegram's HTML parser accepts it."""
    rendered = render_telegram(message(text="load <5> & rising"))
    assert "load &lt;5&gt; &amp; rising" in rendered
    assert rendered.startswith("<b>service_down on app-primary</b>\n<i>Incident opened</i>")


def test_sms_fits_two_segments_and_takes_the_link_only_whole() -> None:
    """A long SMS is clipped to 306 characters; a link that does not fit is left out."""
    short = render_sms(message(link="http://ui.test/r/1"))
    assert short.startswith("[CRITICAL] #12 service_down on app-primary: Incident opened.")
    assert short.endswith(" http://ui.test/r/1")
    long = render_sms(message(text="z" * 1000, link="http://ui.test/r/1"))
    assert len(long) == SMS_MAX_CHARS
    assert "http" not in long
