"""Who may start a runbook, on real runbook runs against the sandbox: a person needs their
authenticator's one-time code and the runbook's least role; every refusal acts on nothing,
is audited and announced, and every allowed run audits its steps under the person's name."""

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

ENGINE = "app-primary-game-engine"
RESTART_WHAT = f"restart_service on {ENGINE}"


def _incident(store_url: str, target: str = ENGINE) -> int:
    with Store(store_url) as s:
        now = now_utc()
        return s.open_incident(target=target, zone="online-core", fault_kind="service_down",
                               severity="critical", summary=f"{target} service_down",
                               onset_at=now - timedelta(seconds=5), detected_at=now).id


def _wrong(code: str) -> str:
    """A six-digit code other than ``code``."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def _refused_request(kind: str, people: Any) -> dict[str, str]:
    """The keyword arguments of a restart_service run refused for ``kind``."""
    from runbooks.restart_service import restart_service

    if kind == "wrong_code":
        person = people.enroll("technician")
        return {"requested_by": person, "code": _wrong(people.code(person))}
    if kind == "replayed_code":
        first = people("technician")
        allowed = await restart_service(target=ENGINE, dry_run=True, **first)
        assert allowed["outcome"] == "dry_run", allowed  # the code's first use is allowed
        return first
    if kind == "unknown_person":
        return {"requested_by": "mallory", "code": "123456"}
    assert kind == "role_too_low"
    return people("operator")


@pytest.mark.parametrize(("kind", "reason"), [
    ("wrong_code", "code"),
    ("replayed_code", "already used"),
    ("unknown_person", "unknown person 'mallory'"),
    ("role_too_low", "technician"),
])
async def test_refused_request_acts_on_nothing_and_is_audited_and_announced(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, kind: str, reason: str,
) -> None:
    """A wrong code, a replayed code, an unknown person or too low a role: the run ends
    refused before diagnosing, the crash stays, only the audit log and the incident's
    refusal (timeline and outbox) record it."""
    from runbooks.restart_service import restart_service

    sandbox_platform.inject("service_crash", "app-primary")
    request = await _refused_request(kind, runbook_env["person"])
    incident_id = _incident(runbook_env["store_url"])
    with Store(runbook_env["store_url"]) as s:
        audited_before = len(s.audit_entries())

    report = await restart_service(target=ENGINE, incident_id=incident_id, **request)

    assert report["outcome"] == "refused", report
    assert report["reason"].startswith("refused: ")
    assert reason in report["reason"]
    assert report["plan"] == []
    assert report["steps"] == []
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]
    with Store(runbook_env["store_url"]) as s:
        assert s.actions_of(incident_id) == []
        incident = s.get_incident(incident_id)
        events = s.events(incident_id)
        outbox = s.notifications(incident_id=incident_id)
        new_audit = s.audit_entries()[audited_before:]
    assert incident.state == "open"
    assert "runbook_started" not in [e.kind for e in events]
    refused = [e for e in events if e.kind == "refused"]
    assert [e.message for e in refused] == [report["reason"]]
    assert [n.event for n in outbox] == [f"refused#{refused[0].id}"]
    assert [(e.action, e.subject) for e in new_audit] == [("auth.refused", RESTART_WHAT)]
    assert new_audit[0].details["claimed"] == request["requested_by"]
    assert new_audit[0].details["refusal"] == kind
    assert request["code"] not in str(new_audit[0].details)  # the code is never written down


async def test_refusal_without_an_incident_is_announced_to_the_team(
    runbook_env: dict[str, Any],
) -> None:
    """With no incident thread to tell, a refusal is posted as a platform-wide message."""
    from runbooks.restart_service import restart_service

    report = await restart_service(target=ENGINE, dry_run=True, requested_by="mallory",
                                   code="000000")

    assert report["outcome"] == "refused"
    with Store(runbook_env["store_url"]) as s:
        posted = [n for n in s.notifications() if n.incident_id is None]
        audited = [e.action for e in s.audit_entries()]
    assert posted
    assert all(n.event.startswith("summary#refused-") for n in posted)
    assert "unknown person 'mallory'" in str(posted[0].payload)
    assert audited == ["auth.refused"]


async def test_operator_may_diagnose_and_the_diagnosis_is_audited_under_their_name(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """An operator with a fresh code runs diagnose_target; the check and the diagnosis are
    audited with the operator as actor, and nothing on the platform changes."""
    from runbooks.diagnose_target import diagnose_target

    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(runbook_env["store_url"])
    request = runbook_env["person"]("operator")

    report = await diagnose_target(target=ENGINE, incident_id=incident_id, **request)

    assert report["outcome"] == "diagnosed", report
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]
    with Store(runbook_env["store_url"]) as s:
        entries = [(e.actor, e.action) for e in s.audit_entries()
                   if e.action.startswith(("auth.", "runbook."))]
        started = next(e for e in s.events(incident_id) if e.kind == "runbook_started")
    person = request["requested_by"]
    assert entries == [(person, "auth.allowed"), (person, "runbook.diagnose")]
    assert started.actor == person


async def test_technician_may_plan_a_restart_and_each_step_is_audited(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """A technician's dry run of restart_service is allowed: the diagnosis and the planned
    restart are audited under their name, and the crash is left in place."""
    from runbooks.restart_service import restart_service

    sandbox_platform.inject("service_crash", "app-primary")
    request = runbook_env["person"]("technician")

    report = await restart_service(target=ENGINE, dry_run=True, **request)

    assert report["outcome"] == "dry_run", report
    assert [p["step"] for p in report["plan"]] == ["restart-service"]
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]
    with Store(runbook_env["store_url"]) as s:
        entries = [e for e in s.audit_entries() if e.action.startswith(("auth.", "runbook."))]
    person = request["requested_by"]
    assert [(e.actor, e.action) for e in entries] == [
        (person, "auth.allowed"), (person, "runbook.diagnose"),
        (person, "runbook.restart-service")]
    assert entries[-1].details["outcome"] == "planned"
    assert entries[-1].details["parameters"]["service"] == "game-engine"


async def test_administrator_may_plan_a_dns_failover(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """An administrator's dry run of fail_over_dns is allowed and audited; a technician's
    is refused (the runbook needs an administrator)."""
    from runbooks.fail_over_dns import fail_over_dns

    people = runbook_env["person"]
    technician = await fail_over_dns(target="gateway-dns", dry_run=True,
                                     **people("technician"))
    assert technician["outcome"] == "refused"
    assert "administrator" in technician["reason"]

    request = people("administrator")
    report = await fail_over_dns(target="gateway-dns", dry_run=True, **request)

    assert report["outcome"] == "dry_run", report
    assert [p["step"] for p in report["plan"]] == ["replace-record"]
    with Store(runbook_env["store_url"]) as s:
        mine = [e.action for e in s.audit_entries() if e.actor == request["requested_by"]]
    assert mine == ["auth.allowed", "runbook.diagnose", "runbook.replace-record"]


@pytest.mark.parametrize(("role", "wrong_code", "reason"), [
    ("technician", True, "code"),
    ("operator", False, "technician"),
])
async def test_approval_by_an_unproven_approver_escalates_and_acts_on_nothing(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, prefect_client: Any,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, role: str, wrong_code: bool,
    reason: str,
) -> None:
    """An approval with a wrong code, or from someone below the runbook's role, does not
    count: the run escalates with "approval refused", the crash stays, the refusal is
    audited."""
    from prefect.flow_runs import aresume_flow_run

    from runbooks.restart_service import restart_service

    with_policy(runbook_env, "approval", monkeypatch, tmp_path)
    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(runbook_env["store_url"])
    run = asyncio.create_task(restart_service(
        target=ENGINE, incident_id=incident_id, requested_by="automation",
        approval_timeout_s=60,
    ))
    paused = await paused_run(prefect_client)
    people = runbook_env["person"]
    approver = people.enroll(role)
    code = people.code(approver)
    await aresume_flow_run(paused.id, run_input={
        "approve": True, "approver": approver, "code": _wrong(code) if wrong_code else code,
        "reason": "looks fine",
    })
    report = await asyncio.wait_for(run, 90)

    assert report["outcome"] == "escalated", report
    assert report["reason"].startswith("approval refused: ")
    assert reason in report["reason"]
    assert report["steps"] == []
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]
    with Store(runbook_env["store_url"]) as s:
        assert s.get_incident(incident_id).state == "escalated"
        assert [a["step"] for a in s.actions_of(incident_id)] == ["diagnose", "escalate"]
        assert "approved" not in [e.kind for e in s.events(incident_id)]
        refusals = [e for e in s.audit_entries() if e.action == "auth.refused"]
    assert [e.subject for e in refusals] == [f"approve {RESTART_WHAT}"]
    assert refusals[0].actor == approver
