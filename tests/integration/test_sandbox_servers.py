"""The sandbox application servers over real OpenSSH sshd, seen through paramiko and httpx."""

from __future__ import annotations

import base64
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from floorwatch.errors import SandboxError
from sandbox.servers import AppServers
from sandbox.supervisor import SvcClient
from sandbox.topology import HOST, SERVER_SERVICES, SERVERS, Layout, free_base_port
from tests.fixtures.sandbox import started

pytestmark = pytest.mark.integration

PRIMARY, STANDBY = list(SERVERS)


@pytest.fixture(scope="module")
def app_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServers]:
    yield from started(AppServers(Layout(tmp_path_factory.mktemp("srv") / "sb", free_base_port())))


@pytest.fixture
def servers(app_servers: AppServers) -> Iterator[AppServers]:
    """The shared servers, healed and with every service running again after each test."""
    yield app_servers
    app_servers.cpu_hog_seconds = 120.0
    app_servers.heal()
    for info in app_servers.describe().values():
        client = SvcClient(Path(info["server_dir"]))
        for service in info["services"]:
            client.start(service)


# --- plain clients, as Floorwatch's probes use them ------------------------------------------


def connect(info: dict[str, Any], *, host_key: str | None = None) -> paramiko.SSHClient:
    """A paramiko login that trusts only the pinned host key (RejectPolicy)."""
    key_type, key_data = (host_key or info["host_key"]).split()[:2]
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[{info['host']}]:{info['port']}",
        key_type,
        paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data)),
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            info["host"],
            port=info["port"],
            username=info["username"],
            key_filename=info["private_key_file"],
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
    except BaseException:
        client.close()
        raise
    return client


def ssh(info: dict[str, Any], command: str) -> tuple[int, str]:
    """Run ``command`` over SSH: (exit status, stdout + stderr)."""
    with connect(info) as client:
        _, out, err = client.exec_command(command, timeout=15)
        text = out.read().decode() + err.read().decode()
        return out.channel.recv_exit_status(), text


def health(info: dict[str, Any], timeout: float = 2.0) -> httpx.Response:
    port = info["services"]["game-engine"]["port"]
    return httpx.get(f"http://{HOST}:{port}/health", timeout=timeout)


def status_pid(text: str) -> int:
    match = re.search(r"active \(running\) pid (\d+)", text)
    assert match, text
    return int(match.group(1))


def df_capacity(info: dict[str, Any]) -> int:
    code, text = ssh(info, "svc df")
    assert code == 0, text
    header, row = text.splitlines()
    assert header.split()[:5] == ["Filesystem", "1024-blocks", "Used", "Available", "Capacity"]
    assert row.split()[-1] == info["data_mount"]["path"]
    return int(row.split()[4].rstrip("%"))


def cpu_busy_fraction(first: str, second: str) -> float:
    """Share of all CPU time spent busy between two ``/proc/stat`` aggregate lines."""
    a = [int(v) for v in first.split()[1:9]]
    b = [int(v) for v in second.split()[1:9]]
    delta = [y - x for x, y in zip(a, b, strict=True)]
    idle = delta[3] + delta[4]  # idle + iowait
    return 1 - idle / sum(delta)


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` (TIME_WAIT leftovers of closed connections do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


# --- SSH ------------------------------------------------------------------------------------


def test_login_with_pinned_host_key_runs_commands_as_described_user(servers: AppServers) -> None:
    """Each server accepts the client key with its pinned host key and runs commands."""
    for name, info in servers.describe().items():
        code, text = ssh(info, "id -un; echo $FLOORWATCH_SERVER")
        assert code == 0
        assert text.split() == [info["username"], name]


def test_wrong_pinned_host_key_is_refused(servers: AppServers) -> None:
    """Pinning app-standby's host key for app-primary makes paramiko refuse the server."""
    described = servers.describe()
    assert described[PRIMARY]["host_key"] != described[STANDBY]["host_key"]
    with pytest.raises(paramiko.BadHostKeyException):
        connect(described[PRIMARY], host_key=described[STANDBY]["host_key"])


def test_unknown_host_key_is_refused_by_reject_policy(servers: AppServers) -> None:
    """A client that pins nothing is refused under RejectPolicy."""
    info = servers.describe()[PRIMARY]
    with paramiko.SSHClient() as client:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            client.connect(info["host"], port=info["port"], username=info["username"],
                           key_filename=info["private_key_file"], look_for_keys=False,
                           allow_agent=False, timeout=5)  # fmt: skip


def test_password_login_is_refused(servers: AppServers) -> None:
    """The servers take keys only: a password login fails authentication."""
    info = servers.describe()[PRIMARY]
    key_type, key_data = info["host_key"].split()[:2]
    with paramiko.SSHClient() as client:
        client.get_host_keys().add(
            f"[{info['host']}]:{info['port']}",
            key_type,
            paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data)),
        )
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(info["host"], port=info["port"], username=info["username"],
                           password="hunter2", look_for_keys=False, allow_agent=False,
                           timeout=5)  # fmt: skip


# --- svc --------------------------------------------------------------------------------------


def test_svc_is_on_the_session_path_and_lists_services(servers: AppServers) -> None:
    """`svc list` typed bare in an SSH session shows both services active."""
    info = servers.describe()[PRIMARY]
    code, text = ssh(info, "command -v svc && svc list")
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0] == info["svc"]
    engine_port = info["services"]["game-engine"]["port"]
    assert re.match(
        rf"game-engine active \(running\) pid \d+ since .* port {engine_port}$", lines[1]
    )
    assert re.match(r"session-worker active \(running\) pid \d+ since ", lines[2])


def test_svc_status_of_active_service_exits_0_with_its_pid(servers: AppServers) -> None:
    """`svc status` exits 0 and names the pid that answers the health check."""
    info = servers.describe()[STANDBY]
    code, text = ssh(info, f"{info['svc']} status game-engine session-worker")
    assert code == 0, text
    response = health(info)
    assert response.status_code == 200
    assert response.json()["server"] == STANDBY
    assert response.json()["pid"] == status_pid(text.splitlines()[0])


def test_svc_stop_makes_service_inactive_and_start_brings_it_back(servers: AppServers) -> None:
    """After `svc stop` status exits 3 and the port refuses; `svc start` restores it."""
    info = servers.describe()[PRIMARY]
    assert ssh(info, "svc stop game-engine") == (0, "")
    code, text = ssh(info, "svc status game-engine")
    assert code == 3
    assert text.startswith("game-engine inactive (dead) since ")
    with pytest.raises(httpx.ConnectError):
        health(info)
    assert ssh(info, "svc start game-engine") == (0, "")
    assert health(info).status_code == 200


def test_svc_restart_over_ssh_outlives_the_session(servers: AppServers) -> None:
    """A service restarted over SSH gets a new pid, is the supervisor's child, and keeps running."""
    info = servers.describe()[PRIMARY]
    old_pid = health(info).json()["pid"]
    with connect(info) as client:
        _, out, _ = client.exec_command("svc restart game-engine && svc status game-engine")
        text = out.read().decode()
        assert out.channel.recv_exit_status() == 0, text
    new_pid = status_pid(text)
    assert new_pid != old_pid
    time.sleep(0.3)  # the session is gone: the service must not have gone with it
    assert health(info).json()["pid"] == new_pid
    ppid = int(Path(f"/proc/{new_pid}/stat").read_text().rpartition(")")[2].split()[1])
    assert ppid == info["pids"]["supervisor"]


def test_svc_unknown_service_exits_4(servers: AppServers) -> None:
    """`svc status` of a service that does not exist exits 4 naming the known ones."""
    code, text = ssh(servers.describe()[PRIMARY], "svc status slot-machine")
    assert code == 4
    assert "unknown service 'slot-machine'" in text
    assert "game-engine, session-worker" in text


def test_svc_journal_tails_the_service_log(servers: AppServers) -> None:
    """`svc journal NAME -n N` prints the last N lines of the service's log."""
    info = servers.describe()[PRIMARY]
    health(info)  # one more line: the engine logs each request
    code, text = ssh(info, "svc journal game-engine -n 3")
    assert code == 0
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[-1].endswith('"GET /health HTTP/1.1" 200 -')


# --- faults -------------------------------------------------------------------------------------


def test_service_crash_shows_failed_and_is_not_restarted(servers: AppServers) -> None:
    """After service_crash the engine stays failed (exit 3, SIGKILL) until healed."""
    info = servers.describe()[PRIMARY]
    servers.inject("service_crash", PRIMARY)
    time.sleep(0.5)  # time the supervisor would need to restart it, if it did
    code, text = ssh(info, "svc status game-engine")
    assert code == 3
    assert text.startswith("game-engine failed (Result: signal, status=9/KILL) since ")
    with pytest.raises(httpx.ConnectError):
        health(info)
    assert servers.active_faults() == {PRIMARY: ["service_crash"]}
    servers.heal(PRIMARY)
    code, text = ssh(info, "svc status game-engine")
    assert code == 0, text
    assert health(info).json()["pid"] == status_pid(text)
    assert servers.active_faults() == {}


def test_crash_repaired_over_ssh_is_no_longer_an_active_fault(servers: AppServers) -> None:
    """A runbook's `svc restart` over SSH clears service_crash from active_faults."""
    info = servers.describe()[STANDBY]
    servers.inject("service_crash", STANDBY)
    assert servers.active_faults() == {STANDBY: ["service_crash"]}
    assert ssh(info, "svc restart game-engine")[0] == 0
    assert servers.active_faults() == {}
    assert health(info).status_code == 200


def test_service_hang_accepts_connections_but_never_answers(servers: AppServers) -> None:
    """A hung engine still shows running and accepts TCP, but answers nothing until healed."""
    info = servers.describe()[PRIMARY]
    port = info["services"]["game-engine"]["port"]
    servers.inject("service_hang", PRIMARY)
    code, text = ssh(info, "svc status game-engine")
    assert code == 0
    assert text.startswith("game-engine active (running) pid ")
    with socket.create_connection((HOST, port), timeout=1) as conn:
        conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        conn.settimeout(0.5)
        with pytest.raises(TimeoutError):
            conn.recv(1024)
    with pytest.raises(httpx.ReadTimeout):
        health(info, timeout=0.5)
    assert servers.active_faults() == {PRIMARY: ["service_hang"]}
    servers.heal(PRIMARY)
    assert health(info).status_code == 200
    assert servers.active_faults() == {}


def test_svc_restart_over_ssh_recovers_a_hung_engine(servers: AppServers) -> None:
    """`svc restart` of a SIGSTOPped engine replaces it (SIGTERM + SIGCONT) and clears the fault."""
    info = servers.describe()[STANDBY]
    servers.inject("service_hang", STANDBY)
    with pytest.raises(httpx.ReadTimeout):
        health(info, timeout=0.5)
    code, text = ssh(info, "svc restart game-engine && svc journal game-engine -n 6")
    assert code == 0, text
    assert "SIGTERM: stopping" in text  # it stopped cleanly, not after the SIGKILL timeout
    assert health(info).status_code == 200
    assert servers.active_faults() == {}


def test_hang_of_a_crashed_engine_is_refused(servers: AppServers) -> None:
    """service_hang needs a running engine: on a crashed one it raises a clear SandboxError."""
    servers.inject("service_crash", STANDBY)
    with pytest.raises(SandboxError, match="cannot hang game-engine on app-standby"):
        servers.inject("service_hang", STANDBY)


def test_disk_full_shows_in_svc_df_with_real_bytes(servers: AppServers) -> None:
    """disk_full takes the data mount to 95 % or more in `svc df` (and `du`), heal frees it."""
    info = servers.describe()[STANDBY]
    assert df_capacity(info) < 10
    servers.inject("disk_full", STANDBY)
    assert df_capacity(info) >= 95
    # plain du agrees: the bytes are really allocated, not a sparse file
    code, text = ssh(info, f"du -sk {info['data_mount']['path']}")
    assert code == 0
    assert int(text.split()[0]) * 1024 >= 0.94 * info["data_mount"]["size_bytes"]
    assert servers.active_faults() == {STANDBY: ["disk_full"]}
    servers.heal(STANDBY)
    assert df_capacity(info) < 10
    assert servers.active_faults() == {}


def test_cpu_hog_shows_as_busy_cpu_and_in_ps(servers: AppServers) -> None:
    """cpu_hog spins one CPU: two /proc/stat samples show it busy and ps names the hog."""
    info = servers.describe()[PRIMARY]
    servers.inject("cpu_hog", PRIMARY)
    time.sleep(0.3)  # past the interpreter start-up, into the loop
    command = (
        "head -1 /proc/stat; grep -c '^cpu[0-9]' /proc/stat; sleep 1; head -1 /proc/stat; "
        "ps -eo pid,pcpu,args | grep '[c]pu-hog --server app-primary'"
    )
    code, text = ssh(info, command)
    assert code == 0, text
    first, cpus, second, hog = text.splitlines()
    assert cpu_busy_fraction(first, second) >= 0.8 / int(cpus)  # one of the CPUs, at least
    assert float(hog.split()[1]) > 25  # the hog's own %CPU (other tests may share the CPUs)
    servers.heal(PRIMARY)
    code, _ = ssh(info, "ps -eo args | grep -q '[c]pu-hog --server app-primary'")
    assert code == 1
    assert servers.active_faults() == {}


def test_cpu_hog_exits_by_itself_when_its_time_is_up(servers: AppServers) -> None:
    """A cpu_hog bounded to one second is gone two seconds later without a heal."""
    servers.cpu_hog_seconds = 1.0
    servers.inject("cpu_hog", STANDBY)
    assert servers.active_faults() == {STANDBY: ["cpu_hog"]}
    time.sleep(2.5)
    assert servers.active_faults() == {}
    code, _ = ssh(servers.describe()[STANDBY], "ps -eo args | grep -q '[c]pu-hog --server'")
    assert code == 1


def test_injecting_twice_is_harmless(servers: AppServers) -> None:
    """A second injection of the same fault changes nothing (same hog, same file size)."""
    info = servers.describe()[STANDBY]
    for fault in ("service_crash", "disk_full", "cpu_hog"):
        servers.inject(fault, STANDBY)
    hog = ssh(info, "pgrep -f 'cpu-hog --server app-standby'")[1]
    dump = Path(info["data_mount"]["path"]) / "tmp" / "core.game-engine.dump"
    size = os.path.getsize(dump)
    for fault in ("service_crash", "disk_full", "cpu_hog"):
        servers.inject(fault, STANDBY)
    assert ssh(info, "pgrep -f 'cpu-hog --server app-standby'")[1] == hog
    assert os.path.getsize(dump) == size
    assert servers.active_faults() == {STANDBY: ["service_crash", "disk_full", "cpu_hog"]}
    servers.heal(STANDBY)
    assert servers.active_faults() == {}
    assert health(info).status_code == 200


def test_inject_rejects_unknown_fault_and_target(servers: AppServers) -> None:
    """Unknown faults and targets raise SandboxError naming what is known."""
    with pytest.raises(SandboxError, match="unknown fault 'disk_on_fire'"):
        servers.inject("disk_on_fire", PRIMARY)
    with pytest.raises(SandboxError, match="does not apply to 'app-tertiary'"):
        servers.inject("cpu_hog", "app-tertiary")
    with pytest.raises(SandboxError, match="unknown server 'app-tertiary'"):
        servers.heal("app-tertiary")


# --- life cycle -------------------------------------------------------------------------------


def test_stop_leaves_no_process_port_or_session(tmp_path: Path) -> None:
    """stop() ends sshd, services, hung and hog processes and live SSH sessions; ports are free."""
    component = AppServers(Layout(tmp_path / "sb", free_base_port()))
    sessions: list[paramiko.SSHClient] = []
    try:
        component.start()
        described = component.describe()
        info = described[PRIMARY]
        component.inject("service_hang", PRIMARY)
        component.inject("cpu_hog", STANDBY)
        session = connect(info)
        sessions.append(session)
        session.exec_command("sleep 60")  # a session still running when the sandbox stops
        assert ssh(info, "nohup sleep 60 >/dev/null 2>&1 &")[0] == 0  # an orphan of a session
        time.sleep(0.3)
        hog = ssh(described[STANDBY], "pgrep -f 'cpu-hog --server app-standby'")[1]
        pids = {int(hog)} | {pid for data in described.values() for pid in data["pids"].values()}
        for data in described.values():
            pids |= set(_tree(data["pids"]["supervisor"]))
        assert len(pids) >= 12  # 2 x (supervisor, sshd, 2 services), hog, session, orphan
        ports = [data["port"] for data in described.values()]
        ports += [data["services"]["game-engine"]["port"] for data in described.values()]
    finally:
        component.stop()
        for session in sessions:
            session.close()
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    assert [port for port in ports if not port_free(port)] == []
    assert component.active_faults() == {}


def test_start_fails_clearly_when_the_ssh_port_is_taken(tmp_path: Path) -> None:
    """If sshd cannot bind, start() raises naming sshd and its log, and leaves nothing running."""
    layout = Layout(tmp_path / "sb", free_base_port())
    component = AppServers(layout)
    with socket.socket() as squatter:
        squatter.bind((HOST, layout.ssh_port(PRIMARY)))
        squatter.listen()
        try:
            with pytest.raises(SandboxError, match=r"sshd of app-primary exited at start") as err:
                component.start()
        finally:
            component.stop()
    assert "sshd.log" in str(err.value)
    assert component.describe()[PRIMARY]["pids"] == {"supervisor": None, "sshd": None}
    engine_ports = [layout.port(p) for s in SERVER_SERVICES.values() for p in s.values() if p]
    assert all(port_free(port) for port in engine_ports)


def _tree(root: int) -> list[int]:
    """Every descendant of ``root``, read from /proc by parent pid."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except FileNotFoundError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found
