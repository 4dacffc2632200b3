"""Notifications, the pure part: what a message says, who gets it, how each channel shows it.

A ``Message`` is one event of an incident (opened, diagnosis, an action, an approval request,
resolution...) or a platform-wide report. The outbox keeps one row per (incident, event,
channel), named by ``idempotency_key``; ``route`` picks the channels (contact names) from the
inventory's ``routing`` rules; the ``render_*`` functions turn a message into Slack Block Kit,
plain text mail, Telegram HTML or an SMS; ``redact`` takes known secret values (and anything
shaped like a token or a password) out of every text before it leaves. ``RetryPolicy`` says
when a failed delivery is tried again and when the outbox gives up.

Delivery errors are ``DeliveryFailed`` (an ``AdapterError`` named by the channel) with
``permanent`` set when retrying cannot help (revoked token, unknown channel, refused address)
and ``retry_after`` when the service asked to wait.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from floorwatch.catalogue import Channel
from floorwatch.errors import AdapterError, UnknownNameError
from floorwatch.inventory import Contact, Inventory

# The block each channel kind reads its credentials from unless a contact names its own.
DEFAULT_BLOCKS: Final[dict[Channel, str]] = {
    Channel.SLACK: "notify-slack",
    Channel.EMAIL: "notify-email",
    Channel.TELEGRAM: "notify-telegram",
    Channel.SMS: "notify-sms",
}
# "step#57": the kind, then what makes this event unique within its incident.
EVENT_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*(#[A-Za-z0-9_.\-]+)?")
NO_INCIDENT: Final = "none"
REDACTED: Final = "***"
# Shorter known secrets are not redacted by value: "abc" would blank ordinary words.
MIN_SECRET_LENGTH: Final = 6
SMS_MAX_CHARS: Final = 306  # two concatenated GSM segments
TELEGRAM_MAX_CHARS: Final = 4096
SLACK_TEXT_MAX: Final = 3000
SLACK_HEADER_MAX: Final = 150
SLACK_FIELD_MAX: Final = 2000
SLACK_MAX_FIELDS: Final = 10

EVENT_LABELS: Final[dict[str, str]] = {
    "opened": "Incident opened",
    "acknowledged": "Acknowledged",
    "diagnosis": "Diagnosis",
    "approval_requested": "Approval needed",
    "approved": "Approved",
    "step": "Action",
    "step_failed": "Action failed",
    "failed": "Remediation failed",
    "rolled_back": "Rolled back",
    "rollback_failed": "Rollback failed",
    "dry_run": "Dry run",
    "target_busy": "Target busy",
    "verified": "Recovery verified",
    "resolved": "Resolved",
    "escalated": "Escalated",
    "report": "Runbook report",
    "delivery_failed": "Notification failed",
    "summary": "Summary",
}
SEVERITY_ICONS: Final[dict[str, str]] = {
    "critical": ":red_circle:",
    "high": ":large_orange_circle:",
    "medium": ":large_yellow_circle:",
    "low": ":white_circle:",
}
STATE_ICONS: Final[dict[str, str]] = {
    "open": ":rotating_light:",
    "acknowledged": ":eyes:",
    "remediating": ":hammer_and_wrench:",
    "escalated": ":sos:",
    "resolved": ":white_check_mark:",
}


def _check_event(value: str) -> str:
    if not EVENT_PATTERN.fullmatch(value):
        raise ValueError(
            f"event {value!r} must be a lowercase kind, optionally with '#' and an id "
            "(such as opened or step#57)"
        )
    return value


def _check_link(value: str | None) -> str | None:
    if value is not None and not re.match(r"https?://[^\s]+$", value):
        raise ValueError(f"link {value!r} is not an http(s) URL")
    return value


EventName = Annotated[str, AfterValidator(_check_event)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(_Model):
    """One notification: an event of an incident (``incident_id``) or a platform-wide one.

    ``title`` names the incident (it heads the Slack message that is updated in place),
    ``text`` says what happened now, ``state`` is the incident's state after the event.
    """

    incident_id: int | None = None
    event: EventName
    title: Annotated[str, Field(min_length=1)]
    text: str
    severity: str | None = None
    zone: str | None = None
    target: str | None = None
    fault_kind: str | None = None
    state: str | None = None
    link: Annotated[str | None, AfterValidator(_check_link)] = None
    fields: dict[str, str] = Field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The event without its unique suffix: ``step#57`` -> ``step``."""
        return self.event.partition("#")[0]

    @property
    def label(self) -> str:
        """How people read the event kind: ``approval_requested`` -> ``Approval needed``."""
        return EVENT_LABELS.get(self.kind, self.kind.replace("_", " ").capitalize())


class ThreadRef(_Model):
    """Where an incident's conversation lives on one channel: the conversation (Slack
    channel id, Telegram chat, mail recipient) and its first message's id."""

    conversation: str
    root: str


class Delivery(_Model):
    """What a channel answered: the message's id there, and the thread it belongs to."""

    ref: str
    thread_ref: ThreadRef | None = None


class DeliveryFailed(AdapterError):
    """A channel did not take a message. ``permanent``: retrying cannot help (revoked token,
    unknown channel, refused address); ``retry_after``: seconds the service asked to wait."""

    def __init__(
        self, channel: str, message: str, *, permanent: bool, retry_after: float | None = None
    ) -> None:
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(channel, message)


def idempotency_key(incident_id: int | None, event: str, channel: str) -> str:
    """The outbox key ``<incident>:<event>:<channel>``: one delivery per triple, ever."""
    _check_event(event)
    if not channel or ":" in channel:
        raise ValueError(f"channel {channel!r} must be a contact name without ':'")
    return f"{NO_INCIDENT if incident_id is None else incident_id}:{event}:{channel}"


# -- routing -------------------------------------------------------------------------------


def route(
    inventory: Inventory,
    zone: str | None,
    severity: str | None = None,
    fault_kind: str | None = None,
) -> list[str]:
    """The contact names a message goes to: the channels of every matching routing rule, in
    rule order; when none matches, the zone's first escalation contact (the first zone's for
    a platform-wide message). Raises ``UnknownNameError`` for a zone the inventory lacks."""
    if zone is not None:
        inventory.zone(zone)
    chosen: dict[str, None] = {}
    for rule in inventory.routing:
        if rule.matches(zone, severity, fault_kind):
            chosen.update(dict.fromkeys(rule.channels))
    if chosen:
        return list(chosen)
    home = inventory.zone(zone) if zone is not None else inventory.zones[0]
    return [home.escalation[0]]


def contact(inventory: Inventory, name: str) -> Contact:
    """The contact called ``name``; ``UnknownNameError`` when the inventory has none."""
    try:
        return inventory.contacts[name]
    except KeyError:
        known = ", ".join(sorted(inventory.contacts)) or "none"
        raise UnknownNameError(f"unknown contact {name!r} (known: {known})") from None


def contact_block(found: Contact) -> str:
    """The Prefect block holding the credentials of ``found``'s channel."""
    return found.block or DEFAULT_BLOCKS[found.channel]


def fallback_channel(inventory: Inventory, failed: str, zone: str | None) -> str | None:
    """Another contact to tell that ``failed`` cannot be reached: the zone's escalation
    contacts first, then every contact, preferring another kind of channel (a revoked Slack
    token silences every Slack contact). None when there is nobody else."""
    failed_kind = inventory.contacts[failed].channel if failed in inventory.contacts else None
    zone_names: tuple[str, ...] = ()
    if zone is not None and zone in {z.name for z in inventory.zones}:
        zone_names = inventory.zone(zone).escalation
    candidates = [name for name in dict.fromkeys([*zone_names, *inventory.contacts])
                  if name != failed and name in inventory.contacts]
    for name in candidates:
        if inventory.contacts[name].channel != failed_kind:
            return name
    return candidates[0] if candidates else None


# -- retries -------------------------------------------------------------------------------


class RetryPolicy(_Model):
    """When the outbox tries again and when it gives up. Backoff doubles from ``base_s`` up
    to ``cap_s``; a ``Retry-After`` longer than that wins. A message still undelivered after
    ``max_attempts`` or ``max_age_s`` is failed; the default age outlasts a long outage."""

    base_s: Annotated[float, Field(gt=0)] = 2.0
    cap_s: Annotated[float, Field(gt=0)] = 60.0
    max_attempts: Annotated[int, Field(ge=1)] = 400
    max_age_s: Annotated[float, Field(gt=0)] = 6 * 3600.0
    lease_s: Annotated[float, Field(gt=0)] = 120.0  # longer than any single send may take

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
        doublings = max(0, min(attempts - 1, 30))  # bounded: 2**huge is slow to compute
        backoff = min(self.cap_s, self.base_s * float(2**doublings))
        return max(backoff, retry_after or 0.0)

    def verdict(
        self, error: DeliveryFailed, attempts: int, created_at: datetime, now: datetime
    ) -> tuple[datetime | None, str]:
        """After the ``attempts``-th failed attempt: (when to retry, error text), or
        (None, why the message is failed for good)."""
        if error.permanent:
            return None, f"permanent error: {error}"
        age = (now - created_at).total_seconds()
        if attempts >= self.max_attempts:
            return None, f"gave up after {attempts} attempts; last error: {error}"
        if age >= self.max_age_s:
            return None, f"gave up after {age:.0f} s ({attempts} attempts); last error: {error}"
        return now + timedelta(seconds=self.delay(attempts, error.retry_after)), str(error)


# -- redaction -----------------------------------------------------------------------------

_SECRET_SHAPES: Final = (
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"),  # Slack tokens
    re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{30,}"),  # Telegram bot tokens
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # user:password@ in URLs
    re.compile(r"(?i)(?<=password=)[^\s&;,]+"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the known ``secrets`` (each at least ``MIN_SECRET_LENGTH`` long) and
    without anything shaped like a token, a bearer credential, a URL password or a key."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len,
                         reverse=True):
        text = text.replace(secret, REDACTED)
    for shape in _SECRET_SHAPES:
        text = shape.sub(REDACTED, text)
    return text


def redact_message(message: Message, secrets: Iterable[str] = ()) -> Message:
    """``message`` with every text it carries redacted."""
    known = tuple(secrets)
    return message.model_copy(
        update={
            "title": redact(message.title, known),
            "text": redact(message.text, known),
            "link": redact(message.link, known) if message.link else None,
            "fields": {redact(k, known): redact(v, known) for k, v in message.fields.items()},
        }
    )


# -- rendering -----------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reserves."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _where(message: Message) -> str:
    parts = [f"incident #{message.incident_id}" if message.incident_id is not None else None,
             message.zone, message.target, message.fault_kind]
    return " · ".join(p for p in parts if p)


def _severity(message: Message) -> str:
    return (message.severity or "info").upper()


def _button(link: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in Prefect"},
            "url": link,
            "action_id": "open_link",
        }],
    }


def render_slack_root(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """The incident's own Slack message (posted once, updated in place): fallback text and
    Block Kit blocks with severity, state, zone, target and the latest event."""
    icon = SEVERITY_ICONS.get(message.severity or "", ":information_source:")
    state = message.state or "open"
    fallback = f"[{_severity(message)}] {message.title} ({state}): {message.label}"
    facts = [
        ("Severity", f"{icon} {_severity(message)}"),
        ("State", f"{STATE_ICONS.get(state, '')} {state}".strip()),
        ("Zone", message.zone),
        ("Target", message.target),
        ("Fault", message.fault_kind),
        ("Incident", f"#{message.incident_id}" if message.incident_id is not None else None),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": clip(message.title, SLACK_HEADER_MAX)}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": clip(f"*{name}*\n{slack_escape(value)}", SLACK_FIELD_MAX)}
            for name, value in facts if value
        ]},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(
            f"*{message.label}:* {slack_escape(message.text)}", SLACK_TEXT_MAX)}},
    ]
    if message.link:
        blocks.append(_button(message.link))
    return clip(fallback, SLACK_TEXT_MAX), blocks


def render_slack_reply(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """One event in the incident's Slack thread (or a platform-wide message): fallback text
    and Block Kit blocks."""
    # A platform-wide message has no incident message above it: its title leads.
    lead = message.label if message.incident_id is not None else message.title
    fallback = f"{lead}: {message.text}" if message.text else lead
    heading = f"*{slack_escape(lead)}*"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(
            f"{heading}\n{slack_escape(message.text)}".rstrip(), SLACK_TEXT_MAX)}},
    ]
    extra = list(message.fields.items())[:SLACK_MAX_FIELDS]
    if extra:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": clip(
                f"*{slack_escape(k)}*\n{slack_escape(v)}", SLACK_FIELD_MAX)} for k, v in extra
        ]})
    where = _where(message)
    if where:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": clip(slack_escape(where), SLACK_FIELD_MAX)}]})
    if message.link:
        blocks.append(_button(message.link))
    return clip(fallback, SLACK_TEXT_MAX), blocks


def render_email(message: Message) -> tuple[str, str]:
    """Subject and plain text body of a mail."""
    incident = f" #{message.incident_id}" if message.incident_id is not None else ""
    subject = f"[Floorwatch{incident}] [{_severity(message)}] {message.title}: {message.label}"
    lines = [f"{message.label}: {message.title}"]
    where = _where(message)
    if where:
        lines.append(where + (f" · state {message.state}" if message.state else ""))
    lines += ["", message.text]
    if message.fields:
        lines += ["", *(f"{k}: {v}" for k, v in message.fields.items())]
    if message.link:
        lines += ["", f"Open in Prefect: {message.link}"]
    lines += ["", "-- ", "Floorwatch"]
    return clip(" ".join(subject.split()), 200), "\n".join(lines) + "\n"


def render_telegram(message: Message) -> str:
    """The message as Telegram HTML (``parse_mode=HTML``)."""
    esc = html.escape
    lines = [f"<b>{esc(message.title)}</b>",
             f"<i>{esc(message.label)}</i> · {esc(_severity(message))}"
             + (f" · {esc(message.state)}" if message.state else "")]
    where = _where(message)
    if where:
        lines.append(esc(where))
    lines += ["", esc(message.text)]
    lines += [f"<b>{esc(k)}:</b> {esc(v)}" for k, v in message.fields.items()]
    if message.link:
        lines += ["", f'<a href="{esc(message.link, quote=True)}">Open in Prefect</a>']
    text = "\n".join(lines)
    if len(text) > TELEGRAM_MAX_CHARS:
        # Cutting HTML could leave a tag open, which Telegram refuses: fall back to the
        # essentials, escaped, without markup.
        text = esc(clip(f"{message.title}: {message.label}. {message.text}", 4000))
    return text


def render_sms(message: Message) -> str:
    """A short text (at most two SMS segments); the link only when it fits whole."""
    incident = f"#{message.incident_id} " if message.incident_id is not None else ""
    body = f"[{_severity(message)}] {incident}{message.title}: {message.label}. {message.text}"
    body = " ".join(body.split())
    if message.link and len(body) + len(message.link) + 1 <= SMS_MAX_CHARS:
        return f"{body} {message.link}"
    return clip(body, SMS_MAX_CHARS)


def message_from_payload(payload: Mapping[str, Any]) -> Message:
    """The message an outbox row holds."""
    return Message.model_validate(dict(payload))
