"""The sweep flow end to end, on a real Prefect server and the real sandbox: a fault is
detected as one incident with its event within N x interval + 2 s, and healing resolves it."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from floorwatch import store
from floorwatch.store import Store
from sandbox.control import Sandbox
from tests.fixtures.sandbox import fast_inventory_file

INTERVAL = 1.0
FAILURES = 3


@pytest.fixture
def fast_inventory(sandbox_platform: Sandbox, tmp_path: Path) -> Path:
    """The sandbox's inventory with the providers' probes every second."""
    return fast_inventory_file(sandbox_platform, tmp_path / "inventory.yaml", "providers",
                               INTERVAL, FAILURES)


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'floorwatch.db'}"
    monkeypatch.setenv("FLOORWATCH_DATABASE_URL", url)
    monkeypatch.setenv("FLOORWATCH_HOME", str(tmp_path))
    store.upgrade(url)
    return url


async def _events(client: Any, name: str, resource_id: str) -> list[Any]:
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventResourceFilter,
    )

    page = await client.read_events(
        EventFilter(event=EventNameFilter(name=[name]),
                    resource=EventResourceFilter(id=[resource_id])),
        limit=50,
    )
    return list(page.events)


async def test_injected_outage_opens_one_incident_and_event_then_heals(
    prefect_client: Any, sandbox_platform: Sandbox, fast_inventory: Path, store_env: str,
) -> None:
    """provider-alpha down: one provider_outage incident and its event within N x interval
    + 2 s; healed: resolved after two passing sweeps."""
    from flows.sweep import sweep_zone

    args = {"zone": "providers", "probe_kind": "http", "inventory_path": str(fast_inventory)}
    await sweep_zone(**args)  # a healthy baseline
    sandbox_platform.inject("down", "provider-alpha")
    injected = time.monotonic()
    opened_after = None
    try:
        for tick in range(1, 12):
            await asyncio.sleep(max(0.0, injected + tick * INTERVAL - time.monotonic()))
            await sweep_zone(**args)
            with Store(store_env) as s:
                incident = s.find_open_incident("provider-alpha", "provider_outage")
            if incident is not None:
                opened_after = time.monotonic() - injected
                break
        assert incident is not None, "no incident opened"
        assert opened_after is not None
        assert opened_after <= FAILURES * INTERVAL + 2, f"opened after {opened_after:.1f} s"
        assert incident.severity == "high"
        # More failing sweeps do not open a second incident.
        await sweep_zone(**args)
        with Store(store_env) as s:
            assert [i.target for i in s.unresolved_incidents()] == ["provider-alpha"]
    finally:
        sandbox_platform.heal("provider-alpha")

    events: list[Any] = []
    for _ in range(20):  # the server persists events asynchronously
        events = await _events(prefect_client, "floorwatch.incident.opened",
                               "floorwatch.target.provider-alpha")
        if events:
            break
        await asyncio.sleep(0.5)
    assert len(events) == 1
    assert events[0].payload["fault_kind"] == "provider_outage"
    assert events[0].payload["incident_id"] == incident.id

    for _ in range(3):
        await asyncio.sleep(INTERVAL)
        await sweep_zone(**args)
    with Store(store_env) as s:
        resolved = s.get_incident(incident.id)
        assert resolved.state == "resolved"
        assert resolved.recovered_at is not None
        kinds = [e.kind for e in s.events(incident.id)]
    assert kinds[0] == "opened"
    assert "resolved" in kinds


async def test_sweep_publishes_the_platform_status_artifact(
    prefect_client: Any, fast_inventory: Path, store_env: str,
) -> None:
    """After a sweep the `platform-status` table lists every zone."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.sweep import sweep_zone

    await sweep_zone(zone="providers", probe_kind="http", inventory_path=str(fast_inventory))
    artifacts = await prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["platform-status"]))
    )
    assert artifacts
    rows = artifacts[0].data
    if isinstance(rows, str):
        rows = json.loads(rows)
    zones = [row["zone"] for row in rows]
    assert zones == ["online-core", "dns", "providers", "payments", "hall-1"]


async def test_a_crashed_service_is_restarted_by_the_sweep_that_detects_it(
    prefect_client: Any, sandbox_platform: Sandbox, runbook_env: dict[str, Any],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast path: the sweep that opens service_down on the game engine runs
    restart_service itself, as a subflow, and the incident's event says fast-path, so no
    trigger starts a second run."""
    from flows.sweep import sweep_zone

    inventory = fast_inventory_file(sandbox_platform, tmp_path / "fast.yaml", "online-core",
                                    INTERVAL, FAILURES)
    monkeypatch.setenv("FLOORWATCH_INVENTORY", str(inventory))
    args = {"zone": "online-core", "probe_kind": "http", "inventory_path": str(inventory)}
    await sweep_zone(**args)  # a healthy baseline
    since = datetime.now(UTC)  # the session's server holds other tests' events too
    sandbox_platform.inject("service_crash", "app-primary")
    fast_path: list[dict[str, Any]] = []
    for _ in range(8):
        await asyncio.sleep(INTERVAL)
        fast_path = (await sweep_zone(**args))["fast_path"]
        if fast_path:
            break
    assert [(r["runbook"], r["target"], r["outcome"]) for r in fast_path] == [
        ("restart_service", "app-primary-game-engine", "resolved")], fast_path
    assert "app-primary" not in sandbox_platform.status()["active_faults"]
    with Store(runbook_env["store_url"]) as s:
        incident = s.get_incident(fast_path[0]["incident_id"])
    assert incident.state == "resolved"
    events: list[Any] = []
    for _ in range(20):
        events = [e for e in await _events(prefect_client, "floorwatch.incident.opened",
                                           "floorwatch.target.app-primary-game-engine")
                  if e.occurred >= since]
        if events:
            break
        await asyncio.sleep(0.5)
    assert [e.resource["floorwatch.policy"] for e in events] == ["fast-path"]
