"""The notifiers against real servers on loopback: a real SMTP server (aiosmtpd) with STARTTLS,
and the sandbox's Slack, Telegram and SMS stand-ins driven through the real clients
(slack-sdk, httpx), which check the method, the auth header and the payload shape as the
services do. Also the stand-ins themselves as a sandbox part: faults, recovery, clean stop."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from blocks import SlackChat, SmsGateway, SmtpServer, TelegramBot
from deployments.sandbox_blocks import chat_blocks
from floorwatch.errors import SandboxError
from floorwatch.notify import DeliveryFailed, Message, ThreadRef
from sandbox.saas import SLACK_CHANNELS, SMS, TELEGRAM, SaasStandIns
from sandbox.tls import create_authority, issue_server_cert
from sandbox.topology import HOST, SAAS_SERVICES, Layout, free_base_port
from tasks.notify import EmailNotifier, SlackNotifier, SmsNotifier, TelegramNotifier
from tests.fixtures.postgres import free_port

pytestmark = pytest.mark.integration

OPS = SLACK_CHANNELS["ops-oncall"]
BACKEND_CHAT = "-1001234567890"
SMTP_USER, SMTP_PASSWORD = "floorwatch", "smtp-password-42"


def message(**changes: object) -> Message:
    base: dict[str, object] = {
        "incident_id": 7, "event": "opened", "title": "service_down on app-primary",
        "text": "game-engine refuses connections", "severity": "critical",
        "zone": "online-core", "target": "app-primary", "fault_kind": "service_down",
        "state": "open",
    }
    return Message.model_validate(base | changes)


# -- the stand-ins ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaasStandIns]:
    """The three stand-ins on a free port range for the module, always stopped."""
    component = SaasStandIns(Layout(tmp_path_factory.mktemp("saas") / "sb", free_base_port()))
    component.start()
    try:
        yield component
    finally:
        component.stop()


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that fault the shared stand-ins leave them healed."""
    yield
    if "saas" in request.fixturenames:
        request.getfixturevalue("saas").heal()


@pytest.fixture
def blocks(saas: SaasStandIns) -> dict[str, Any]:
    """The sandbox's chat blocks, as the main job saves them."""
    return dict(chat_blocks(saas.describe()))


def _slack(blocks: dict[str, Any]) -> SlackChat:
    found: SlackChat = blocks["notify-slack"]
    return found


def _since(saas: SaasStandIns, service: str, before: int) -> list[dict[str, Any]]:
    return saas.received()[service][before:]


def _count(saas: SaasStandIns, service: str) -> int:
    return len(saas.received()[service])


# -- Slack -------------------------------------------------------------------------------------


def test_slack_posts_one_incident_message_threads_events_and_updates_it_in_place(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """The first event is the channel message; later ones reply in its thread and rewrite it
    with the incident's new state."""
    notifier = SlackNotifier(_slack(blocks), channel="#ops-oncall", name="ops-oncall")
    before = _count(saas, "slack")
    root = notifier.send(message(), None)
    assert root.thread_ref == ThreadRef(conversation=OPS, root=root.ref)
    step = notifier.send(message(event="step#4", text="restarted game-engine",
                                 state="remediating"), root.thread_ref)
    done = notifier.send(message(event="resolved", text="recovery verified",
                                 state="resolved"), root.thread_ref)
    assert step.thread_ref == done.thread_ref == root.thread_ref

    posted = _since(saas, "slack", before)
    assert [m["ts"] for m in posted] == [root.ref, step.ref, done.ref]
    first, reply, last = posted
    assert reply["thread_ts"] == last["thread_ts"] == root.ref
    assert "thread_ts" not in first or first["thread_ts"] == root.ref
    assert first["edited"]  # rewritten in place, not posted again
    assert first["text"] == "[CRITICAL] service_down on app-primary (resolved): Resolved"
    assert first["blocks"][0]["text"]["text"] == "service_down on app-primary"
    facts = [f["text"] for f in first["blocks"][1]["fields"]]
    assert "*State*\n:white_check_mark: resolved" in facts
    assert reply["text"] == "Action: restarted game-engine"


def test_slack_stand_in_checks_the_token_as_slack_does(saas: SaasStandIns) -> None:
    """No token: not_authed; a wrong one: invalid_auth (HTTP 200, ok false, as Slack)."""
    url = saas.describe()["slack"]["base_url"] + "chat.postMessage"
    answer = httpx.post(url, json={"channel": "#ops-oncall", "text": "hi"})
    assert (answer.status_code, answer.json()) == (200, {"ok": False, "error": "not_authed"})
    answer = httpx.post(url, json={"channel": "#ops-oncall", "text": "hi"},
                        headers={"Authorization": "Bearer xoxb-0-0-wrong"})
    assert answer.json() == {"ok": False, "error": "invalid_auth"}


def test_slack_stand_in_takes_form_bodies_and_the_token_argument(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """A form post with token=... and a JSON-string blocks argument is accepted, like Slack."""
    token = _slack(blocks).bot_token.get_secret_value()
    url = saas.describe()["slack"]["base_url"] + "chat.postMessage"
    answer = httpx.post(url, data={
        "token": token, "channel": "ops-oncall", "text": "form",
        "blocks": '[{"type": "section", "text": {"type": "mrkdwn", "text": "*form*"}}]'})
    body = answer.json()
    assert body["ok"] is True
    assert body["channel"] == OPS
    assert body["message"]["blocks"][0]["text"]["text"] == "*form*"
    auth = WebClient(token=token, base_url=_slack(blocks).base_url).auth_test()
    assert (auth["ok"], auth["bot_id"], auth["team_id"]) == (True, "B0FLOORWT1", "T0SANDBOX1")


def test_slack_stand_in_refuses_blocks_slack_would_refuse(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """A header over 150 characters is invalid_blocks, and the notifier calls it permanent."""
    client = WebClient(token=_slack(blocks).bot_token.get_secret_value(),
                       base_url=_slack(blocks).base_url)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="#ops-oncall", text="x", blocks=[
            {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}])
    assert caught.value.response["error"] == "invalid_blocks"
    assert "at most 150" in caught.value.response["response_metadata"]["messages"][0]


def test_slack_unknown_channel_is_a_permanent_failure(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """channel_not_found will not fix itself: permanent, naming the channel."""
    notifier = SlackNotifier(_slack(blocks), channel="#no-such-channel", name="ghost")
    with pytest.raises(DeliveryFailed, match="no-such-channel: channel_not_found") as caught:
        notifier.send(message(), None)
    assert caught.value.permanent


def test_slack_wrong_or_revoked_token_is_a_permanent_failure(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """invalid_auth and token_revoked (the fault) are permanent; the token never shows."""
    good = _slack(blocks)
    wrong = good.model_copy(update={"bot_token": SecretStr("xoxb-1-2-wrongwrongwrong")})
    with pytest.raises(DeliveryFailed, match="invalid_auth") as caught:
        SlackNotifier(wrong, name="ops").send(message(), None)
    assert caught.value.permanent
    saas.inject("token_revoked", "slack")
    with pytest.raises(DeliveryFailed, match="token_revoked") as caught:
        SlackNotifier(good, name="ops").send(message(), None)
    assert caught.value.permanent
    assert good.bot_token.get_secret_value() not in str(caught.value)


def test_slack_down_is_a_transient_failure_and_recovers_when_healed(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """chat_down refuses connections (retry later); after heal the same notifier posts."""
    notifier = SlackNotifier(_slack(blocks), name="ops")
    saas.inject("chat_down", "slack")
    with pytest.raises(DeliveryFailed, match="cannot reach the service") as caught:
        notifier.send(message(), None)
    assert not caught.value.permanent
    saas.heal("slack")
    assert notifier.send(message(), None).ref


# -- Telegram ------------------------------------------------------------------------------------


def test_telegram_sends_html_and_replies_to_the_incidents_first_message(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """sendMessage with parse_mode HTML; later events reply to the first message."""
    notifier = TelegramNotifier(blocks["notify-telegram"], chat_id=BACKEND_CHAT, name="backend")
    before = _count(saas, TELEGRAM)
    first = notifier.send(message(text="load <5> & rising"), None)
    assert first.thread_ref == ThreadRef(conversation=BACKEND_CHAT, root=first.ref)
    second = notifier.send(message(event="resolved", state="resolved", text="ok"),
                           first.thread_ref)
    got = _since(saas, TELEGRAM, before)
    assert [m["message_id"] for m in got] == [int(first.ref), int(second.ref)]
    assert "load <5> & rising" in got[0]["text"]  # parsed from escaped HTML
    assert got[0]["html"].startswith("<b>service_down on app-primary</b>")
    assert got[1]["reply_to_message"]["message_id"] == int(first.ref)


def test_telegram_stand_in_answers_errors_in_the_bot_apis_shape(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """A wrong token is 401 Unauthorized; bad HTML is 400 can't parse entities."""
    base = saas.describe()[TELEGRAM]["base_url"]
    answer = httpx.post(f"{base}/bot123:wrong/sendMessage",
                        json={"chat_id": BACKEND_CHAT, "text": "hi"})
    assert (answer.status_code, answer.json()) == (
        401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    token = blocks["notify-telegram"].bot_token.get_secret_value()
    answer = httpx.post(f"{base}/bot{token}/sendMessage",
                        data={"chat_id": BACKEND_CHAT, "text": "<b>open", "parse_mode": "HTML"})
    assert answer.status_code == 400
    assert answer.json()["description"].startswith("Bad Request: can't parse entities")


def test_telegram_unknown_chat_and_revoked_token_are_permanent(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """chat not found and Unauthorized will not fix themselves; the token never shows."""
    block: TelegramBot = blocks["notify-telegram"]
    with pytest.raises(DeliveryFailed, match="chat not found") as caught:
        TelegramNotifier(block, chat_id="-100555", name="nobody").send(message(), None)
    assert caught.value.permanent
    saas.inject("token_revoked", TELEGRAM)
    with pytest.raises(DeliveryFailed, match="HTTP 401: Unauthorized") as caught:
        TelegramNotifier(block, name="backend").send(message(), None)
    assert caught.value.permanent
    assert block.bot_token.get_secret_value() not in str(caught.value)


def test_telegram_down_is_transient_without_leaking_the_token_in_the_url(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """A refused connection is retried later; the error does not show the bot token."""
    block: TelegramBot = blocks["notify-telegram"]
    saas.inject("chat_down", TELEGRAM)
    with pytest.raises(DeliveryFailed) as caught:
        TelegramNotifier(block, name="backend").send(message(), None)
    assert not caught.value.permanent
    assert block.bot_token.get_secret_value() not in str(caught.value)


# -- SMS ---------------------------------------------------------------------------------------


def test_sms_gateway_sends_once_per_outbox_key(saas: SaasStandIns, blocks: dict[str, Any]) -> None:
    """POST /v1/messages answers 201 with an id; a resend of the same key is not texted."""
    notifier = SmsNotifier(blocks["notify-sms"], to="+35699000000", name="techs")
    before = _count(saas, SMS)
    first = notifier.send(message(event="opened"), None)
    again = notifier.send(message(event="opened"), None)
    assert first.ref == again.ref
    assert first.ref.startswith("msg_")
    got = _since(saas, SMS, before)
    assert len(got) == 1
    assert got[0]["from"] == "Floorwatch"
    assert got[0]["text"].startswith("[CRITICAL] #7 service_down on app-primary")


def test_sms_gateway_refuses_bad_numbers_and_revoked_keys_for_good(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """422 invalid_number and 401 api_key_revoked are permanent; 401 without a key too."""
    block: SmsGateway = blocks["notify-sms"]
    with pytest.raises(DeliveryFailed, match="HTTP 422: invalid_number") as caught:
        SmsNotifier(block, to="+0000000", name="techs").send(message(), None)
    assert caught.value.permanent
    saas.inject("token_revoked", SMS)
    with pytest.raises(DeliveryFailed, match="api_key_revoked") as caught:
        SmsNotifier(block, to="+35699000000", name="techs").send(message(), None)
    assert caught.value.permanent
    answer = httpx.post(saas.describe()[SMS]["base_url"] + "/v1/messages",
                        json={"from": "x", "to": "+35699000000", "text": "hi"})
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"


# -- email ---------------------------------------------------------------------------------------


@dataclass
class MailBox:
    """What the SMTP server accepted, and over which kind of session."""

    mails: list[dict[str, Any]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SmtpServerProtocol, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("bad@"):
            return "550 5.1.1 <bad@example.test>: mailbox unavailable"
        if address.startswith("busy@"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SmtpServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        self.mails.append({
            "to": list(envelope.rcpt_tos), "from": envelope.mail_from,
            "tls": session.ssl is not None, "login": getattr(session.auth_data, "login", None),
            "mail": email.message_from_bytes(raw, policy=email.policy.default),
        })
        return "250 2.0.0 accepted"


def _authenticate(
    server: SmtpServerProtocol, session: Session, envelope: Envelope, mechanism: str,
    auth_data: object,
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(), SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass
class SmtpSetup:
    box: MailBox
    port: int
    ca: Path


def _controller(box: MailBox, port: int, tls: ssl.SSLContext | None) -> Controller:
    kwargs: dict[str, Any] = {"authenticator": _authenticate, "auth_require_tls": True}
    if tls is not None:
        kwargs["tls_context"] = tls
    controller = Controller(box, hostname=HOST, port=port, ready_timeout=10, **kwargs)
    controller.start()
    return controller


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSetup]:
    """A real SMTP server offering STARTTLS with a certificate from a throw-away CA."""
    folder = tmp_path_factory.mktemp("smtp")
    authority = create_authority(folder)
    cert = issue_server_cert(authority, folder)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert.cert_file, cert.key_file)
    box = MailBox()
    port = free_port()
    controller = _controller(box, port, tls)
    try:
        yield SmtpSetup(box, port, authority.cert_file)
    finally:
        controller.stop()


def _smtp_block(setup: SmtpSetup, **changes: Any) -> SmtpServer:
    values: dict[str, Any] = {
        "host": HOST, "port": setup.port, "from_address": "floorwatch@sandbox.test",
        "ca_bundle": setup.ca, "timeout": 5, "username": SMTP_USER,
        "password": SecretStr(SMTP_PASSWORD),
    }
    return SmtpServer(**(values | changes))


def test_email_upgrades_with_starttls_logs_in_and_threads_by_message_id(smtp: SmtpSetup) -> None:
    """Mail goes over verified STARTTLS with a login; a later event replies to the first."""
    notifier = EmailNotifier(_smtp_block(smtp), to="devops@sandbox.test", name="devops")
    before = len(smtp.box.mails)
    first = notifier.send(message(), None)
    assert first.thread_ref == ThreadRef(conversation="devops@sandbox.test", root=first.ref)
    later = notifier.send(message(event="resolved", state="resolved"), first.thread_ref)
    got = smtp.box.mails[before:]
    assert [m["tls"] for m in got] == [True, True]
    assert got[0]["login"] == SMTP_USER.encode()
    assert got[0]["to"] == ["devops@sandbox.test"]
    assert got[0]["mail"]["Message-ID"] == first.ref
    assert str(got[0]["mail"]["Subject"]).strip() == (
        "[Floorwatch #7] [CRITICAL] service_down on app-primary: Incident opened")
    assert got[1]["mail"]["In-Reply-To"] == first.ref
    assert got[1]["mail"]["Message-ID"] == later.ref != first.ref
    assert "game-engine refuses connections" in got[0]["mail"].get_content()


def test_email_recipient_refused_5xx_is_permanent_and_4xx_transient(smtp: SmtpSetup) -> None:
    """SMTP's own rule decides: 550 do not retry, 451 try again later."""
    block = _smtp_block(smtp)
    with pytest.raises(DeliveryFailed, match=r"550 5\.1\.1") as caught:
        EmailNotifier(block, to="bad@example.test", name="x").send(message(), None)
    assert caught.value.permanent
    with pytest.raises(DeliveryFailed, match=r"451 4\.3\.0") as caught:
        EmailNotifier(block, to="busy@example.test", name="x").send(message(), None)
    assert not caught.value.permanent


def test_email_refuses_a_server_certificate_it_cannot_verify(
    smtp: SmtpSetup, tmp_path: Path,
) -> None:
    """Against another CA the STARTTLS handshake fails, permanently: never sent in clear."""
    other = create_authority(tmp_path / "other")
    block = _smtp_block(smtp, ca_bundle=other.cert_file)
    before = len(smtp.box.mails)
    with pytest.raises(DeliveryFailed, match="TLS certificate not trusted") as caught:
        EmailNotifier(block, to="devops@sandbox.test", name="x").send(message(), None)
    assert caught.value.permanent
    assert len(smtp.box.mails) == before


def test_email_without_starttls_on_offer_sends_plain_but_never_a_password(
    tmp_path: Path,
) -> None:
    """A server offering no STARTTLS gets the mail in clear only when no login is needed."""
    box = MailBox()
    port = free_port()
    controller = _controller(box, port, None)
    try:
        setup = SmtpSetup(box, port, tmp_path / "unused.pem")
        with pytest.raises(DeliveryFailed, match="password is never sent in clear") as caught:
            EmailNotifier(_smtp_block(setup, ca_bundle=None), to="a@b.test", name="x").send(
                message(), None)
        assert caught.value.permanent
        assert box.mails == []
        anonymous = _smtp_block(setup, username=None, password=None, ca_bundle=None)
        EmailNotifier(anonymous, to="a@b.test", name="x").send(message(), None)
        assert [m["tls"] for m in box.mails] == [False]
    finally:
        controller.stop()


def test_email_with_a_missing_ca_bundle_says_so_and_retries_later(
    smtp: SmtpSetup, tmp_path: Path,
) -> None:
    """A CA bundle that cannot be read is named; the file can be put back, so not permanent."""
    block = _smtp_block(smtp, ca_bundle=tmp_path / "missing-ca.pem")
    wanted = r"cannot read the CA bundle .*missing-ca\.pem"
    with pytest.raises(DeliveryFailed, match=wanted) as caught:
        EmailNotifier(block, to="a@b.test", name="x").send(message(), None)
    assert not caught.value.permanent


def test_email_to_a_closed_port_is_transient() -> None:
    """Connection refused means the server may come back: retry later."""
    block = SmtpServer(host=HOST, port=free_port(), from_address="fw@sandbox.test", timeout=2)
    with pytest.raises(DeliveryFailed, match="cannot reach the service") as caught:
        EmailNotifier(block, to="a@b.test", name="x").send(message(), None)
    assert not caught.value.permanent


# -- the stand-ins as a sandbox part ---------------------------------------------------------


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((HOST, port)) != 0


def test_describe_names_urls_ports_credential_files_and_message_pages(
    saas: SaasStandIns,
) -> None:
    """Everything a block needs comes from describe(); credential files are private."""
    info = saas.describe()
    assert set(info) == set(SAAS_SERVICES)
    for service, entry in info.items():
        assert entry["port"] == saas.layout.base_port + SAAS_SERVICES[service]
        assert entry["url"] == f"http://{HOST}:{entry['port']}"
        credential = Path(entry["credential_file"])
        assert credential.read_text().strip()
        assert credential.stat().st_mode & 0o077 == 0
    assert info["slack"]["base_url"].endswith("/api/")


def test_chat_down_closes_each_stand_ins_port_until_healed(saas: SaasStandIns) -> None:
    """chat_down refuses connections on that stand-in only; heal serves it again."""
    for service in SAAS_SERVICES:
        port = saas.describe()[service]["port"]
        saas.inject("chat_down", service)
        saas.inject("chat_down", service)  # twice is harmless
        assert _refused(port)
        assert saas.active_faults() == {service: ["chat_down"]}
        others = [s for s in SAAS_SERVICES if s != service]
        assert all(not _refused(saas.describe()[s]["port"]) for s in others)
        saas.heal(service)
        assert httpx.get(f"http://{HOST}:{port}/_sandbox/messages").status_code == 200
    assert saas.active_faults() == {}


def test_token_revoked_refuses_the_credential_until_healed(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """With token_revoked each API refuses its own credential as revoked; heal accepts it."""
    slack = WebClient(token=_slack(blocks).bot_token.get_secret_value(),
                      base_url=_slack(blocks).base_url)
    saas.inject("token_revoked", "slack")
    with pytest.raises(SlackApiError) as caught:
        slack.auth_test()
    assert caught.value.response["error"] == "token_revoked"
    saas.heal("slack")
    assert slack.auth_test()["ok"] is True


def test_the_messages_page_lists_what_was_received_newest_first(
    saas: SaasStandIns, blocks: dict[str, Any],
) -> None:
    """The HTML page shows the received messages, escaped, for the demo."""
    SlackNotifier(_slack(blocks), name="ops").send(
        message(incident_id=None, event="summary#page", title="Daily <summary>", text="all ok"),
        None)
    page = httpx.get(saas.describe()[TELEGRAM]["url"] + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Daily &lt;summary&gt;" in page.text


def test_unknown_fault_or_target_is_refused_with_a_sandbox_error(saas: SaasStandIns) -> None:
    """Faults and targets are checked before anything changes."""
    with pytest.raises(SandboxError, match="unknown fault 'meteor'"):
        saas.inject("meteor", "slack")
    with pytest.raises(SandboxError, match="does not apply to 'pager'"):
        saas.inject("chat_down", "pager")
    with pytest.raises(SandboxError, match="unknown target 'pager'"):
        saas.heal("pager")


def test_stop_frees_every_port_even_with_faults_in_force(tmp_path: Path) -> None:
    """stop() after faults leaves no listener and no thread; a second stop is harmless."""
    import threading

    component = SaasStandIns(Layout(tmp_path / "sb", free_base_port()))
    started = time.monotonic()
    component.start()
    assert time.monotonic() - started < 5
    ports = [component.port(service) for service in SAAS_SERVICES]
    try:
        component.inject("chat_down", "slack")
        component.inject("token_revoked", "telegram")
        keep_alive = httpx.Client()
        keep_alive.get(f"http://{HOST}:{ports[1]}/_sandbox/messages")
    finally:
        component.stop()
    component.stop()
    assert all(_refused(port) for port in ports)
    assert not [t for t in threading.enumerate() if t.name == component.thread_name]
    keep_alive.close()
    with pytest.raises(SandboxError, match="not running"):
        component.inject("chat_down", "slack")
