"""The sandbox as a whole: start-up time, clean shutdown, loopback only, fault routing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from floorwatch.errors import SandboxError
from sandbox.control import Sandbox
from sandbox.topology import PORT_SPAN, free_base_port


def _listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (local address, port) for every listening TCP socket and bound UDP
    socket on this machine, IPv4 and IPv6."""
    found: dict[int, tuple[str, int]] = {}
    for name, listen_state in (("tcp", "0A"), ("udp", "07"), ("tcp6", "0A"), ("udp6", "07")):
        path = Path("/proc/net") / name
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != listen_state:
                continue
            addr_hex, port_hex = local.split(":")
            if len(addr_hex) == 8:
                addr = ".".join(str(int(addr_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                addr = "::" if int(addr_hex, 16) == 0 else addr_hex
            found[inode] = (addr, int(port_hex, 16))
    return found


def _processes_of(box: Sandbox) -> dict[int, str]:
    """Every process whose command line or working files name the sandbox folder."""
    marker = str(box.dir)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in cmdline and ") Z" not in stat:
            found[int(entry.name)] = cmdline.strip()
    return found


def _sockets_of(pids: set[int]) -> list[tuple[int, str, int]]:
    listening = _listening_sockets()
    owned = []
    for pid in pids:
        try:
            fds = list((Path("/proc") / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                if inode in listening:
                    owned.append((pid, *listening[inode]))
    return owned


@pytest.fixture
def fresh_box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path / "sb")


def test_sandbox_up_is_ready_fast_listens_on_loopback_only_and_down_leaves_nothing(
    fresh_box: Sandbox,
) -> None:
    """`up` is ready in under 15 s, binds only 127.0.0.1, and `down` leaves no process or port."""
    base = free_base_port()
    t0 = time.monotonic()
    try:
        state = fresh_box.up(base_port=base, terminals=8)
        elapsed = time.monotonic() - t0
        assert state["ready"] is True
        assert elapsed < 15, f"sandbox took {elapsed:.1f} s to be ready"
        assert (fresh_box.dir / "sandbox.json").exists()
        assert set(state["components"]) == {"http", "servers", "dns", "gamedb", "hall", "saas"}

        pids = set(_processes_of(fresh_box)) | {state["pid"]}
        sockets = _sockets_of(pids)
        ports = {port for _, _, port in sockets}
        assert {base, base + 3, base + 10, base + 11, base + 20} <= ports
        elsewhere = [s for s in sockets if s[1] != "127.0.0.1"]
        assert elsewhere == [], f"listening beyond 127.0.0.1: {elsewhere}"
    finally:
        fresh_box.down()

    assert _processes_of(fresh_box) == {}
    in_range = [
        (addr, port) for addr, port in _listening_sockets().values()
        if base <= port < base + PORT_SPAN
    ]
    assert in_range == []
    assert not (fresh_box.dir / "control.sock").exists()


def test_fault_routing_through_the_daemon_reports_unknown_faults_and_targets(
    sandbox_platform: Sandbox,
) -> None:
    """inject/heal reach the right part; an unknown fault or target is a clear error."""
    sandbox_platform.inject("slow", "provider-beta")
    try:
        assert sandbox_platform.status()["active_faults"]["provider-beta"] == ["slow"]
    finally:
        sandbox_platform.heal("provider-beta")
    assert "provider-beta" not in sandbox_platform.status()["active_faults"]

    with pytest.raises(SandboxError, match="unknown fault 'meteor'"):
        sandbox_platform.inject("meteor", "provider-beta")
    with pytest.raises(SandboxError, match="does not apply to 'provider-beta'"):
        sandbox_platform.inject("paper_out", "provider-beta")
    with pytest.raises(SandboxError, match="unknown sandbox target 'nowhere'"):
        sandbox_platform.heal("nowhere")


def test_second_up_in_the_same_folder_is_refused(sandbox_platform: Sandbox) -> None:
    """Starting a sandbox where one already runs is refused instead of fighting over ports."""
    with pytest.raises(SandboxError, match="already runs"):
        sandbox_platform.up(base_port=free_base_port())


def test_commands_without_a_running_sandbox_say_so(tmp_path: Path) -> None:
    """status on an empty folder is a clear error; down is a no-op."""
    box = Sandbox(tmp_path / "none")
    with pytest.raises(SandboxError, match="no sandbox runs"):
        box.status()
    assert box.down() is False


def test_chaos_mode_injects_faults_by_itself(tmp_path: Path) -> None:
    """With --chaos, random faults appear without anyone asking, and stay."""
    box = Sandbox(tmp_path / "chaos")
    box.up(base_port=free_base_port(), terminals=2, chaos=0.5, seed=7)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(box.status()["active_faults"]) < 2:
            time.sleep(0.2)
        status = box.status()
        assert len(status["active_faults"]) >= 2
        assert all(e["source"] == "chaos" for e in status["history"] if e["op"] == "inject")
    finally:
        box.down()
