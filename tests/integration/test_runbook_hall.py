"""restart_terminal and redeploy_config end to end on the sandbox hall's pseudo-terminals:
fault, incident, runbook, verified recovery or escalation, report."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from floorwatch.inventory import Inventory, load_inventory
from floorwatch.protocols import console
from floorwatch.results import now_utc
from floorwatch.store import Store
from runbooks.redeploy_config import config_problem
from runbooks.restart_terminal import boot_progress, expected_config_hash
from sandbox.control import Sandbox
from sandbox.devices import STALE_CONFIG
from sandbox.topology import EXPECTED_CONFIG, TERMINAL_CONFIG_FILE

pytestmark = pytest.mark.integration

EXPECTED_HASH = console.config_hash(EXPECTED_CONFIG)
HALL_CONTACTS = ["hall-technicians", "ops-oncall"]


def _incident(store_url: str, target: str, fault: str) -> int:
    with Store(store_url) as s:
        now = now_utc()
        return s.open_incident(target=target, zone="hall-1", fault_kind=fault,
                               severity="high", summary=f"{target} {fault}",
                               onset_at=now - timedelta(seconds=10), detected_at=now).id


def _record(store_url: str, incident_id: int) -> tuple[str, list[tuple[str, str]], list[str]]:
    """(incident state, [(step, outcome)], timeline kinds) of an incident."""
    with Store(store_url) as s:
        state = s.get_incident(incident_id).state
        actions = [(a["step"], a["outcome"]) for a in s.actions_of(incident_id)]
        kinds = [e.kind for e in s.events(incident_id)]
    return state, actions, kinds


async def _status(inventory: Inventory, terminal: str) -> console.TerminalStatus:
    """One STATUS straight from the terminal's console, as a technician's laptop would ask."""
    from tasks.serial import Console

    return await Console.for_target(inventory.target(terminal)).status(timeout=1.0)


async def _heartbeat_advance(inventory: Inventory, terminal: str) -> int:
    first = await _status(inventory, terminal)
    await asyncio.sleep(1.1)
    return (await _status(inventory, terminal)).heartbeat - first.heartbeat


# -- pure decisions ---------------------------------------------------------------------------


def _st(state: console.State = "playing", heartbeat: int = 10, uptime_s: int = 10,
        config_hash: str = EXPECTED_HASH) -> console.TerminalStatus:
    return console.TerminalStatus(state=state, heartbeat=heartbeat, uptime_s=uptime_s,
                                  cache="online", games_cached=24, config_hash=config_hash)


def test_rebooted_terminal_counts_as_back_only_with_an_advancing_heartbeat_and_right_hash(
) -> None:
    """boot_progress waits out booting, a frozen heartbeat and a wrong hash, then says done."""
    assert boot_progress(None, _st("booting", 0), EXPECTED_HASH) == (
        "the end of booting (state=booting)")
    assert "second STATUS" in (boot_progress(None, _st(), EXPECTED_HASH) or "")
    assert "second STATUS" in (boot_progress(_st("booting", 0), _st(), EXPECTED_HASH) or "")
    assert "second STATUS" in (boot_progress(_st(uptime_s=50), _st(), EXPECTED_HASH) or "")
    assert "stuck at 10" in (boot_progress(_st(), _st(), EXPECTED_HASH) or "")
    stale = _st("idle", 11, 11, console.config_hash(STALE_CONFIG))
    assert f"configuration hash {EXPECTED_HASH}" in (boot_progress(_st(), stale, EXPECTED_HASH)
                                                     or "")
    assert boot_progress(_st(), _st("idle", 11, 11), EXPECTED_HASH) is None
    assert boot_progress(_st(), stale, None) is None


def test_config_that_cannot_satisfy_the_probe_is_refused(tmp_path: Path) -> None:
    """An empty file, or one hashing otherwise than the probe expects, is a reason to escalate."""
    path = tmp_path / "t.conf"
    assert config_problem(path, EXPECTED_CONFIG, EXPECTED_HASH) is None
    assert "is empty" in (config_problem(path, " \n", EXPECTED_HASH) or "")
    assert "the inventory and the file disagree" in (
        config_problem(path, STALE_CONFIG, EXPECTED_HASH) or "")


def test_sandbox_terminals_name_the_config_file_their_probe_expects(
    sandbox_inventory_file: Path,
) -> None:
    """Every sandbox terminal's config_file hashes to its probe's expected configuration hash."""
    inventory = load_inventory(sandbox_inventory_file)
    terminals = [t for t in inventory.targets() if t.kind == "terminal"]
    assert len(terminals) == 3
    for terminal in terminals:
        assert terminal.connection.config_file == TERMINAL_CONFIG_FILE
        assert expected_config_hash(terminal) == EXPECTED_HASH
    assert console.config_hash(TERMINAL_CONFIG_FILE.read_text()) == EXPECTED_HASH


# -- restart_terminal -------------------------------------------------------------------------


async def test_hung_terminal_is_rebooted_and_its_heartbeat_advances_again(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, sandbox_inventory: Inventory,
    prefect_client: Any,
) -> None:
    """terminal_hung: REBOOT over the console, wait until it is back, resolve on the re-probe."""
    from runbooks.restart_terminal import restart_terminal

    sandbox_platform.inject("terminal_hung", "hall-1-t01")
    incident_id = _incident(runbook_env["store_url"], "hall-1-t01", "terminal_hung")
    report = await restart_terminal(target="hall-1-t01", incident_id=incident_id,
                                    boot_timeout_s=15, requested_by="automation")
    assert report["outcome"] == "resolved", report
    assert "heartbeat stuck" in report["diagnosis"]
    assert report["steps"][0]["output"].startswith("REBOOT accepted; back online after")
    assert "hall-1-t01" not in sandbox_platform.status()["active_faults"]
    assert await _heartbeat_advance(sandbox_inventory, "hall-1-t01") >= 1
    state, actions, kinds = _record(runbook_env["store_url"], incident_id)
    assert state == "resolved"
    assert actions == [("diagnose", "succeeded"), ("reboot-terminal", "succeeded")]
    assert {"runbook_started", "diagnosis", "remediating", "step", "resolved", "report"} <= set(
        kinds)
    artifacts = await prefect_client.read_latest_artifacts()
    assert any(a.key == "runbook-hall-1-t01" for a in artifacts)


async def test_offline_terminal_cannot_hear_the_reboot_and_is_escalated(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """terminal_offline: the REBOOT gets no answer, the step fails and people get the incident."""
    from runbooks.restart_terminal import restart_terminal

    sandbox_platform.inject("terminal_offline", "hall-1-t02")
    incident_id = _incident(runbook_env["store_url"], "hall-1-t02", "terminal_offline")
    report = await restart_terminal(target="hall-1-t02", incident_id=incident_id,
                                    boot_timeout_s=15, requested_by="automation")
    assert report["outcome"] == "escalated", report
    assert "REBOOT not answered within 2 s" in report["reason"]
    assert sandbox_platform.status()["active_faults"]["hall-1-t02"] == ["terminal_offline"]
    state, actions, kinds = _record(runbook_env["store_url"], incident_id)
    assert state == "escalated"
    assert actions == [("diagnose", "succeeded"), ("reboot-terminal", "failed"),
                       ("escalate", "succeeded")]
    assert {"step_failed", "escalated", "report"} <= set(kinds)


async def test_bill_jam_survives_the_reset_so_verification_fails_and_people_are_called(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """bill_jam: the ccTalk reset is acknowledged, the jam is reported again, the run escalates."""
    from runbooks.restart_terminal import restart_terminal

    sandbox_platform.inject("bill_jam", "hall-1-t03-bill")
    incident_id = _incident(runbook_env["store_url"], "hall-1-t03-bill", "cash_device_fault")
    report = await restart_terminal(target="hall-1-t03-bill", incident_id=incident_id,
                                    verify_deadline_s=1.5,
                                    **runbook_env["person"]("technician"))
    assert report["outcome"] == "escalated", report
    assert report["reason"].startswith("verification failed at verify:")
    assert "bill jammed in transport" in report["reason"]
    output = report["steps"][0]["output"]
    assert output.startswith("reset acknowledged; simple poll ACK")
    assert "still reports bill jammed in transport" in output
    assert sandbox_platform.status()["active_faults"]["hall-1-t03-bill"] == ["bill_jam"]
    state, actions, _ = _record(runbook_env["store_url"], incident_id)
    assert state == "escalated"
    assert actions == [("diagnose", "succeeded"), ("reset-bill-acceptor", "succeeded"),
                       ("escalate", "succeeded")]


async def test_paper_out_is_escalated_to_a_person_without_touching_the_printer(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox,
) -> None:
    """paper_out: no ESC/POS command loads paper, so the plan is to call the hall's people."""
    from runbooks.restart_terminal import restart_terminal

    sandbox_platform.inject("paper_out", "hall-1-t01-printer")
    incident_id = _incident(runbook_env["store_url"], "hall-1-t01-printer", "cash_device_fault")
    report = await restart_terminal(target="hall-1-t01-printer", incident_id=incident_id,
                                    requested_by="automation")
    assert report["outcome"] == "escalated", report
    assert "paper end" in report["reason"]
    assert "a person must attend to the printer" in report["reason"]
    assert report["plan"] == []
    assert report["steps"] == []
    assert sandbox_platform.status()["active_faults"]["hall-1-t01-printer"] == ["paper_out"]
    with Store(runbook_env["store_url"]) as s:
        actions = s.actions_of(incident_id)
        assert s.get_incident(incident_id).state == "escalated"
    assert [a["step"] for a in actions] == ["diagnose", "escalate"]
    assert actions[-1]["parameters"] == {"contacts": HALL_CONTACTS}


async def test_dry_run_restart_plans_the_reboot_and_leaves_the_terminal_hung(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, sandbox_inventory: Inventory,
) -> None:
    """A dry run lists the REBOOT it would send; the heartbeat stays frozen and uptime runs on."""
    from runbooks.restart_terminal import restart_terminal

    sandbox_platform.inject("terminal_hung", "hall-1-t02")
    before = await _status(sandbox_inventory, "hall-1-t02")
    incident_id = _incident(runbook_env["store_url"], "hall-1-t02", "terminal_hung")
    report = await restart_terminal(target="hall-1-t02", incident_id=incident_id, dry_run=True,
                                    requested_by="automation")
    assert report["outcome"] == "dry_run"
    [step] = report["plan"]
    assert step["step"] == "reboot-terminal"
    assert step["parameters"]["command"] == "REBOOT"
    assert step["parameters"]["expected_config_hash"] == EXPECTED_HASH
    after = await _status(sandbox_inventory, "hall-1-t02")
    assert after.heartbeat == before.heartbeat  # still frozen: no REBOOT reached it
    assert after.uptime_s >= before.uptime_s
    assert after.state == before.state
    assert sandbox_platform.status()["active_faults"]["hall-1-t02"] == ["terminal_hung"]
    state, actions, _ = _record(runbook_env["store_url"], incident_id)
    assert state == "open"
    assert actions == [("diagnose", "succeeded"), ("reboot-terminal", "planned")]


# -- redeploy_config ----------------------------------------------------------------------------


async def test_stale_config_is_redeployed_and_the_reported_hash_matches(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, sandbox_inventory: Inventory,
) -> None:
    """stale_config: CONFIG-PUSH of the inventory's file; resolved once the probe sees its hash."""
    from runbooks.redeploy_config import redeploy_config

    sandbox_platform.inject("stale_config", "hall-1-t03")
    incident_id = _incident(runbook_env["store_url"], "hall-1-t03", "delivery_failure")
    report = await redeploy_config(target="hall-1-t03", incident_id=incident_id,
                                   requested_by="automation")
    assert report["outcome"] == "resolved", report
    output = report["steps"][0]["output"]
    assert f"configuration hash before: {console.config_hash(STALE_CONFIG)}" in output
    assert f"config_hash={EXPECTED_HASH} (matches the file)" in output
    assert (await _status(sandbox_inventory, "hall-1-t03")).config_hash == EXPECTED_HASH
    assert "hall-1-t03" not in sandbox_platform.status()["active_faults"]
    state, actions, kinds = _record(runbook_env["store_url"], incident_id)
    assert state == "resolved"
    assert actions == [("diagnose", "succeeded"), ("push-config", "succeeded")]
    assert {"diagnosis", "remediating", "step", "resolved", "report"} <= set(kinds)


async def test_dry_run_redeploy_plans_the_push_and_leaves_the_stale_config(
    runbook_env: dict[str, Any], sandbox_platform: Sandbox, sandbox_inventory: Inventory,
) -> None:
    """A dry run names the file and hash it would push; the terminal keeps its stale config."""
    from runbooks.redeploy_config import redeploy_config

    sandbox_platform.inject("stale_config", "hall-1-t01")
    before = await _status(sandbox_inventory, "hall-1-t01")
    report = await redeploy_config(target="hall-1-t01", dry_run=True,
                                   **runbook_env["person"]("administrator"))
    assert report["outcome"] == "dry_run"
    [step] = report["plan"]
    assert step["parameters"]["config_file"] == str(TERMINAL_CONFIG_FILE)
    assert step["parameters"]["config_hash"] == EXPECTED_HASH
    assert step["parameters"]["command"] == "CONFIG-PUSH <base64 of hall-1-terminal.conf>"
    after = await _status(sandbox_inventory, "hall-1-t01")
    assert after.config_hash == before.config_hash == console.config_hash(STALE_CONFIG)
    assert after.heartbeat > before.heartbeat  # alive and never rebooted
    assert after.uptime_s >= before.uptime_s
    assert sandbox_platform.status()["active_faults"]["hall-1-t01"] == ["stale_config"]


async def test_redeploy_config_refuses_a_target_that_is_not_a_terminal(
    runbook_env: dict[str, Any],
) -> None:
    """Only terminals take a configuration: on a printer the run acts on nothing and hands
    the problem to people with that reason."""
    from runbooks.redeploy_config import redeploy_config

    report = await redeploy_config(target="hall-1-t02-printer",
                                   **runbook_env["person"]("administrator"))
    assert report["outcome"] == "escalated"
    assert "only terminals take a configuration" in report["reason"]
    assert report["steps"] == []
