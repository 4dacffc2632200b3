"""Serial probes (terminal console, ccTalk bill acceptor, ESC/POS printer) against the session
sandbox's hall, whose devices are simulators on real pseudo-terminals."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path
from typing import Any

import pytest

from floorwatch.catalogue import FaultKind
from floorwatch.errors import CommandFailed, ConnectError, ProbeTimeout, ProtocolError
from floorwatch.inventory import Inventory, Probe, Target
from floorwatch.protocols import cctalk, console
from floorwatch.results import ProbeResult
from sandbox.control import Sandbox
from sandbox.topology import EXPECTED_CONFIG
from tasks.probes import ProbeContext, run_probe
from tasks.serial import CctalkDevice, Console, SerialLine

pytestmark = pytest.mark.integration

TERMINAL = "hall-1-t01"
BILL = "hall-1-t01-bill"
PRINTER = "hall-1-t01-printer"
EXPECTED_HASH = console.config_hash(EXPECTED_CONFIG)
ZONE = "hall-1"


async def probe(target: Target, **changes: Any) -> ProbeResult:
    """Run the target's first probe, with ``changes`` applied to it."""
    spec: Probe = target.probes[0].model_copy(update=changes)
    async with ProbeContext(zone=ZONE) as ctx:
        return await run_probe(target, spec, ctx)


def moved(target: Target, device: str) -> Target:
    """``target`` with its serial device at another path."""
    return target.model_copy(
        update={"connection": target.connection.model_copy(update={"device": device})}
    )


@pytest.fixture
def hall(
    sandbox_platform: Sandbox, sandbox_state: dict[str, Any], sandbox_inventory: Inventory
) -> Inventory:
    """The sandbox inventory, with every hall fault healed after the test."""
    return sandbox_inventory


# healthy devices


async def test_healthy_terminal_passes_with_its_status(hall: Inventory) -> None:
    """A healthy terminal passes and reports its state, advancing heartbeat and config hash."""
    result = await probe(hall.target(TERMINAL))
    assert result.ok, result.error_message
    assert result.probe_id == "terminal"
    values = result.values
    assert values["state"] in ("playing", "idle")
    assert values["heartbeat_advance"] >= 1
    assert values["heartbeat"] == values["heartbeat_previous"] + values["heartbeat_advance"]
    assert values["uptime_s"] >= 3600
    assert values["cache"] == "online"
    assert values["games_cached"] == 24
    assert values["config_hash"] == values["expected_config_hash"] == EXPECTED_HASH
    assert result.latency_ms is not None
    assert result.latency_ms < 500


async def test_healthy_bill_acceptor_passes_with_empty_event_buffer(hall: Inventory) -> None:
    """A healthy bill acceptor ACKs the poll and reports no events since its reset."""
    result = await probe(hall.target(BILL))
    assert result.ok, result.error_message
    assert result.values["address"] == 40
    assert result.values["event_counter"] == 0
    assert result.values["latest_event"] is None
    assert result.values["recent_events"] == []


async def test_healthy_printer_passes_ready(hall: Inventory) -> None:
    """A healthy printer passes, ready, online, with paper and no problems."""
    result = await probe(hall.target(PRINTER))
    assert result.ok, result.error_message
    assert result.values["ready"] is True
    assert result.values["online"] is True
    assert result.values["paper_near_end"] is False
    assert result.values["problems"] == []


# terminal faults


async def test_offline_terminal_times_out_as_terminal_offline(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """A terminal that does not answer fails as terminal_offline within the probe timeout."""
    target = hall.target(TERMINAL)
    sandbox_platform.inject("terminal_offline", TERMINAL)
    try:
        started = time.monotonic()
        result = await probe(target, timeout=1.5)
        elapsed = time.monotonic() - started
    finally:
        sandbox_platform.heal(TERMINAL)
    assert result.faults == (FaultKind.TERMINAL_OFFLINE,)
    assert result.error_class == "ProbeTimeout"
    assert "no answer within 1.5 s" in (result.error_message or "")
    assert 1.4 < elapsed < 1.5 + 0.3
    assert (await probe(target)).ok


async def test_hung_terminal_reports_frozen_heartbeat(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """A terminal whose heartbeat does not advance between samples is terminal_hung."""
    target = hall.target(TERMINAL)
    sandbox_platform.inject("terminal_hung", TERMINAL)
    try:
        result = await probe(target)
    finally:
        sandbox_platform.heal(TERMINAL)
    assert result.faults == (FaultKind.TERMINAL_HUNG,)
    assert result.error_class is None
    assert result.values["heartbeat_advance"] == 0
    assert f"heartbeat stuck at {result.values['heartbeat']}" in (result.error_message or "")
    healed = await probe(target)
    assert healed.ok, healed.error_message
    assert healed.values["heartbeat_advance"] >= 1


async def test_garbled_terminal_is_offline_by_protocol_error(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """A terminal whose replies fail their checksum is terminal_offline with a ProtocolError."""
    target = hall.target(TERMINAL)
    sandbox_platform.inject("garbled", TERMINAL)
    try:
        result = await probe(target)
    finally:
        sandbox_platform.heal(TERMINAL)
    assert result.faults == (FaultKind.TERMINAL_OFFLINE,)
    assert result.error_class == "ProtocolError"
    assert "bad reply checksum" in (result.error_message or "")
    assert (await probe(target)).ok


async def test_stale_config_reports_delivery_failure(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """A terminal reporting another configuration hash than expected is a delivery failure."""
    target = hall.target(TERMINAL)
    sandbox_platform.inject("stale_config", TERMINAL)
    try:
        result = await probe(target)
    finally:
        sandbox_platform.heal(TERMINAL)
    assert result.faults == (FaultKind.DELIVERY_FAILURE,)
    assert result.values["config_hash"] != EXPECTED_HASH
    assert result.values["heartbeat_advance"] >= 1  # answering and alive: only the config
    assert f"differs from expected {EXPECTED_HASH}" in (result.error_message or "")
    assert (await probe(target)).ok


async def test_stale_config_passes_when_no_hash_is_expected(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """Without an expected hash in the inventory the configuration is reported, not judged."""
    target = hall.target(TERMINAL)
    spec = target.probes[0]
    sandbox_platform.inject("stale_config", TERMINAL)
    try:
        result = await probe(target, expect=spec.expect.model_copy(update={"config_hash": None}))
    finally:
        sandbox_platform.heal(TERMINAL)
    assert result.ok, result.error_message
    assert result.values["config_hash"] != EXPECTED_HASH
    assert "expected_config_hash" not in result.values


async def test_rebooting_terminal_is_offline_then_booting_without_fault(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """Right after REBOOT the console is silent (offline); once booting, the probe passes."""
    target = hall.target(TERMINAL)
    terminal = Console.for_target(target)
    assert (await terminal.command(console.REBOOT, timeout=1.0)) == {"reboot": "accepted"}
    silent = await probe(target, timeout=1.5)
    assert silent.faults == (FaultKind.TERMINAL_OFFLINE,)
    booting = await probe(target)  # the console is back, but booting
    assert booting.ok, booting.error_message
    assert booting.values["state_previous"] == "booting"
    assert booting.values["heartbeat_previous"] == 0


async def test_terminal_timeout_too_short_for_two_samples_is_reported(hall: Inventory) -> None:
    """A terminal probe timeout that cannot fit two heartbeat samples fails saying so."""
    result = await probe(hall.target(TERMINAL), timeout=1.0)
    assert result.faults == (FaultKind.TERMINAL_OFFLINE,)
    assert result.error_class == "ProbeTimeout"
    assert "leaves no time for a second STATUS" in (result.error_message or "")


# cash devices


async def test_bill_jam_reports_cash_device_fault_with_its_description(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """A bill acceptor whose newest event is a jam is a cash device fault naming the jam."""
    target = hall.target(BILL)
    sandbox_platform.inject("bill_jam", BILL)
    try:
        result = await probe(target)
    finally:
        sandbox_platform.heal(BILL)
    assert result.faults == (FaultKind.CASH_DEVICE_FAULT,)
    assert result.error_class is None
    assert result.values["latest_event"] == "bill jammed in transport (unsafe mode)"
    assert result.values["latest_event_kind"] == "fatal"
    assert result.values["event_counter"] >= 1
    assert "bill jammed in transport (unsafe mode) (code 6)" in (result.error_message or "")
    healed = await probe(target)
    assert healed.ok, healed.error_message
    assert healed.values["event_counter"] == 0


async def test_paper_out_reports_cash_device_fault_listing_problems(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """A printer out of paper is a cash device fault whose message lists every problem."""
    target = hall.target(PRINTER)
    sandbox_platform.inject("paper_out", PRINTER)
    try:
        result = await probe(target)
    finally:
        sandbox_platform.heal(PRINTER)
    assert result.faults == (FaultKind.CASH_DEVICE_FAULT,)
    assert result.values["ready"] is False
    assert result.values["paper_end"] is True
    assert result.values["online"] is False
    message = result.error_message or ""
    for problem in ("offline", "paper end", "printing stopped: paper end"):
        assert problem in message
    assert (await probe(target)).ok


@pytest.mark.parametrize(
    ("name", "said"),
    [(BILL, "bad ccTalk checksum"), (PRINTER, "wrong fixed bits")],
)
async def test_garbled_cash_device_is_fault_by_protocol_error(
    hall: Inventory, sandbox_platform: Sandbox, name: str, said: str
) -> None:
    """A cash device whose replies are garbled is a cash device fault with a ProtocolError."""
    target = hall.target(name)
    sandbox_platform.inject("garbled", name)
    try:
        result = await probe(target)
    finally:
        sandbox_platform.heal(name)
    assert result.faults == (FaultKind.CASH_DEVICE_FAULT,)
    assert result.error_class == "ProtocolError"
    assert said in (result.error_message or "")
    assert (await probe(target)).ok


async def test_inventory_fault_replaces_natural_fault_for_a_wrong_answer(
    hall: Inventory, sandbox_platform: Sandbox
) -> None:
    """A probe's own ``fault`` from the inventory is what a wrong answer reports."""
    sandbox_platform.inject("paper_out", PRINTER)
    try:
        result = await probe(hall.target(PRINTER), fault=FaultKind.SERVICE_DOWN)
    finally:
        sandbox_platform.heal(PRINTER)
    assert result.faults == (FaultKind.SERVICE_DOWN,)


# the line itself


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        (TERMINAL, FaultKind.TERMINAL_OFFLINE),
        (BILL, FaultKind.CASH_DEVICE_FAULT),
        (PRINTER, FaultKind.CASH_DEVICE_FAULT),
    ],
)
async def test_missing_device_is_a_connect_error(
    sandbox_inventory: Inventory, tmp_path: Path, name: str, fault: FaultKind
) -> None:
    """A device path that does not exist fails at once with a ConnectError naming it."""
    missing = tmp_path / f"{name}.tty"
    result = await probe(moved(sandbox_inventory.target(name), str(missing)))
    assert result.faults == (fault,)
    assert result.error_class == "ConnectError"
    assert result.error_message == (
        f"{name}: cannot open serial device {missing}: No such file or directory"
    )
    assert result.latency_ms is not None
    assert result.latency_ms < 500


async def test_nine_devices_probed_concurrently_answer_within_one_timeout(
    hall: Inventory,
) -> None:
    """Every terminal, bill acceptor and printer, probed at once, passes within one timeout."""
    targets = [t for t in hall.targets() if t.name.startswith("hall-1-")]
    assert len(targets) == 9
    shortest = min(t.probes[0].timeout for t in targets)
    started = time.monotonic()
    async with ProbeContext(zone=ZONE) as ctx:
        results = await asyncio.gather(*(run_probe(t, t.probes[0], ctx) for t in targets))
    elapsed = time.monotonic() - started
    assert [r.target for r in results if not r.ok] == []
    assert elapsed < shortest


async def test_concurrent_queries_on_one_device_never_interleave(hall: Inventory) -> None:
    """Twenty concurrent requests on one console each get their own, whole reply."""
    terminal = Console.for_target(hall.target(TERMINAL))
    commands = [console.VERSION if i % 2 else console.CONFIG_HASH for i in range(20)]
    replies = await asyncio.gather(*(terminal.command(c, timeout=3.0) for c in commands))
    for command, fields in zip(commands, replies, strict=True):
        if command == console.VERSION:
            assert fields["model"] == "FW-T100"
        else:
            assert fields == {"config_hash": EXPECTED_HASH}


async def test_device_locked_by_another_process_times_out_as_busy(hall: Inventory) -> None:
    """While another open of the device holds its flock, a query waits, then times out."""
    target = hall.target(PRINTER)
    assert target.connection.device is not None
    fd = os.open(target.connection.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = await probe(target, timeout=0.5)
    finally:
        os.close(fd)
    assert result.error_class == "ProbeTimeout"
    assert "another process held it" in (result.error_message or "")
    assert (await probe(target)).ok


async def test_cctalk_unknown_header_is_a_nak_protocol_error(hall: Inventory) -> None:
    """A header the validator does not implement is answered NAK, raised as ProtocolError."""
    validator = CctalkDevice.for_target(hall.target(BILL))
    serial_number = await validator.query(cctalk.HEADER_REQUEST_SERIAL_NUMBER, timeout=1.0)
    assert int.from_bytes(serial_number.data, "little") == 400_001
    with pytest.raises(ProtocolError, match="NAK to header 229"):
        await validator.query(cctalk.HEADER_READ_BUFFERED_CREDIT_CODES, timeout=1.0)


async def test_console_error_answer_is_command_failed(hall: Inventory) -> None:
    """A console that answers ERR to a request raises CommandFailed with its reason."""
    terminal = Console.for_target(hall.target(TERMINAL))
    line = await terminal.query(b"SELF-DESTRUCT\r\n", timeout=1.0)
    assert line.startswith(b"ERR ")
    assert line.endswith(b"\r\n")
    with pytest.raises(CommandFailed, match="unknown command"):
        console.parse_reply(line, TERMINAL)


async def test_serial_line_errors_name_the_target(tmp_path: Path) -> None:
    """Opening a missing device raises ConnectError; no time left raises ProbeTimeout."""
    line = SerialLine("hall-9-t99", str(tmp_path / "nothing"))
    with pytest.raises(ConnectError, match="hall-9-t99: cannot open serial device"):
        await line.exchange(b"x", lambda chunk: chunk, timeout=1.0)
    with pytest.raises(ProbeTimeout, match="hall-9-t99: no time left"):
        await line.exchange(b"x", lambda chunk: chunk, timeout=0.0)
