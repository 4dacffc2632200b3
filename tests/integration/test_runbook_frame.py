"""The runbook frame's guard rails, on real runbook runs against the sandbox and a real
Prefect server: one runbook per target, the remediation budget, approval and policy."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from floorwatch.results import now_utc
from floorwatch.store import Store
from sandbox.control import Sandbox
from tests.fixtures.runbooks import paused_run, with_policy

TARGET = "app-primary-game-engine"


def _incident(store_url: str, fault: str = "service_down", target: str = TARGET) -> int:
    with Store(store_url) as s:
        now = now_utc()
        return s.open_incident(target=target, zone="online-core", fault_kind=fault,
                               severity="critical", summary=f"{target} {fault}",
                               onset_at=now - timedelta(seconds=5), detected_at=now).id


@pytest.mark.parametrize(("first_target", "busy_reason"), [
    (TARGET, f"{TARGET} is busy"),
    ("app-primary", "or repairs app-primary"),
], ids=["same-target", "its-server"])
async def test_two_runbooks_on_one_target_only_one_acts(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, prefect_client: Any,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, first_target: str, busy_reason: str,
) -> None:
    """While one runbook holds the game engine, or the server it runs on (here: waiting for
    its approval, so the overlap is certain however fast or slow the machine), a restart of
    the engine cannot take its locks within its timeout, ends as target_busy and acts on
    nothing; the first, once approved, restarts the service. Exactly one acts."""
    from prefect.flow_runs import aresume_flow_run

    from runbooks.restart_service import restart_service

    with_policy(runbook_env, "approval", monkeypatch, tmp_path)
    people = runbook_env["person"]
    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(runbook_env["store_url"], target=first_target)
    first = asyncio.create_task(restart_service(
        target=first_target, incident_id=incident_id, requested_by="automation",
        approval_timeout_s=60,
    ))
    paused = await paused_run(prefect_client)

    second = await restart_service(target=TARGET, lock_timeout_s=1, **people("technician"))
    assert second["outcome"] == "target_busy", second
    assert busy_reason in second["reason"]
    assert second["steps"] == []
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]

    carol = people.enroll("technician", name="carol")
    await aresume_flow_run(paused.id, run_input={
        "approve": True, "approver": carol, "code": people.code(carol), "reason": "go",
    })
    report = await asyncio.wait_for(first, 90)
    assert report["outcome"] == "resolved", report
    assert [step["step"] for step in report["steps"]] == ["restart-service"], report["steps"]
    assert "app-primary" not in sandbox_platform.status()["active_faults"]


def test_repairs_lock_what_they_touch_and_looking_locks_only_its_target() -> None:
    """A restart of the game engine takes the engine's target lock and the repair locks of
    the engine and its server; a diagnosis of the server takes only its own target lock, so
    it neither waits for nor holds up that repair."""
    from floorwatch.catalogue import RunbookName
    from floorwatch.inventory import load_inventory
    from runbooks.frame import lock_limits

    inventory = load_inventory(Path(__file__).resolve().parents[2] / "inventory.example.yaml")
    engine, server = inventory.target(TARGET), inventory.target("app-primary")
    assert lock_limits(RunbookName.RESTART_SERVICE, inventory, engine) == [
        "floorwatch-target-app-primary-game-engine", "floorwatch-repair-app-primary-game-engine",
        "floorwatch-repair-app-primary"]
    assert lock_limits(RunbookName.DIAGNOSE_TARGET, inventory, server) == [
        "floorwatch-target-app-primary"]
    restart_server = lock_limits(RunbookName.RESTART_SERVICE, inventory, server)
    assert set(restart_server) & set(lock_limits(RunbookName.RESTART_SERVICE, inventory, engine))


async def test_spent_budget_escalates_instead_of_acting(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """With 3 automatic actions on the target in the last hour, automation escalates."""
    from runbooks.restart_service import restart_service

    sandbox_platform.inject("service_crash", "app-primary")
    with Store(runbook_env["store_url"]) as s:
        for minutes in (10, 20, 30):
            s.record_action(runbook="restart_service", step="restart-service",
                            outcome="succeeded", target=TARGET, automatic=True,
                            started_at=now_utc() - timedelta(minutes=minutes))
    incident_id = _incident(runbook_env["store_url"])
    report = await restart_service(target=TARGET, incident_id=incident_id,
                                   requested_by="automation")
    assert report["outcome"] == "escalated"
    assert "budget spent" in report["reason"]
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]
    with Store(runbook_env["store_url"]) as s:
        assert s.get_incident(incident_id).state == "escalated"
        assert [a["step"] for a in s.actions_of(incident_id)] == ["escalate"]


async def test_manual_policy_is_not_run_by_automation(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A manual policy: a triggered run diagnoses and escalates; it does not restart."""
    from runbooks.restart_service import restart_service

    with_policy(runbook_env, "manual", monkeypatch, tmp_path)
    sandbox_platform.inject("service_crash", "app-primary")
    report = await restart_service(target=TARGET, incident_id=_incident(runbook_env["store_url"]),
                                   requested_by="automation")
    assert report["outcome"] == "escalated"
    assert "policy is manual" in report["reason"]
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]


@pytest.mark.parametrize(("approve", "outcome"), [(True, "resolved"), (False, "escalated")])
async def test_approval_through_the_prefect_api(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, prefect_client: Any,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, approve: bool, outcome: str,
) -> None:
    """Policy approval pauses the run with a form; approving through the API continues it,
    rejecting escalates with the reason."""
    from prefect.flow_runs import aresume_flow_run

    from runbooks.restart_service import restart_service

    with_policy(runbook_env, "approval", monkeypatch, tmp_path)
    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(runbook_env["store_url"])
    run = asyncio.create_task(restart_service(
        target=TARGET, incident_id=incident_id, requested_by="automation",
        approval_timeout_s=60,
    ))
    paused = await paused_run(prefect_client)
    carol = runbook_env["person"].enroll("technician", name="carol")
    await aresume_flow_run(paused.id, run_input={
        "approve": approve, "approver": carol, "code": runbook_env["person"].code(carol),
        "reason": "checked the diagnosis",
    })
    report = await asyncio.wait_for(run, 90)
    assert report["outcome"] == outcome, report
    with Store(runbook_env["store_url"]) as s:
        kinds = [e.kind for e in s.events(incident_id)]
        state = s.get_incident(incident_id).state
    assert "approval_requested" in kinds
    if approve:
        assert "approved" in kinds
        assert state == "resolved"
    else:
        assert "rejected by carol" in report["reason"]
        assert state == "escalated"
        assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]


async def test_approval_timeout_escalates(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Nobody answers within the approval timeout: the incident is escalated, nothing done."""
    from runbooks.restart_service import restart_service

    with_policy(runbook_env, "approval", monkeypatch, tmp_path)
    sandbox_platform.inject("service_crash", "app-primary")
    report = await restart_service(target=TARGET, incident_id=_incident(runbook_env["store_url"]),
                                   requested_by="automation", approval_timeout_s=2)
    assert report["outcome"] == "escalated"
    assert "no approval within 2 s" in report["reason"]
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]
