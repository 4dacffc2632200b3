"""restart_service end to end on the sandbox's real sshd: crash, incident, runbook, verified
recovery, report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from floorwatch.results import now_utc
from floorwatch.store import Store
from sandbox.control import Sandbox


def _incident(store_url: str, target: str, fault: str) -> int:
    with Store(store_url) as s:
        now = now_utc()
        return s.open_incident(target=target, zone="online-core", fault_kind=fault,
                               severity="critical", summary=f"{target} {fault}",
                               onset_at=now - timedelta(seconds=10), detected_at=now).id


async def test_crashed_service_is_restarted_and_recovery_verified(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, prefect_client: Any,
) -> None:
    """service_crash on app-primary: the runbook restarts game-engine over SSH and resolves
    the incident only once the engine's HTTP probe passes again."""
    from runbooks.restart_service import restart_service

    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(runbook_env["store_url"], "app-primary-game-engine", "service_down")
    report = await restart_service(target="app-primary-game-engine", incident_id=incident_id,
                                   requested_by="automation")
    assert report["outcome"] == "resolved", report
    assert "app-primary-game-engine" not in sandbox_platform.status()["active_faults"]
    with Store(runbook_env["store_url"]) as s:
        incident = s.get_incident(incident_id)
        steps = [a["step"] for a in s.actions_of(incident_id)]
        kinds = [e.kind for e in s.events(incident_id)]
    assert incident.state == "resolved"
    assert incident.recovered_at is not None
    assert steps == ["diagnose", "restart-service"]
    assert kinds[:2] == ["opened", "runbook_started"]
    assert {"diagnosis", "remediating", "step", "resolved", "report"} <= set(kinds)
    artifact = await prefect_client.read_latest_artifacts()
    assert any(a.key == "runbook-app-primary-game-engine" for a in artifact)


async def test_dry_run_plans_the_restart_and_changes_nothing(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """A dry run lists the SSH command it would run and leaves the crashed service down."""
    from runbooks.restart_service import restart_service

    sandbox_platform.inject("service_crash", "app-primary")
    report = await restart_service(target="app-primary-game-engine", dry_run=True,
                                   **runbook_env["person"]("technician"))
    assert report["outcome"] == "dry_run"
    assert report["plan"][0]["parameters"]["service"] == "game-engine"
    assert "restart game-engine" in report["plan"][0]["parameters"]["command"]
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]


async def test_unknown_target_fails_with_a_clear_message(runbook_env: dict[str, Any]) -> None:
    """A target name that is not in the inventory ends the run with that message."""
    import pytest

    from runbooks.restart_service import restart_service

    with pytest.raises(LookupError, match="unknown target 'app-tertiary'"):
        await restart_service(target="app-tertiary", **runbook_env["person"]("technician"))
