"""The leak test (issue 8): a full incident on the real sandbox with known secret values (SSH
key, TSIG secret, Slack token, SMTP password), then every log line, Prefect log, artifact,
event, chat message, store row and audit export is searched for them: none is found."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from floorwatch.audit import export
from floorwatch.catalogue import Channel
from floorwatch.notify import DEFAULT_BLOCKS
from floorwatch.store import Store, metadata
from sandbox.control import Sandbox
from tests.fixtures.postgres import free_port
from tests.fixtures.sandbox import fast_inventory_file

pytestmark = pytest.mark.integration

INTERVAL = 1.0
FAILURES = 2
TARGET = "app-primary-game-engine"
SMTP_PASSWORD = "leak-test-smtp-password-7f3a9c2e51b04d68"
# Base64 lines of a key shorter than this could match by chance (padding, short tails).
MIN_KEY_LINE = 20


@pytest.fixture
def fast_inventory(sandbox_platform: Sandbox, tmp_path: Path) -> Path:
    """The sandbox's inventory with online-core's probes every second, opening after two."""
    return fast_inventory_file(sandbox_platform, tmp_path / "fast-inventory.yaml",
                               "online-core", INTERVAL, FAILURES)


@pytest.fixture
def smtp_block(sandbox_blocks_saved: list[str]) -> Iterator[str]:
    """An SmtpServer block with a known password, saved as the email contacts' block and
    pointing at a closed loopback port (email delivery is tried and fails transiently);
    deleted afterwards so later tests see the session's blocks unchanged."""
    from blocks import SmtpServer

    name = DEFAULT_BLOCKS[Channel.EMAIL]
    SmtpServer(host="127.0.0.1", port=free_port(), username="floorwatch",
               password=SecretStr(SMTP_PASSWORD), from_address="fw@sandbox.test",
               timeout=2).save(name, overwrite=True)
    try:
        yield SMTP_PASSWORD
    finally:
        SmtpServer.delete(name)


async def known_secrets(smtp_password: str) -> dict[str, str]:
    """Label -> secret text: read back from the saved blocks, as the runbooks read them."""
    from blocks import DnsZone, SlackChat, SshHost

    key = (await SshHost.aload("sandbox-app-primary")).private_key.get_secret_value()
    found = {
        "ssh private key": key.strip(),
        "tsig secret": (await DnsZone.aload("sandbox-dns")).tsig_secret.get_secret_value(),
        "slack bot token": (await SlackChat.aload(DEFAULT_BLOCKS[Channel.SLACK]))
        .bot_token.get_secret_value(),
        "smtp password": smtp_password,
    }
    body = [line.strip() for line in key.splitlines()
            if len(line.strip()) > MIN_KEY_LINE and not line.startswith("-----")]
    assert body, "the SSH key has no base64 body lines to search for"
    for number, line in enumerate(body, 1):
        found[f"ssh private key line {number}"] = line
    return found


async def _prefect_logs(client: Any, since: datetime) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    lines: list[str] = []
    while True:
        page = await client.read_logs(
            log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)),
            limit=200, offset=len(lines),
        )
        lines += [f"{log.name} {log.message}" for log in page]
        if len(page) < 200:
            return lines


async def _events(client: Any, since: datetime) -> list[str]:
    from prefect.events.filters import EventFilter, EventOccurredFilter

    page = await client.read_events(EventFilter(occurred=EventOccurredFilter(since=since)),
                                    limit=50)
    events = list(page.events)
    while page.next_page is not None:
        page = await client.read_events_page(page.next_page)
        events += page.events
    return [event.model_dump_json() for event in events]


def _store_rows(store_url: str) -> dict[str, list[str]]:
    with Store(store_url) as s, s.engine.connect() as conn:
        return {table.name: [repr(tuple(row)) for row in conn.execute(select(table))]
                for table in metadata.sorted_tables}


def _chat_messages(sandbox_platform: Sandbox) -> list[str]:
    saas = sandbox_platform.describe()["components"]["saas"]
    out = []
    for service, info in saas.items():
        response = httpx.get(f"{info['url']}/_sandbox/messages", timeout=5)
        response.raise_for_status()
        out.append(f"{service}: {response.text}")
    return out


def _leaks(secrets: dict[str, str], places: dict[str, list[str]]) -> list[str]:
    """``secret label in place: excerpt`` for every place holding a secret."""
    found = []
    for place, texts in places.items():
        for text in texts:
            for label, secret in secrets.items():
                at = text.find(secret)
                if at >= 0:
                    excerpt = text[max(0, at - 60):at + len(secret) + 20].replace(secret, "<HERE>")
                    found.append(f"{label} in {place}: ...{excerpt}...")
    return found


async def test_full_incident_leaks_no_secret_to_logs_artifacts_chat_store_or_audit(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, prefect_client: Any,
    fast_inventory: Path, smtp_block: str, caplog: pytest.LogCaptureFixture,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Crash, sweep, incident, SSH restart, chat delivery and a TSIG dry run leave no known
    secret in any log line, artifact, event, chat message, store row or audit export."""
    from flows.notifications import deliver_notifications
    from flows.sweep import sweep_zone
    from runbooks.fail_over_dns import fail_over_dns
    from runbooks.restart_service import restart_service

    caplog.set_level(logging.DEBUG)
    audit_file = tmp_path / "audit.jsonl"
    monkeypatch.setenv("FLOORWATCH_AUDIT_JSONL", str(audit_file))
    secrets = await known_secrets(smtp_block)
    since = datetime.now(UTC)
    store_url = runbook_env["store_url"]
    chat_before = _chat_messages(sandbox_platform)

    args = {"zone": "online-core", "probe_kind": "http", "inventory_path": str(fast_inventory)}
    await sweep_zone(**args)  # a healthy baseline
    sandbox_platform.inject("service_crash", "app-primary")
    injected = time.monotonic()
    opened: list[dict[str, Any]] = []
    swept: dict[str, Any] = {}
    for tick in range(1, 10):
        await asyncio.sleep(max(0.0, injected + tick * INTERVAL - time.monotonic()))
        swept = await sweep_zone(**args)
        opened = [o for o in swept["detection"]["opened"] if o["target"] == TARGET]
        if opened:
            break
    assert opened, f"no incident opened for {TARGET}"
    # The sweep restarts the service itself (the fast path); otherwise the triggered run
    # would, which is what this test then does.
    report = next((r for r in swept["fast_path"] if r["target"] == TARGET), None)
    if report is None:
        report = await restart_service(target=TARGET, incident_id=opened[0]["incident_id"],
                                       requested_by="automation")
    assert report["outcome"] == "resolved", report
    dns_report = await fail_over_dns(target="gateway-dns", dry_run=True,
                                     requested_by="automation")
    assert dns_report["outcome"] == "dry_run", dns_report
    sandbox_platform.heal()
    delivered = await deliver_notifications()
    assert delivered["delivered"], f"no notification was delivered: {delivered}"

    chat = [m for m in _chat_messages(sandbox_platform) if m not in chat_before]
    assert any("slack" in m and TARGET in m for m in chat), "the Slack stand-in got nothing"
    artifacts = await prefect_client.read_artifacts()
    assert artifacts, "no artifacts to search"
    with Store(store_url) as s:
        audit_export = export(s)
    places: dict[str, list[str]] = {
        "caplog": [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records],
        "prefect logs": await _prefect_logs(prefect_client, since),
        "artifacts": [a.model_dump_json() for a in artifacts],
        "prefect events": await _events(prefect_client, since),
        "chat stand-ins": chat,
        "audit export": [audit_export],
        "audit jsonl sink": [audit_file.read_text()],
        "reports": [json.dumps(report, default=str), json.dumps(dns_report, default=str),
                    json.dumps(delivered, default=str)],
    }
    for table, rows in _store_rows(store_url).items():
        places[f"store table {table}"] = rows
    assert places["prefect logs"], "no Prefect logs to search"
    assert places["audit export"][0], "no audit entries to search"
    leaks = _leaks(secrets, places)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
