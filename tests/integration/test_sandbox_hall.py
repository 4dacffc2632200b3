"""The gaming hall on real pseudo-terminals, seen through pyserial as Floorwatch's probes do."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from floorwatch.errors import CommandFailed, ProtocolError, SandboxError
from floorwatch.protocols import cctalk, console, escpos
from sandbox.hall import GamingHall
from sandbox.topology import (
    CCTALK_BILL_ADDRESS,
    CCTALK_HOST_ADDRESS,
    EXPECTED_CONFIG,
    Layout,
    bill_acceptor_name,
    free_base_port,
    printer_name,
    terminal_name,
)

pytestmark = pytest.mark.integration

TIMEOUT = 0.5  # a healthy simulator answers in milliseconds
EXPECTED_HASH = console.config_hash(EXPECTED_CONFIG)


# plain pyserial clients, as the probes will be


def console_line(hall: GamingHall, target: str, request: bytes) -> bytes:
    """Send one console request; return the raw reply line (b"" on timeout)."""
    with serial.Serial(_device(hall, target), 9600, timeout=TIMEOUT) as port:
        port.reset_input_buffer()
        port.write(request)
        line: bytes = port.readline()
        return line


def console_status(hall: GamingHall, target: str) -> console.TerminalStatus:
    """STATUS, parsed and typed by the codec."""
    line = console_line(hall, target, console.encode_request(console.STATUS))
    return console.parse_status(console.parse_reply(line, target), target)


def cctalk_request(hall: GamingHall, target: str, header: int, data: bytes = b"") -> cctalk.Frame:
    """Send one ccTalk request from the host to the bill validator; return its reply."""
    request = cctalk.encode_frame(CCTALK_BILL_ADDRESS, CCTALK_HOST_ADDRESS, header, data)
    reader = cctalk.FrameReader(target)
    reader.expect_echo(request)
    with serial.Serial(_device(hall, target), 9600, timeout=0.05) as port:
        port.reset_input_buffer()
        port.write(request)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            frames = reader.feed(port.read(64))
            if frames:
                return frames[0]
    raise TimeoutError(f"{target}: no ccTalk reply to header {header}")


def bill_events(hall: GamingHall, target: str) -> cctalk.BillEventBuffer:
    reply = cctalk_request(hall, target, cctalk.HEADER_READ_BUFFERED_BILL_EVENTS)
    return cctalk.decode_bill_events(reply.data, target)


def printer_status(hall: GamingHall, target: str) -> escpos.PrinterStatus:
    """DLE EOT 1..4, decoded by the codec."""
    with serial.Serial(_device(hall, target), 9600, timeout=TIMEOUT) as port:
        port.reset_input_buffer()
        port.write(escpos.ALL_STATUS_REQUESTS)
        replies = port.read(4)
    assert len(replies) == 4, f"{target}: {len(replies)} of 4 status bytes"
    return escpos.decode_printer_status(dict(zip(escpos.STATUS_KINDS, replies, strict=True)))


def _device(hall: GamingHall, target: str) -> str:
    return str(hall.describe()[target]["device"])


def _pty_fds() -> int:
    """File descriptors of this process open on a pseudo-terminal."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += path == "/dev/ptmx" or path.startswith("/dev/pts/")
    return count


# fixtures


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GamingHall]:
    """A hall of the default 8 terminals (24 devices), stopped after the module."""
    layout = Layout(tmp_path_factory.mktemp("hall") / "sb", base_port=free_base_port())
    component = GamingHall(layout)
    try:
        component.start()
        yield component
    finally:
        component.stop()


@pytest.fixture(autouse=True)
def healed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with no fault in force."""
    yield
    if "hall" in request.fixturenames:
        component: GamingHall = request.getfixturevalue("hall")
        component.heal()
        component.set_platform_reachable(True)


# health


def test_describe_lists_every_device_with_its_connection(hall: GamingHall) -> None:
    """describe() gives 24 serial devices whose symlinks point to live ptys."""
    info = hall.describe()
    assert len(info) == 24
    term, bill, printer = terminal_name(3), bill_acceptor_name(3), printer_name(3)
    assert info[term]["protocol"] == "console"
    assert info[term]["expected_config_hash"] == EXPECTED_HASH
    assert info[bill]["protocol"] == "cctalk"
    assert (info[bill]["address"], info[bill]["parent"]) == (40, term)
    assert (info[printer]["protocol"], info[printer]["parent"]) == ("escpos", term)
    for entry in info.values():
        assert entry["kind"] == "serial"
        assert entry["baud"] == 9600
        assert os.path.realpath(entry["device"]) == entry["tty"]
        assert Path(entry["device"]).name.endswith("." + entry["protocol"])


def test_every_device_answers_when_healthy(hall: GamingHall) -> None:
    """Each console, bill acceptor and printer answers its protocol with a healthy reply."""
    for i in range(1, 9):
        status = console_status(hall, terminal_name(i))
        assert status.state in ("playing", "idle")
        assert (status.cache, status.config_hash) == ("online", EXPECTED_HASH)
        ack = cctalk_request(hall, bill_acceptor_name(i), cctalk.HEADER_SIMPLE_POLL)
        assert ack == cctalk.Frame(CCTALK_HOST_ADDRESS, CCTALK_BILL_ADDRESS, 0)
        assert printer_status(hall, printer_name(i)).ready
    assert hall.active_faults() == {}


def test_heartbeat_advances_every_second(hall: GamingHall) -> None:
    """Two STATUS samples 1.1 s apart show a higher heartbeat."""
    first = console_status(hall, terminal_name(1)).heartbeat
    time.sleep(1.1)
    assert console_status(hall, terminal_name(1)).heartbeat > first


def test_version_and_config_hash_commands_answer(hall: GamingHall) -> None:
    """VERSION names the firmware and CONFIG-HASH the expected configuration."""
    version = console.parse_reply(console_line(hall, terminal_name(2), b"VERSION\r\n"))
    assert version["firmware"] == "4.2.1"
    fields = console.parse_reply(console_line(hall, terminal_name(2), b"CONFIG-HASH\r\n"))
    assert fields == {"config_hash": EXPECTED_HASH}


def test_unknown_console_command_answers_err(hall: GamingHall) -> None:
    """An unknown command gets a well-formed ERR line, which the codec raises as failed."""
    line = console_line(hall, terminal_name(2), b"SELF-DESTRUCT\r\n")
    with pytest.raises(CommandFailed, match="unknown command"):
        console.parse_reply(line)


def test_bill_acceptor_identifies_itself_and_naks_unknown_headers(hall: GamingHall) -> None:
    """Equipment category is 'Bill Validator'; an unsupported header gets a NAK."""
    target = bill_acceptor_name(2)
    category = cctalk_request(hall, target, cctalk.HEADER_REQUEST_EQUIPMENT_CATEGORY)
    assert category.data == b"Bill Validator"
    nak = cctalk_request(hall, target, cctalk.HEADER_READ_BUFFERED_CREDIT_CODES)
    assert nak.is_nak


def test_inserted_bill_is_reported_as_credit(hall: GamingHall) -> None:
    """A bill inserted shows up as a new credit event of its type."""
    target = bill_acceptor_name(2)
    before = bill_events(hall, target)
    hall.insert_bill(target, bill_type=3)
    after = bill_events(hall, target)
    (event,) = after.new_events(previous=before.counter)
    assert (event.kind, event.bill_type) == ("credit", 3)


def test_platform_unreachable_switches_terminals_to_local_cache(hall: GamingHall) -> None:
    """While the platform is unreachable terminals report cache=local, then online again."""
    hall.set_platform_reachable(False)
    assert console_status(hall, terminal_name(4)).cache == "local"
    hall.set_platform_reachable(True)
    assert console_status(hall, terminal_name(4)).cache == "online"


# faults


def test_offline_terminal_does_not_answer_even_reboot(hall: GamingHall) -> None:
    """terminal_offline: STATUS and REBOOT time out; after heal STATUS answers again."""
    target = terminal_name(5)
    hall.inject("terminal_offline", target)
    assert console_line(hall, target, b"STATUS\r\n") == b""
    assert console_line(hall, target, b"REBOOT\r\n") == b""
    assert hall.active_faults() == {target: ["terminal_offline"]}
    # Its cash devices are on their own lines and still answer.
    assert printer_status(hall, printer_name(5)).ready
    hall.heal(target)
    assert console_status(hall, target).state in ("playing", "idle")


def test_hung_terminal_freezes_heartbeat_until_healed(hall: GamingHall) -> None:
    """terminal_hung: STATUS answers, but the heartbeat does not move over 1.1 s."""
    target = terminal_name(6)
    hall.inject("terminal_hung", target)
    hall.inject("terminal_hung", target)  # twice is harmless
    first = console_status(hall, target)
    time.sleep(1.1)
    second = console_status(hall, target)
    assert second.heartbeat == first.heartbeat
    assert second.uptime_s >= first.uptime_s
    hall.heal(target)
    time.sleep(1.1)
    assert console_status(hall, target).heartbeat > first.heartbeat


def test_reboot_clears_hang_but_not_stale_config(hall: GamingHall) -> None:
    """REBOOT: silent ~1 s, booting until ~2 s, then up with reset heartbeat and uptime;
    the hang is gone, the stale configuration stays."""
    target = terminal_name(7)
    hall.inject("terminal_hung", target)
    hall.inject("stale_config", target)
    before = console_status(hall, target)
    reply = console.parse_reply(console_line(hall, target, b"REBOOT\r\n"))
    rebooted_at = time.monotonic()
    assert reply == {"reboot": "accepted"}
    assert console_line(hall, target, b"STATUS\r\n") == b""  # console down
    time.sleep(max(0.0, rebooted_at + 1.2 - time.monotonic()))
    booting = console_status(hall, target)
    assert (booting.state, booting.heartbeat) == ("booting", 0)
    time.sleep(max(0.0, rebooted_at + 2.1 - time.monotonic()))
    up = console_status(hall, target)
    assert up.state in ("playing", "idle")
    assert up.uptime_s <= 2 < before.uptime_s
    assert up.heartbeat <= 1 < before.heartbeat
    assert up.config_hash != EXPECTED_HASH
    assert hall.active_faults() == {target: ["stale_config"]}


@pytest.mark.parametrize(
    "target", [terminal_name(8), bill_acceptor_name(8), printer_name(8)], ids=str
)
def test_garbled_device_replies_fail_the_codec(hall: GamingHall, target: str) -> None:
    """garbled: the reply arrives whole but the codec raises ProtocolError; heal fixes it."""
    hall.inject("garbled", target)

    def probe() -> object:
        if target.endswith("-bill"):
            return cctalk_request(hall, target, cctalk.HEADER_SIMPLE_POLL)
        if target.endswith("-printer"):
            return printer_status(hall, target)
        return console_status(hall, target)

    with pytest.raises(ProtocolError):
        probe()
    assert hall.active_faults() == {target: ["garbled"]}
    hall.heal(target)
    probe()


def test_stale_config_reports_other_hash_until_expected_config_is_pushed(
    hall: GamingHall,
) -> None:
    """stale_config: the hash differs; CONFIG-PUSH of the expected configuration fixes it."""
    target = terminal_name(3)
    hall.inject("stale_config", target)
    assert console_status(hall, target).config_hash != EXPECTED_HASH
    pushed = console.parse_reply(
        console_line(hall, target, console.encode_config_push(EXPECTED_CONFIG))
    )
    assert pushed == {"config_hash": EXPECTED_HASH}
    assert console_status(hall, target).config_hash == EXPECTED_HASH
    assert hall.active_faults() == {}


def test_config_push_of_bad_base64_answers_err(hall: GamingHall) -> None:
    """A CONFIG-PUSH that is not base64 is refused with ERR and changes nothing."""
    line = console_line(hall, terminal_name(3), b"CONFIG-PUSH %%%\r\n")
    with pytest.raises(CommandFailed, match="base64"):
        console.parse_reply(line)
    assert console_status(hall, terminal_name(3)).config_hash == EXPECTED_HASH


def test_bill_jam_is_reported_and_survives_a_cctalk_reset(hall: GamingHall) -> None:
    """bill_jam: the latest event is a jam, still after a reset; heal restarts the device."""
    target = bill_acceptor_name(4)
    hall.inject("bill_jam", target)
    latest = bill_events(hall, target).latest
    assert latest is not None
    assert latest.is_jam
    assert latest.description == "bill jammed in transport (unsafe mode)"
    assert cctalk_request(hall, target, cctalk.HEADER_RESET_DEVICE).is_ack
    again = bill_events(hall, target).latest
    assert again is not None
    assert again.is_jam
    with pytest.raises(SandboxError, match="jammed"):
        hall.insert_bill(target)
    hall.heal(target)
    healed = bill_events(hall, target)
    assert (healed.counter, healed.latest) == (0, None)
    assert cctalk_request(hall, target, cctalk.HEADER_SIMPLE_POLL).is_ack


def test_paper_out_reports_paper_end_and_stopped_printing(hall: GamingHall) -> None:
    """paper_out: DLE EOT 4 paper end, DLE EOT 2 paper-end stop, offline; heal restores."""
    target = printer_name(1)
    hall.inject("paper_out", target)
    status = printer_status(hall, target)
    assert (status.paper_end, status.paper_near_end, status.paper_end_stop) == (True,) * 3
    assert not status.online
    assert not status.ready
    hall.heal()
    assert printer_status(hall, target).ready


def test_unknown_fault_or_target_is_refused(hall: GamingHall) -> None:
    """inject/heal name what is wrong: unknown fault, wrong target kind, unknown target."""
    with pytest.raises(SandboxError, match="unknown fault"):
        hall.inject("on_fire", terminal_name(1))
    with pytest.raises(SandboxError, match="does not apply"):
        hall.inject("paper_out", terminal_name(1))
    with pytest.raises(SandboxError, match="unknown target"):
        hall.heal("hall-9-t99")


def test_devices_answer_concurrent_clients(hall: GamingHall) -> None:
    """Probes of all 24 devices at once all get healthy answers."""
    errors: list[BaseException] = []

    def probe(i: int) -> None:
        try:
            console_status(hall, terminal_name(i))
            cctalk_request(hall, bill_acceptor_name(i), cctalk.HEADER_SIMPLE_POLL)
            printer_status(hall, printer_name(i))
        except (AssertionError, OSError, ProtocolError, TimeoutError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=probe, args=(i,)) for i in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []


# lifecycle


def test_stop_closes_every_pty_and_removes_symlinks(tmp_path: Path) -> None:
    """After stop(), even with faults in force, no pty fd, symlink or thread remains."""
    baseline = _pty_fds()
    threads_before = {t.ident for t in threading.enumerate()}
    hall = GamingHall(Layout(tmp_path / "sb", base_port=free_base_port(), terminals=2))
    try:
        started = time.monotonic()
        hall.start()
        assert time.monotonic() - started < 1.0
        info: dict[str, Any] = hall.describe()
        assert _pty_fds() == baseline + 2 * 6
        hall.inject("terminal_hung", terminal_name(1))
        hall.inject("bill_jam", bill_acceptor_name(2))
        assert console_status(hall, terminal_name(1)).config_hash == EXPECTED_HASH
    finally:
        hall.stop()
    assert _pty_fds() == baseline
    assert not hall.running
    assert not (tmp_path / "sb" / "dev").exists()
    for entry in info.values():
        assert not os.path.lexists(entry["device"])
    assert {t.ident for t in threading.enumerate()} <= threads_before
    hall.stop()  # stopping twice is harmless
