"""diagnose_target on the real sandbox: a crashed service over sshd, a hung terminal on its
serial console, a DNS record changed behind our back, and evidence that cannot be collected."""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from floorwatch.results import now_utc
from floorwatch.store import Store
from sandbox.control import Sandbox


def _incident(store_url: str, target: str, zone: str, fault: str) -> int:
    with Store(store_url) as s:
        now = now_utc()
        return s.open_incident(target=target, zone=zone, fault_kind=fault,
                               severity="critical", summary=f"{target} {fault}",
                               onset_at=now - timedelta(seconds=10), detected_at=now).id


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_crashed_service_shows_failed_engine_and_its_journal(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, prefect_client: Any,
) -> None:
    """service_crash on app-primary: the evidence shows game-engine failed, its journal
    lines, top processes and disk usage; the run acts on nothing and files a report."""
    from runbooks.diagnose_target import diagnose_target

    sandbox_platform.inject("service_crash", "app-primary")
    incident_id = _incident(runbook_env["store_url"], "app-primary", "online-core",
                            "service_down")
    report = await diagnose_target(target="app-primary", incident_id=incident_id,
                                   requested_by="automation")

    assert report["outcome"] == "diagnosed", report
    evidence = report["evidence"]
    assert evidence["server"] == "app-primary"
    assert evidence["services"]["game-engine"]["state"] == "failed"
    assert evidence["services"]["session-worker"]["state"] == "active"
    journal = evidence["journal"]["game-engine"]
    assert 0 < len(journal) <= 20
    assert any("game-engine" in line and "exited" in line for line in journal), journal
    assert evidence["processes"][0].split()[:2] == ["PID", "%CPU"]
    assert evidence["disk"][0].startswith("Filesystem")
    assert "game-engine failed" in report["diagnosis"]
    # diagnosis only: the engine is still down, the incident still open
    assert sandbox_platform.status()["active_faults"].get("app-primary") == ["service_crash"]
    with Store(runbook_env["store_url"]) as s:
        assert s.get_incident(incident_id).state == "open"
        assert [a["step"] for a in s.actions_of(incident_id)] == ["diagnose"]
        kinds = [e.kind for e in s.events(incident_id)]
    assert {"diagnosis", "report"} <= set(kinds)
    keys = {a.key for a in await prefect_client.read_latest_artifacts()}
    assert {"runbook-app-primary", "diagnosis-app-primary"} <= keys


async def test_hung_terminal_shows_console_status_and_version(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """terminal_hung on hall-1-t01: the console's STATUS and VERSION are in the evidence and
    the summary names the frozen heartbeat."""
    from runbooks.diagnose_target import diagnose_target

    sandbox_platform.inject("terminal_hung", "hall-1-t01")
    report = await diagnose_target(target="hall-1-t01", **runbook_env["person"]("operator"))

    assert report["outcome"] == "diagnosed", report
    status = report["evidence"]["console"]["status"]
    assert status["state"] in ("playing", "idle")
    assert isinstance(status["heartbeat"], int)
    assert report["evidence"]["console"]["version"]["model"] == "FW-T100"
    assert "heartbeat stuck" in report["diagnosis"]
    assert f"heartbeat {status['heartbeat']}" in report["diagnosis"]


async def test_wrong_dns_record_shows_answers_against_expected_and_backup(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """dns_wrong on gateway-dns: the authoritative answer is shown beside the expected and
    backup sets, matching neither."""
    from runbooks.diagnose_target import diagnose_target

    sandbox_platform.inject("dns_wrong", "gateway-dns")
    report = await diagnose_target(target="gateway-dns", **runbook_env["person"]("operator"))

    assert report["outcome"] == "diagnosed", report
    answers = report["evidence"]["dns"]
    assert answers["expected"] == ["127.0.10.1"]
    assert answers["backup"] == ["127.0.10.2"]
    assert answers["answer"]
    assert set(answers["answer"]) != {"127.0.10.1"}
    assert answers["matches"] == "neither"
    assert answers["rcode"] == "NOERROR"
    assert f"answers {', '.join(answers['answer'])} (neither" in report["diagnosis"]


async def test_unreachable_ssh_leaves_evidence_unavailable_and_the_run_completes(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """app-primary's sshd moved to a port nobody listens on: every SSH piece is recorded as
    unavailable with the refusal, the failing probe is still there, and the run completes."""
    from runbooks.diagnose_target import diagnose_target

    port = _closed_port()
    text = runbook_env["inventory"].read_text()
    moved, count = re.subn(r"(- name: app-primary\n(?:.*\n)*?\s+port: )\d+", rf"\g<1>{port}",
                           text, count=1)
    assert count == 1
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(moved)
    monkeypatch.setenv("FLOORWATCH_INVENTORY", str(inventory))

    report = await diagnose_target(target="app-primary", **runbook_env["person"]("operator"))

    assert report["outcome"] == "diagnosed", report
    evidence = report["evidence"]
    for piece in ("services", "journal", "processes", "disk"):
        assert evidence[piece].startswith("unavailable: "), evidence[piece]
        assert f"127.0.0.1:{port}" in evidence[piece]
    assert [p["probe_id"] for p in evidence["probes_now"]] == ["ssh_metrics"]
    assert evidence["probes_now"][0]["ok"] is False
    assert "unavailable: services, journal, processes, disk" in report["diagnosis"]


async def test_failing_disk_command_is_the_only_unavailable_piece(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, sandbox_credentials: dict[str, Any],
) -> None:
    """One command failing on a reachable server spoils only its own piece: the disk is
    unavailable with the exit status, the service states and journal are still collected."""
    from blocks import SshHost
    from floorwatch.inventory import load_inventory
    from runbooks.diagnose import server_evidence

    good = sandbox_credentials["sandbox-app-primary"]
    odd = SshHost(host=good.host, port=good.port, username=good.username,
                  private_key=good.private_key, host_key=good.host_key,
                  service_command=good.service_command, disk_command="df-does-not-exist -P")
    server = load_inventory(runbook_env["inventory"]).target("app-primary")

    evidence = await server_evidence(odd, server, ["game-engine"], timeout=5)

    assert evidence["disk"].startswith("unavailable: `df-does-not-exist -P` exited 127")
    assert evidence["services"]["game-engine"]["state"] == "active"
    assert evidence["journal"]["game-engine"]
    assert evidence["processes"][0].split()[0] == "PID"


async def test_dry_run_on_an_endpoint_looks_at_its_server_and_changes_nothing(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """A dry run on the crashed engine's endpoint plans nothing, collects the evidence of
    the service on its parent server, and leaves the crash in place."""
    from runbooks.diagnose_target import diagnose_target

    sandbox_platform.inject("service_crash", "app-primary")
    before = sandbox_platform.status()["active_faults"]
    report = await diagnose_target(target="app-primary-game-engine", dry_run=True,
                                   **runbook_env["person"]("operator"))

    assert report["outcome"] == "dry_run"
    assert report["plan"] == []
    evidence = report["evidence"]
    assert evidence["server"] == "app-primary"
    assert list(evidence["services"]) == ["game-engine"]
    assert evidence["services"]["game-engine"]["state"] == "failed"
    assert list(evidence["journal"]) == ["game-engine"]
    assert sandbox_platform.status()["active_faults"] == before


def test_journal_command_follows_the_service_manager() -> None:
    """systemctl gets journalctl beside it (keeping sudo); any other manager its own verb."""
    from runbooks.diagnose import journal_command

    assert journal_command("systemctl", "nginx") == "journalctl -u nginx -n 20 --no-pager"
    assert (journal_command("sudo /usr/bin/systemctl", "game-engine")
            == "sudo /usr/bin/journalctl -u game-engine -n 20 --no-pager")
    assert journal_command("/srv/app/bin/svc", "game-engine") == (
        "/srv/app/bin/svc journal game-engine -n 20")


def test_dns_answers_compare_with_expected_and_backup_sets() -> None:
    """Answers match the expected set, the backup set, neither, or there are none."""
    from runbooks.diagnose import compare_answers

    assert compare_answers("A", ["127.0.10.1"], ["127.0.10.1"], ["127.0.10.2"]) == "expected"
    assert compare_answers("A", ["127.0.10.2"], ["127.0.10.1"], ["127.0.10.2"]) == "backup"
    assert compare_answers("A", ["10.0.0.9"], ["127.0.10.1"], ["127.0.10.2"]) == "neither"
    assert compare_answers("A", [], ["127.0.10.1"], []) == "nothing"
    assert compare_answers("CNAME", ["Edge.Example."], ["edge.example"], []) == "expected"
