"""Chat and paging: the ``Notifier`` adapters, the outbox's producer side and its delivery.

Every notification goes through the store's outbox first (``enqueue``), one row per
(incident, event, channel), and is delivered later by ``deliver_pending`` (the
``deliver-notifications`` flow) with retries and backoff, in order per incident and channel::

    producer ── notify_incident_event / post_summary / enqueue ──> outbox (pending)
    deliver_pending: per (incident, channel) queue, the oldest pending row, when due
        ├─ delivered ──> state delivered, the channel's id, the thread it started
        ├─ transient (refused, 5xx, 429, SMTP 4xx) ──> pending again, next_attempt_at later
        └─ permanent (revoked token, unknown channel, bad address, SMTP 5xx), or too many
           attempts / too old ──> failed with the reason, and told on another channel

A channel is a contact of the inventory; its ``Notifier`` is built from the contact's
address and the block holding the channel's credentials (``floorwatch.notify.contact_block``).
Slack keeps one message per incident, updated in place (``chat.update``) as the incident's
state changes, with every event in its thread; mail threads by ``In-Reply-To``; Telegram
replies to the incident's first message; SMS has no threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from blocks import SlackChat, SmsGateway, SmtpServer, TelegramBot

if TYPE_CHECKING:
    from slack_sdk.errors import SlackApiError
from floorwatch.catalogue import Channel
from floorwatch.errors import FloorwatchError
from floorwatch.inventory import Contact, Inventory
from floorwatch.notify import (
    Delivery,
    DeliveryFailed,
    Message,
    RetryPolicy,
    ThreadRef,
    clip,
    contact,
    contact_block,
    fallback_channel,
    idempotency_key,
    message_from_payload,
    redact,
    redact_message,
    render_email,
    render_slack_reply,
    render_slack_root,
    render_sms,
    render_telegram,
    route,
)
from floorwatch.results import now_utc
from floorwatch.store import IncidentRow, NotificationRow, Store
from tasks.inventory import cached_inventory

__all__ = [
    "Channels",
    "Delivery",
    "DeliveryFailed",
    "DeliveryReport",
    "EmailNotifier",
    "Enqueued",
    "Message",
    "Notifier",
    "SlackNotifier",
    "SmsNotifier",
    "TelegramNotifier",
    "ThreadRef",
    "deliver_outbox",
    "deliver_pending",
    "enqueue",
    "flow_run_link",
    "incident_message",
    "load_channels",
    "load_notification_channels",
    "notifier_for",
    "notify_incident_event",
    "notify_quietly",
    "notify_timeline",
    "post_summary",
    "secret_values",
]

log = logging.getLogger("floorwatch.notify")

# Slack errors that a later attempt can get past; every other error is permanent.
SLACK_TRANSIENT: Final = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
     "request_timeout", "team_added_to_org"}
)
# Timeline kinds of the runbook frame that people hear about in chat.
TIMELINE_NOTIFIED: Final = frozenset(
    {"diagnosis", "approval_requested", "approved", "step", "step_failed", "failed",
     "rolled_back", "rollback_failed", "dry_run", "target_busy", "refused", "report"}
)
MAX_FIELDS: Final = 8
BLOCK_TYPES: Final[dict[Channel, type[BaseModel]]] = {
    Channel.SLACK: SlackChat,
    Channel.EMAIL: SmtpServer,
    Channel.TELEGRAM: TelegramBot,
    Channel.SMS: SmsGateway,
}
INVENTORY_ENV: Final = "FLOORWATCH_INVENTORY"


class Notifier(Protocol):
    """One channel (a contact): sends a message, in ``thread`` when the incident already
    has one there, and says where it went. Raises ``DeliveryFailed``."""

    name: str

    def send(self, message: Message, thread: ThreadRef | None) -> Delivery: ...


def _transport_failure(
    channel: str, exc: BaseException, secrets: Iterable[str] = ()
) -> DeliveryFailed:
    """A failure to reach the service at all: always worth another try."""
    reason = redact(f"{type(exc).__name__}: {exc}", secrets)
    return DeliveryFailed(channel, f"cannot reach the service: {reason}", permanent=False)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


# -- Slack -----------------------------------------------------------------------------------


class SlackNotifier:
    """Slack through slack-sdk's ``WebClient``: the incident's message in ``channel``
    (``chat.postMessage``), updated in place (``chat.update``), events in its thread."""

    def __init__(self, block: SlackChat, channel: str | None = None, name: str = "slack") -> None:
        self.name = name
        self.channel = channel or block.channel
        self._token = block.bot_token.get_secret_value()
        # slack_sdk is imported here, not by every flow run process that imports this module.
        from slack_sdk import WebClient

        # No retry handlers: the outbox decides when to try again, with backoff, and a
        # handler sleeping here would hold up every other channel's delivery.
        self.client = WebClient(token=self._token, base_url=block.base_url,
                                timeout=int(max(1, round(block.timeout))), retry_handlers=[])

    def send(self, message: Message, thread: ThreadRef | None) -> Delivery:
        if thread is None:
            render = render_slack_root if message.incident_id is not None else render_slack_reply
            text, blocks = render(message)
            answer = self._call("chat.postMessage", channel=self.channel, text=text,
                                blocks=blocks, unfurl_links=False)
            ts, channel_id = str(answer["ts"]), str(answer["channel"])
            started = ThreadRef(conversation=channel_id, root=ts)
            return Delivery(ref=ts, thread_ref=started if message.incident_id is not None
                            else None)
        if message.state is not None:
            # The update first: it is idempotent, so a retry after a failed reply repeats
            # it harmlessly, whereas a reply posted twice would show twice.
            text, blocks = render_slack_root(message)
            try:
                self._call("chat.update", channel=thread.conversation, ts=thread.root,
                           text=text, blocks=blocks)
            except DeliveryFailed as exc:
                if not exc.permanent:
                    raise
                # Someone deleted the incident's message: the thread still carries the news.
                log.warning("%s: cannot update the incident message: %s", self.name, exc)
        text, blocks = render_slack_reply(message)
        answer = self._call("chat.postMessage", channel=thread.conversation,
                            thread_ts=thread.root, text=text, blocks=blocks, unfurl_links=False)
        return Delivery(ref=str(answer["ts"]), thread_ref=thread)

    def _call(self, method: str, **arguments: Any) -> Mapping[str, Any]:
        from slack_sdk.errors import SlackApiError, SlackClientError

        call = {"chat.postMessage": self.client.chat_postMessage,
                "chat.update": self.client.chat_update}[method]
        try:
            answer = call(**arguments)
        except SlackApiError as exc:
            raise self._api_failure(method, exc) from exc
        except (SlackClientError, OSError, http.client.HTTPException) as exc:
            # OSError covers urllib's URLError (refused, unreachable) and timeouts.
            raise _transport_failure(self.name, exc, [self._token]) from exc
        data = answer.data
        if not isinstance(data, dict) or "ts" not in data:
            raise DeliveryFailed(self.name, f"{method}: answer without a ts: {data!r:.200}",
                                 permanent=False)
        return data

    def _api_failure(self, method: str, exc: SlackApiError) -> DeliveryFailed:
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = response.data if isinstance(response.data, dict) else {}
        error = str(data.get("error") or f"HTTP {status}")
        headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
        raw_after = headers.get("retry-after")
        retry_after = _retry_after(raw_after[0] if isinstance(raw_after, list) else raw_after)
        transient = status == 429 or status >= 500 or error in SLACK_TRANSIENT
        detail = "; ".join(str(m) for m in (data.get("response_metadata") or {}).get(
            "messages", []))
        text = f"{method} to {self.channel}: {error}" + (f" ({detail})" if detail else "")
        return DeliveryFailed(self.name, redact(text, [self._token]), permanent=not transient,
                              retry_after=retry_after)


# -- email -------------------------------------------------------------------------------------


class EmailNotifier:
    """Mail over SMTP: STARTTLS when the server offers it (verified against the block's CA
    bundle), login only over TLS, incidents threaded by ``In-Reply-To``."""

    def __init__(self, block: SmtpServer, to: str, name: str = "email") -> None:
        self.name = name
        self.block = block
        self.to = to

    def _context(self) -> ssl.SSLContext:
        cafile = str(self.block.ca_bundle) if self.block.ca_bundle else None
        context = ssl.create_default_context(cafile=cafile)
        if not self.block.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def message_id(self, message: Message) -> str:
        """A Message-ID fixed by the outbox key, so a resend is recognisable as the same."""
        key = idempotency_key(message.incident_id, message.event, self.name)
        domain = self.block.from_address.rpartition("@")[2]
        return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"

    def send(self, message: Message, thread: ThreadRef | None) -> Delivery:
        subject, body = render_email(message)
        mail = EmailMessage()
        mail["From"] = self.block.from_address
        mail["To"] = self.to
        mail["Subject"] = subject
        mail["Date"] = formatdate(usegmt=True)
        ref = self.message_id(message)
        mail["Message-ID"] = ref
        if thread is not None:
            mail["In-Reply-To"] = thread.root
            mail["References"] = thread.root
        mail.set_content(body)
        self._submit(mail)
        if thread is None and message.incident_id is not None:
            thread = ThreadRef(conversation=self.to, root=ref)
        return Delivery(ref=ref, thread_ref=thread)

    def _submit(self, mail: EmailMessage) -> None:
        block = self.block
        password = block.password.get_secret_value() if block.password else ""
        secrets = [password] if password else []
        try:
            context = self._context()
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryFailed(self.name, f"cannot read the CA bundle {block.ca_bundle}: "
                                 f"{exc}", permanent=False) from exc
        try:
            smtp: smtplib.SMTP
            if block.use_ssl:
                smtp = smtplib.SMTP_SSL(block.host, block.port, timeout=block.timeout,
                                        context=context)
            else:
                smtp = smtplib.SMTP(block.host, block.port, timeout=block.timeout)
            with smtp:
                smtp.ehlo()
                secure = block.use_ssl
                if not secure and block.starttls and smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                    secure = True
                if block.username:
                    if not secure:
                        raise DeliveryFailed(
                            self.name, f"{block.host}:{block.port} offers no STARTTLS; the "
                            "password is never sent in clear", permanent=True)
                    smtp.login(block.username, password)
                smtp.send_message(mail, to_addrs=[self.to])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            raise self._refused(f"recipient {self.to} refused", code, reply) from exc
        except smtplib.SMTPResponseException as exc:
            raise self._refused(type(exc).__name__, exc.smtp_code, exc.smtp_error) from exc
        except ssl.SSLCertVerificationError as exc:
            # Not retried: a server that cannot prove who it is may be someone else.
            raise DeliveryFailed(self.name, f"{block.host}:{block.port}: TLS certificate not "
                                 f"trusted: {exc.verify_message}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise _transport_failure(self.name, exc, secrets) from exc

    def _refused(self, what: str, code: int, reply: bytes | str) -> DeliveryFailed:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        # SMTP's own rule: 4xx is "try again later", 5xx is "do not".
        return DeliveryFailed(self.name, f"{what}: {code} {text}".strip(),
                              permanent=code >= 500)


# -- Telegram and SMS (HTTP) ---------------------------------------------------------------------


def _http_failure(channel: str, response: httpx.Response, detail: str) -> DeliveryFailed:
    status = response.status_code
    transient = status in (408, 425, 429) or status >= 500
    return DeliveryFailed(channel, f"HTTP {status}: {detail}", permanent=not transient,
                          retry_after=_retry_after(response.headers.get("retry-after")))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


class TelegramNotifier:
    """Telegram's Bot API ``sendMessage`` (HTML), replying to the incident's first message."""

    def __init__(
        self, block: TelegramBot, chat_id: str | None = None, name: str = "telegram",
        client: httpx.Client | None = None,
    ) -> None:
        self.name = name
        self.chat_id = chat_id or block.chat_id
        self._token = block.bot_token.get_secret_value()
        self._url = f"{block.base_url}/bot{self._token}/sendMessage"
        self._timeout = block.timeout
        self._client = client or httpx.Client()

    def send(self, message: Message, thread: ThreadRef | None) -> Delivery:
        payload: dict[str, Any] = {
            "chat_id": self.chat_id, "text": render_telegram(message), "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if thread is not None:
            payload["reply_parameters"] = {"message_id": int(thread.root),
                                           "allow_sending_without_reply": True}
        try:
            response = self._client.post(self._url, json=payload, timeout=self._timeout)
        except httpx.HTTPError as exc:
            # httpx names the URL, which holds the token: redacted.
            raise _transport_failure(self.name, exc, [self._token]) from exc
        body = _json(response)
        if response.status_code != 200 or not body.get("ok"):
            detail = str(body.get("description") or response.text[:200])
            failure = _http_failure(self.name, response, redact(detail, [self._token]))
            after = (body.get("parameters") or {}).get("retry_after")
            if isinstance(after, int | float):
                failure.retry_after = float(after)
            raise failure
        result = body.get("result") or {}
        message_id, chat = result.get("message_id"), result.get("chat") or {}
        if message_id is None:
            raise DeliveryFailed(self.name, f"answer without a message_id: {body!r:.200}",
                                 permanent=False)
        ref = str(message_id)
        if thread is None and message.incident_id is not None:
            thread = ThreadRef(conversation=str(chat.get("id", self.chat_id)), root=ref)
        return Delivery(ref=ref, thread_ref=thread)


class SmsNotifier:
    """An SMS gateway's HTTP API: ``POST {base_url}/v1/messages`` with a Bearer key and JSON
    ``{from, to, text}``, answered 201 ``{id, status}``. The outbox key goes along as
    ``Idempotency-Key``, so a resend after a lost answer is not texted twice."""

    def __init__(
        self, block: SmsGateway, to: str, name: str = "sms", client: httpx.Client | None = None
    ) -> None:
        self.name = name
        self.to = to
        self.sender = block.sender
        self._key = block.api_key.get_secret_value()
        self._url = block.base_url.rstrip("/") + "/v1/messages"
        self._timeout = block.timeout
        self._client = client or httpx.Client(verify=block.verify_tls)

    def send(self, message: Message, thread: ThreadRef | None) -> Delivery:
        key = idempotency_key(message.incident_id, message.event, self.name)
        try:
            response = self._client.post(
                self._url, timeout=self._timeout,
                json={"from": self.sender, "to": self.to, "text": render_sms(message)},
                headers={"Authorization": f"Bearer {self._key}", "Idempotency-Key": key},
            )
        except httpx.HTTPError as exc:
            raise _transport_failure(self.name, exc, [self._key]) from exc
        body = _json(response)
        if response.status_code not in (200, 201):
            detail = f"{body.get('error', '')}: {body.get('message', '')}".strip(": ")
            raise _http_failure(self.name, response,
                                redact(detail or response.text[:200], [self._key]))
        if not body.get("id"):
            raise DeliveryFailed(self.name, f"answer without an id: {body!r:.200}",
                                 permanent=False)
        return Delivery(ref=str(body["id"]), thread_ref=None)


def notifier_for(found: Contact, block: BaseModel) -> Notifier:
    """The notifier reaching contact ``found`` with its channel's ``block``; a
    ``DeliveryFailed`` (not permanent: the configuration can be fixed) for a block of the
    wrong type."""
    wanted = BLOCK_TYPES[found.channel]
    if not isinstance(block, wanted):
        raise DeliveryFailed(found.name, f"block {contact_block(found)!r} is a "
                             f"{type(block).__name__}, {found.channel} needs a {wanted.__name__}",
                             permanent=False)
    if isinstance(block, SlackChat):
        return SlackNotifier(block, channel=found.address, name=found.name)
    if isinstance(block, SmtpServer):
        return EmailNotifier(block, to=found.address, name=found.name)
    if isinstance(block, TelegramBot):
        return TelegramNotifier(block, chat_id=found.address, name=found.name)
    assert isinstance(block, SmsGateway)
    return SmsNotifier(block, to=found.address, name=found.name)


def secret_values(models: Iterable[object]) -> tuple[str, ...]:
    """Every secret field value (``SecretStr``/``SecretBytes``) of the given blocks: what
    ``redact`` takes out of messages."""
    found: list[str] = []
    for model in models:
        if not isinstance(model, BaseModel):
            continue
        for name in type(model).model_fields:
            value = getattr(model, name, None)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
            elif isinstance(value, SecretBytes):
                found.append(value.get_secret_value().decode("utf-8", "replace"))
    return tuple(s for s in found if s)


@dataclass
class Channels:
    """The notifiers of the inventory's contacts, and why the others have none."""

    notifiers: dict[str, Notifier] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()

    def get(self, name: str) -> Notifier:
        """The notifier of contact ``name``; ``DeliveryFailed`` when it cannot be built (the
        contact is unknown: permanent; its block is missing or wrong: not)."""
        if name in self.notifiers:
            return self.notifiers[name]
        if name in self.problems:
            raise DeliveryFailed(name, self.problems[name], permanent=False)
        raise DeliveryFailed(name, f"no contact {name!r} in the inventory", permanent=True)


async def load_channels(inventory: Inventory) -> Channels:
    """Load the block of every contact's channel from Prefect and build its notifier; a
    block that is missing or invalid becomes that contact's problem, not an error."""
    channels = Channels()
    loaded: dict[str, BaseModel] = {}
    failures: dict[str, str] = {}
    for found in inventory.contacts.values():
        name = contact_block(found)
        block_type = BLOCK_TYPES[found.channel]
        if name not in loaded and name not in failures:
            try:
                loaded[name] = await block_type.aload(name)  # type: ignore[attr-defined]
            except (ValueError, ValidationError) as exc:  # Prefect: "Unable to find block"
                failures[name] = (f"cannot load the {block_type.__name__} block {name!r} "
                                  f"for {found.channel}: {clip(str(exc), 300)}")
        if name in failures:
            channels.problems[found.name] = failures[name]
            continue
        try:
            channels.notifiers[found.name] = notifier_for(found, loaded[name])
        except DeliveryFailed as exc:
            channels.problems[found.name] = str(exc)
    channels.secrets = secret_values(loaded.values())
    return channels


# -- producing -------------------------------------------------------------------------------


class Enqueued(NamedTuple):
    """One outbox row for one channel; ``created`` is False when its key was already there."""

    channel: str
    id: int
    created: bool


def enqueue(store: Store, message: Message, channels: Sequence[str]) -> list[Enqueued]:
    """Put ``message`` in the outbox once per channel (contact name), redacted; a key that
    is already there is not queued again."""
    targets = list(dict.fromkeys(channels))
    if not targets:
        raise ValueError(f"no channel given for {message.event} of incident "
                         f"{message.incident_id}: it would be dropped")
    clean = redact_message(message)
    payload = clean.model_dump(mode="json")
    queued = []
    for channel in targets:
        key = idempotency_key(clean.incident_id, clean.event, channel)
        row_id, created = store.enqueue_notification(
            event=clean.event, channel=channel, idempotency_key=key, payload=payload,
            incident_id=clean.incident_id,
        )
        queued.append(Enqueued(channel, row_id, created))
    return queued


def flow_run_link(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI, when the UI's address is known."""
    if not flow_run_id:
        return None
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def _fields(data: Mapping[str, Any]) -> dict[str, str]:
    """The plain values of ``data`` worth showing beside a message (no lists or documents)."""
    shown: dict[str, str] = {}
    for key, value in data.items():
        if key in ("link", "flow_run_id") or isinstance(value, dict | list | tuple):
            continue
        if value is None or value == "":
            continue
        shown[str(key)] = clip(str(value), 300)
        if len(shown) >= MAX_FIELDS:
            break
    return shown


def incident_message(
    incident: IncidentRow, event: str, text: str, data: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
) -> Message:
    """The message of one event of ``incident``: its title, severity, zone, target, fault
    and state, ``text``, the plain values of ``data`` and a link (``data['link']``, or the
    Prefect UI page of ``data['flow_run_id']``)."""
    extra = dict(data or {})
    link = extra.get("link") or flow_run_link(extra.get("flow_run_id"))
    message = Message(
        incident_id=incident.id, event=event,
        title=f"{incident.fault_kind} on {incident.target}", text=text,
        severity=incident.severity, zone=incident.zone, target=incident.target,
        fault_kind=incident.fault_kind, state=incident.state,
        link=str(link) if link else None, fields=_fields(extra),
    )
    return redact_message(message, secrets)


def notify_incident_event(
    store: Store,
    inventory: Inventory,
    incident_row: IncidentRow,
    event: str,
    text: str,
    data: Mapping[str, Any] | None = None,
    *,
    channels: Sequence[str] = (),
    secrets: Iterable[str] = (),
) -> list[Enqueued]:
    """Tell people about ``event`` of an incident: build the message, route it by the
    inventory (zone, severity, fault kind) and enqueue it. ``channels`` are added to the
    routed ones, and so is ``data['contact']`` when it names a contact (an escalation
    level's). ``event`` is unique per incident (``step#57``): it is the outbox key's middle."""
    message = incident_message(incident_row, event, text, data, secrets)
    chosen = route(inventory, incident_row.zone, incident_row.severity, incident_row.fault_kind)
    extra = list(channels)
    named = (data or {}).get("contact")
    if isinstance(named, str) and named:
        extra.append(named)
    for name in extra:
        contact(inventory, name)  # an unknown contact fails here, by name
    return enqueue(store, message, [*chosen, *extra])


def notify_quietly(
    store: Store,
    inventory: Inventory,
    incident_row: IncidentRow,
    event: str,
    text: str,
    data: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
) -> list[Enqueued]:
    """``notify_incident_event`` for producers that must go on whatever happens (detection,
    runbooks): a failure to enqueue is logged as an error with the incident, not raised."""
    try:
        return notify_incident_event(store, inventory, incident_row, event, text, data,
                                     secrets=secrets)
    except (FloorwatchError, ValueError) as exc:
        log.error("incident #%s: %s not queued for chat: %s", incident_row.id, event, exc)
        return []


def timeline_event(kind: str, event_id: int, data: Mapping[str, Any] | None) -> str | None:
    """The outbox event for a runbook timeline entry, None when chat does not hear of it.
    A verified resolution is ``resolved``, like detection's, so people are told once."""
    if kind not in TIMELINE_NOTIFIED:
        return None
    if kind != "report":
        return f"{kind}#{event_id}"
    outcome = str((data or {}).get("outcome", ""))
    if outcome == "resolved":
        return "resolved"
    if outcome in ("escalated", "verified", "diagnosed"):
        return f"{'escalated' if outcome == 'escalated' else 'report'}#{event_id}"
    return None  # dry runs and busy targets were announced by their own entries


def notify_timeline(
    store: Store,
    inventory: Inventory,
    incident: IncidentRow,
    kind: str,
    text: str,
    data: Mapping[str, Any] | None,
    event_id: int,
    secrets: Iterable[str] = (),
) -> list[Enqueued]:
    """The runbook frame's hook: enqueue the chat-worthy timeline entries. A failure to
    enqueue is logged, never raised: a remediation must not stop for chat."""
    event = timeline_event(kind, event_id, data)
    if event is None:
        return []
    shown = dict(data or {})
    if kind == "report":
        shown = {"outcome": shown.get("outcome"), "runbook": shown.get("runbook")}
        text = str((data or {}).get("reason") or text)
    return notify_quietly(store, inventory, incident, event, text, shown, secrets)


def post_summary(
    text: str,
    link: str | None = None,
    *,
    title: str = "Platform summary",
    key: str | None = None,
    store: Store | None = None,
    inventory: Inventory | None = None,
) -> list[Enqueued]:
    """Queue a periodic report for the channels platform-wide messages are routed to.
    ``key`` makes it unique (default: the current minute), so a retried report flow does
    not post twice. The store and inventory default to the configured ones."""
    stamp = key or now_utc().strftime("%Y%m%dT%H%M")
    message = Message(event=f"summary#{stamp}", title=title, text=text, link=link)
    found = inventory or cached_inventory(
        os.environ.get(INVENTORY_ENV, "inventory.example.yaml"))
    if store is not None:
        return enqueue(store, message, route(found, None))
    with Store() as own:
        return enqueue(own, message, route(found, None))


# -- delivering ------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one delivery run did, by outbox key."""

    delivered: list[str] = field(default_factory=list)
    retrying: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    reported: list[str] = field(default_factory=list)  # failure reports queued
    deferred: dict[str, str] = field(default_factory=dict)  # channel -> why it was skipped

    def as_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "retrying": self.retrying, "failed": self.failed,
                "reported": self.reported, "deferred": self.deferred}


def _report_failure(
    store: Store, inventory: Inventory, row: NotificationRow, message: Message | None,
    reason: str,
) -> list[Enqueued]:
    """Tell people on another channel that ``row`` could not be delivered; once per
    (incident, failed channel, other channel). A failure report that fails is not reported
    again, so failures cannot chase each other around."""
    if message is not None and message.kind == "delivery_failed":
        return []
    zone = message.zone if message is not None else None
    other = fallback_channel(inventory, row.channel, zone)
    if other is None:
        log.error("no other channel to report that %s failed: %s", row.idempotency_key, reason)
        return []
    suffix = row.channel if row.incident_id is not None else f"{row.channel}.{row.id}"
    what = f"“{message.label}”" if message is not None else row.event
    report = Message(
        incident_id=row.incident_id, event=f"delivery_failed#{suffix}",
        title=message.title if message is not None else "Notification failed",
        text=(f"Could not deliver {what} to {row.channel}: {reason}. Further messages to "
              f"{row.channel} may not arrive; check that channel."),
        severity=message.severity if message else None, zone=zone,
        target=message.target if message else None,
        fault_kind=message.fault_kind if message else None,
        state=message.state if message else None,
        link=message.link if message else None,
        fields={"failed channel": row.channel, "event": row.event},
    )
    return enqueue(store, report, [other])


def _attempt(
    store: Store, channels: Channels, inventory: Inventory, row: NotificationRow,
    policy: RetryPolicy, now: datetime, report: DeliveryReport,
) -> bool:
    """Try ``row`` once; True when it is settled (delivered or failed for good)."""
    message: Message | None = None
    thread: ThreadRef | None = None
    try:
        try:
            message = redact_message(message_from_payload(row.payload), channels.secrets)
        except ValidationError as exc:
            raise DeliveryFailed(row.channel, f"the stored message is invalid: "
                                 f"{clip(str(exc), 300)}", permanent=True) from exc
        notifier = channels.get(row.channel)
        if row.incident_id is not None:
            found = store.notification_thread(row.incident_id, row.channel)
            thread = ThreadRef.model_validate(found) if found else None
        delivery = notifier.send(message, thread)
    except DeliveryFailed as exc:
        retry_at, reason = policy.verdict(exc, row.attempts + 1, row.created_at, now)
        reason = redact(reason, channels.secrets)
        if retry_at is None:
            store.mark_notification(row.id, "failed", error=reason)
            report.failed[row.idempotency_key] = reason
            queued = _report_failure(store, inventory, row, message, reason)
            report.reported += [f"{row.incident_id}:{q.channel}#{q.id}" for q in queued]
            return True
        store.mark_notification(row.id, "pending", error=reason, next_attempt_at=retry_at)
        report.retrying[row.idempotency_key] = reason
        report.deferred[row.channel] = reason
        return False
    started = delivery.thread_ref if thread is None and delivery.thread_ref else None
    store.mark_notification(row.id, "delivered", delivery_ref=delivery.ref,
                            thread_ref=started.model_dump() if started else None)
    report.delivered.append(row.idempotency_key)
    return True


def deliver_pending(
    store: Store,
    channels: Channels,
    inventory: Inventory,
    *,
    policy: RetryPolicy | None = None,
    limit: int = 100,
    time_budget_s: float = 30.0,
    clock: Callable[[], datetime] = now_utc,
) -> DeliveryReport:
    """Deliver what is due in the outbox, each (incident, channel) queue in order, until
    nothing more can go or ``time_budget_s`` is spent. A channel that fails for a passing
    reason is left alone for the rest of the run (its queues wait for their backoff)."""
    rules = policy or RetryPolicy()
    report = DeliveryReport()
    deadline = time.monotonic() + time_budget_s
    while time.monotonic() < deadline:
        now = clock()
        settled = 0
        for row in store.notification_heads(now, limit):
            if row.channel in report.deferred:
                continue
            lease = now + timedelta(seconds=rules.lease_s)
            if not store.claim_notification(row.id, lease, now):
                continue  # another delivery run has it
            settled += _attempt(store, channels, inventory, row, rules, clock(), report)
            if time.monotonic() >= deadline:
                break
        if not settled:
            break
    return report


@task(name="load-notification-channels", cache_policy=NO_CACHE)
async def load_notification_channels(inventory: Inventory) -> Channels:
    """The notifiers of every contact (blocks loaded from Prefect); problems are logged."""
    channels = await load_channels(inventory)
    logger = get_run_logger()
    for name, problem in channels.problems.items():
        logger.warning("contact %s cannot be reached: %s", name, problem)
    return channels


@task(name="deliver-outbox", cache_policy=NO_CACHE)
async def deliver_outbox(
    inventory: Inventory, channels: Channels, limit: int = 100, time_budget_s: float = 30.0
) -> dict[str, Any]:
    """Deliver the due notifications of the configured store (see ``deliver_pending``)."""

    def run() -> DeliveryReport:
        with Store() as store:
            return deliver_pending(store, channels, inventory, limit=limit,
                                   time_budget_s=time_budget_s)

    # The adapters block (slack-sdk, smtplib): a worker thread keeps the event loop free.
    report = await asyncio.to_thread(run)
    logger = get_run_logger()
    for key, reason in report.failed.items():
        logger.error("notification %s failed: %s", key, reason)
    for channel, reason in report.deferred.items():
        logger.warning("channel %s unavailable, will retry: %s", channel, reason)
    return report.as_dict()

