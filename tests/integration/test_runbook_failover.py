"""fail_over_dns and fail_over_server end to end on the sandbox's real named and sshd: fault,
incident, runbook, verified recovery or rollback, report."""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from blocks import DnsZone
from floorwatch.catalogue import RunbookName
from floorwatch.inventory import Inventory
from floorwatch.results import now_utc
from floorwatch.store import Store
from sandbox.control import Sandbox
from sandbox.supervisor import SvcClient
from sandbox.topology import DNS_BACKUP_ADDRESSES, DNS_GATEWAY_NAME, DNS_PRIMARY_ADDRESSES
from tasks.dns import DnsUpdater

PRIMARY = list(DNS_PRIMARY_ADDRESSES)
BACKUP = list(DNS_BACKUP_ADDRESSES)
SERVICES = ("game-engine", "session-worker")
SERVERS = ("app-primary", "app-standby")


def _incident(store_url: str, target: str, zone: str, fault: str = "service_down") -> int:
    with Store(store_url) as s:
        now = now_utc()
        return s.open_incident(target=target, zone=zone, fault_kind=fault,
                               severity="critical", summary=f"{target} {fault}",
                               onset_at=now - timedelta(seconds=10), detected_at=now).id


def _gateway(credentials: dict[str, Any]) -> DnsUpdater:
    zone = credentials["sandbox-dns"]
    assert isinstance(zone, DnsZone)
    return DnsUpdater(zone, name="gateway-dns")


def _services_active(sandbox: Sandbox, server: str) -> dict[str, bool]:
    """Each service's state on ``server``, as its supervisor (the server's systemd) has it."""
    client = SvcClient(Path(sandbox.describe()["components"]["servers"][server]["server_dir"]))
    return {name: client.status(name).active for name in SERVICES}


def _engine_status(sandbox: Sandbox, server: str) -> int:
    """HTTP status of ``server``'s game-engine /health."""
    port = sandbox.describe()["components"]["servers"][server]["services"]["game-engine"]["port"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def platform(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, sandbox_credentials: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """The runbook environment; afterwards the sandbox is healed, the gateway record is on
    its primary set and every service runs on both servers, even when the test failed."""
    servers = sandbox_platform.describe()["components"]["servers"]
    with contextlib.ExitStack() as restore:  # every restore runs even if one fails
        for server in SERVERS:
            client = SvcClient(Path(servers[server]["server_dir"]))
            for name in SERVICES:
                restore.callback(client.start, name)
        restore.callback(_gateway(sandbox_credentials).replace, DNS_GATEWAY_NAME, "A", PRIMARY)
        restore.callback(sandbox_platform.heal)  # first: continues a hung engine
        yield runbook_env


# -- fail_over_dns ------------------------------------------------------------------------


async def test_wrong_record_is_failed_over_to_backup_and_verified(
    platform: dict[str, Any], sandbox_platform: Sandbox, sandbox_credentials: dict[str, Any],
    prefect_client: Any,
) -> None:
    """dns_wrong on gateway-dns: automation switches the record to its backup set, the
    authoritative server answers it and the incident is resolved with a report."""
    from runbooks.fail_over_dns import fail_over_dns

    sandbox_platform.inject("dns_wrong", "gateway-dns")
    wrong = _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A")
    incident_id = _incident(platform["store_url"], "gateway-dns", "dns")
    report = await fail_over_dns(target="gateway-dns", incident_id=incident_id,
                                 requested_by="automation")
    assert report["outcome"] == "resolved", report
    assert _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A") == BACKUP
    assert report["plan"][0]["parameters"]["from"] == wrong
    assert report["plan"][0]["parameters"]["to"] == BACKUP
    with Store(platform["store_url"]) as s:
        incident = s.get_incident(incident_id)
        actions = {a["step"]: a for a in s.actions_of(incident_id)}
        kinds = [e.kind for e in s.events(incident_id)]
    assert incident.state == "resolved"
    assert list(actions) == ["diagnose", "replace-record"]
    assert actions["replace-record"]["outcome"] == "succeeded"
    assert "authoritative answer checked" in actions["replace-record"]["output"]
    assert {"diagnosis", "remediating", "step", "resolved", "report"} <= set(kinds)
    artifacts = await prefect_client.read_latest_artifacts()
    assert any(a.key == "runbook-gateway-dns" for a in artifacts)


async def test_fail_back_returns_the_record_to_its_primary_set(
    platform: dict[str, Any], sandbox_credentials: dict[str, Any],
) -> None:
    """A person moves a failed-over record back with to="primary"."""
    from runbooks.fail_over_dns import fail_over_dns

    _gateway(sandbox_credentials).replace(DNS_GATEWAY_NAME, "A", BACKUP)
    report = await fail_over_dns(target="gateway-dns", to="primary", reason="primary repaired",
                                 **platform["person"]("administrator"))
    assert report["outcome"] == "resolved", report
    assert report["plan"][0]["rollback"] == f"restore {DNS_GATEWAY_NAME} A to 127.0.10.2"
    assert _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A") == PRIMARY


async def test_dns_dry_run_plans_the_switch_and_changes_nothing(
    platform: dict[str, Any], sandbox_platform: Sandbox, sandbox_credentials: dict[str, Any],
) -> None:
    """A dry run lists the DNS change it would make and leaves the wrong answer in place."""
    from runbooks.fail_over_dns import fail_over_dns

    sandbox_platform.inject("dns_wrong", "gateway-dns")
    wrong = _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A")
    report = await fail_over_dns(target="gateway-dns", dry_run=True,
                                 **platform["person"]("administrator"))
    assert report["outcome"] == "dry_run"
    (step,) = report["plan"]
    assert step["parameters"]["record"] == DNS_GATEWAY_NAME
    assert (step["parameters"]["from"], step["parameters"]["to"]) == (wrong, BACKUP)
    assert "secret" not in str(step["parameters"]).lower()
    assert _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A") == wrong


# -- fail_over_server -----------------------------------------------------------------------


async def test_crashed_primary_fails_over_to_the_standby_and_is_fenced(
    platform: dict[str, Any], sandbox_platform: Sandbox, sandbox_credentials: dict[str, Any],
) -> None:
    """service_crash on app-primary: the standby runs the services, gateway-dns answers the
    backup set, the primary's services are stopped and the incident is resolved on the
    standby's and the record's probes."""
    from runbooks.fail_over_server import fail_over_server

    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(platform["store_url"], "app-primary", "online-core")
    report = await fail_over_server(target="app-primary", incident_id=incident_id,
                                    requested_by="automation")
    assert report["outcome"] == "resolved", report
    assert _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A") == BACKUP
    assert _engine_status(sandbox_platform, "app-standby") == 200
    assert _services_active(sandbox_platform, "app-standby") == dict.fromkeys(SERVICES, True)
    assert _services_active(sandbox_platform, "app-primary") == dict.fromkeys(SERVICES, False)
    with Store(platform["store_url"]) as s:
        incident = s.get_incident(incident_id)
        steps = [(a["step"], a["outcome"]) for a in s.actions_of(incident_id)]
        events = s.events(incident_id)
    assert incident.state == "resolved"
    assert steps == [("diagnose", "succeeded"), ("start-standby", "succeeded"),
                     ("move-traffic", "succeeded"), ("fence-primary", "succeeded")]
    resolved = next(e for e in events if e.kind == "report")
    assert resolved.data is not None
    assert resolved.data["outcome"] == "resolved"
    assert [e.kind for e in events].count("step") == 3


async def test_fenced_primary_is_held_until_a_person_releases_it(
    platform: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """After a failover the fenced primary is held: restart_service on a service it runs is
    refused (escalated, nothing started) even for a technician; an operator may not release
    the hold, an administrator with their code may, and the restart then goes ahead."""
    from floorwatch.errors import PolicyError
    from runbooks import holds
    from runbooks.fail_over_server import fail_over_server
    from runbooks.restart_service import restart_service

    people = platform["person"]
    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(platform["store_url"], "app-primary", "online-core")
    report = await fail_over_server(target="app-primary", incident_id=incident_id,
                                    requested_by="automation")
    assert report["outcome"] == "resolved", report
    assert "app-primary held" in report["steps"][-1]["output"]
    with Store(platform["store_url"]) as s:
        (hold,) = s.active_holds().values()
        kinds = [e.kind for e in s.events(incident_id)]
    assert (hold.target, hold.incident_id, hold.set_by) == ("app-primary", incident_id,
                                                            "automation")
    assert "held" in kinds
    assert "app-primary" in holds.listing()

    refused = await restart_service(target="app-primary-game-engine", **people("technician"))
    assert refused["outcome"] == "escalated", refused
    assert "app-primary is held" in refused["reason"]
    assert "floorwatch hold release app-primary" in refused["reason"]
    assert refused["steps"] == []
    assert _services_active(sandbox_platform, "app-primary") == dict.fromkeys(SERVICES, False)

    operator = people.enroll("operator")
    with pytest.raises(PolicyError, match="refused"):
        holds.release("app-primary", operator, people.code(operator))
    admin = people.enroll("administrator")
    assert "released by" in holds.release("app-primary", admin, people.code(admin))
    with Store(platform["store_url"]) as s:
        assert s.active_holds() == {}
        assert "released" in [e.kind for e in s.events(incident_id)]
        assert [e.action for e in s.audit_entries() if e.action.startswith("hold.")] == [
            "hold.release"]

    restarted = await restart_service(target="app-primary-game-engine", **people("technician"))
    assert restarted["outcome"] == "resolved", restarted
    assert _services_active(sandbox_platform, "app-primary")["game-engine"]


async def test_server_failover_dry_run_changes_nothing(
    platform: dict[str, Any], sandbox_platform: Sandbox, sandbox_credentials: dict[str, Any],
) -> None:
    """A dry run lists the SSH commands and the DNS change and acts on nothing."""
    from runbooks.fail_over_server import fail_over_server

    sandbox_platform.inject("service_crash", "app-primary")
    report = await fail_over_server(target="app-primary", dry_run=True,
                                    **platform["person"]("administrator"))
    assert report["outcome"] == "dry_run"
    plan = {p["step"]: p["parameters"] for p in report["plan"]}
    assert list(plan) == ["start-standby", "move-traffic", "fence-primary"]
    assert plan["start-standby"]["command"].endswith("start game-engine session-worker")
    assert plan["move-traffic"]["to"] == BACKUP
    assert plan["fence-primary"]["command"].endswith("stop game-engine session-worker")
    assert _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A") == PRIMARY
    assert _services_active(sandbox_platform, "app-primary") == {
        "game-engine": False, "session-worker": True}
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]


async def test_failed_verification_rolls_the_failover_back_and_escalates(
    platform: dict[str, Any], sandbox_platform: Sandbox, sandbox_credentials: dict[str, Any],
) -> None:
    """A hung game-engine on the standby (its service manager says active, its port never
    answers) fails verification: the gateway record is restored to its previous answer, the
    primary's services run again and the incident is escalated."""
    from runbooks.fail_over_server import fail_over_server

    sandbox_platform.inject("service_crash", "app-primary")
    sandbox_platform.inject("service_hang", "app-standby")
    incident_id = _incident(platform["store_url"], "app-primary", "online-core")
    report = await fail_over_server(target="app-primary", incident_id=incident_id,
                                    requested_by="automation", verify_deadline_s=2.5)
    assert report["outcome"] == "escalated", report
    assert "app-standby-game-engine" in report["reason"]
    assert _gateway(sandbox_credentials).query(DNS_GATEWAY_NAME, "A") == PRIMARY
    # fencing undone: what the primary ran before (session-worker) runs again
    assert _services_active(sandbox_platform, "app-primary")["session-worker"]
    with Store(platform["store_url"]) as s:
        incident = s.get_incident(incident_id)
        steps = {a["step"]: a["outcome"] for a in s.actions_of(incident_id)}
        kinds = [e.kind for e in s.events(incident_id)]
    assert incident.state == "escalated"
    assert steps["move-traffic:rollback"] == "rolled_back"
    assert steps["fence-primary:rollback"] == "rolled_back"
    assert steps["start-standby:rollback"] == "rolled_back"
    assert steps["escalate"] == "succeeded"
    assert "rolled_back" in kinds
    assert "resolved" not in kinds
    with Store(platform["store_url"]) as s:
        assert s.active_holds() == {}  # the hold went with the fencing it belonged to


def test_unreachable_primary_is_not_fenced_but_recorded(
    platform: dict[str, Any], sandbox_inventory: Inventory, sandbox_credentials: dict[str, Any],
) -> None:
    """Fencing a primary whose sshd refuses connections returns "fencing skipped", records a
    fence_skipped timeline event and still holds the primary (its traffic is gone); the undo
    releases the hold and has no service to start."""
    from runbooks.fail_over_server import fence_step
    from runbooks.frame import RunbookParams, RunContext

    primary = sandbox_inventory.target("app-primary")
    with socket.socket() as s:  # a port nothing listens on: a real refusal
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    gone = primary.model_copy(
        update={"connection": primary.connection.model_copy(update={"port": closed})})
    incident_id = _incident(platform["store_url"], "app-primary", "online-core")
    with Store(platform["store_url"]) as store:
        ctx = RunContext(
            runbook=RunbookName.FAIL_OVER_SERVER, params=RunbookParams(target="app-primary"),
            inventory=sandbox_inventory, target=gone, zone="online-core",
            incident=store.get_incident(incident_id), store=store, flow_run_id=None,
            automatic=False,
        )
        step = fence_step(ctx, sandbox_credentials["sandbox-app-primary"], gone,
                          list(SERVICES), DNS_GATEWAY_NAME)
        output = step.act()
        assert step.rollback is not None
        held = list(store.active_holds())
        undo = step.rollback()
        events = [(e.kind, e.message) for e in store.events(incident_id)]
        assert store.active_holds() == {}
    assert output.startswith("fencing skipped: app-primary: SSH connection to 127.0.0.1:")
    assert "fence it by hand" in output
    assert "app-primary held" in output
    assert held == ["app-primary"]
    assert undo == ("released the hold on app-primary; nothing to start on app-primary: none "
                    "of its services was stopped")
    skipped = [message for kind, message in events if kind == "fence_skipped"]
    assert len(skipped) == 1
    assert output.startswith(skipped[0])
    assert "held" in [kind for kind, _ in events]
