"""The ssh_metrics probe and the SSH adapter against the session sandbox's real OpenSSH sshd,
plus the metrics parser on captured text."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import SecretStr

from blocks import SshHost
from floorwatch.catalogue import FaultKind
from floorwatch.errors import (
    CommandFailed,
    ConnectError,
    HostKeyMismatch,
    ProbeTimeout,
    ProtocolError,
)
from floorwatch.inventory import Inventory, SshMetricsProbe, SshThresholds, Target
from floorwatch.results import ProbeResult
from sandbox.control import Sandbox
from tasks.probes import ProbeContext, run_probe
from tasks.probes.ssh import (
    HostMetrics,
    metrics_script,
    overloads,
    parse_metrics,
    service_state,
    services_down,
)
from tasks.ssh import RemoteShell, load_private_key

integration = pytest.mark.integration

PRIMARY = "app-primary"
STANDBY = "app-standby"
ZONE = "online-core"
SERVICES = ("game-engine", "session-worker")


# -- captured output, for the parser ---------------------------------------------------------

CAPTURED = """\
:::floorwatch stat
cpu  1000 0 500 8000 500 0 0 0 0 0
:::floorwatch stat
cpu  1060 0 530 8008 502 0 0 0 0 0
:::floorwatch meminfo
MemTotal:       16000000 kB
MemFree:         1000000 kB
MemAvailable:    4000000 kB
Buffers:          200000 kB
:::floorwatch loadavg
3.00 2.50 2.00 3/412 98765
:::floorwatch nproc
2
:::floorwatch disk
Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/vda1         41152736  39094100   2058636      95% /
tmpfs              8192000         0   8192000       0% /dev/shm
none                     0         0         0       -  /sys/fs/bpf
/dev/vdb1        103081248  51540624  51540624      50% /srv/game data
:::floorwatch rc 0
:::floorwatch service 0
game-engine failed (Result: signal, status=9/KILL) since 2026-01-01 00:00:00 UTC; 5s ago
:::floorwatch rc 3
:::floorwatch service 1
session-worker active (running) pid 4242 since 2026-01-01 00:00:00 UTC; 1h 2min ago
:::floorwatch rc 0
:::floorwatch end
"""


def test_parser_reads_every_measurement_from_captured_output() -> None:
    """CPU comes from the /proc/stat delta, memory from MemAvailable, load per CPU, df and svc."""
    metrics = parse_metrics(CAPTURED, SERVICES, PRIMARY)

    # busy 90 of 100 jiffies (iowait counts as idle): 90 %
    assert metrics.cpu_percent == pytest.approx(90.0)
    assert metrics.memory_percent == pytest.approx(75.0)
    assert metrics.load_per_cpu == pytest.approx(1.5)
    assert metrics.cpus == 2
    assert metrics.disks == {"/": 95.0, "/dev/shm": 0.0, "/srv/game data": 50.0}
    assert metrics.services == {"game-engine": "failed", "session-worker": "active"}
    assert metrics.values()["services"] == metrics.services


def test_parser_reads_systemctl_status_and_unknown_units() -> None:
    """systemctl's "Active: failed" line names the state; exit 4 without it is not-found."""
    systemctl = [
        "× game-engine.service - Game engine",
        "     Loaded: loaded (/etc/systemd/system/game-engine.service; enabled)",
        "     Active: failed (Result: signal) since Thu 2026-01-01 00:00:00 UTC; 5s ago",
    ]
    assert service_state("game-engine", systemctl, 3) == "failed"
    assert service_state("game-engine", ["Active: inactive (dead)"], 3) == "inactive"
    assert service_state("nope", ["Unit nope.service could not be found."], 4) == "not-found"
    assert service_state("game-engine", ["anything at all"], 0) == "active"
    assert service_state("game-engine", [], 1) == "unknown (exit 1)"


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (CAPTURED.replace(":::floorwatch end\n", ""), "ended early"),
        (CAPTURED.replace("cpu  1060", "cpx  1060"), "no cpu line"),
        (CAPTURED.replace("MemAvailable", "MemAvail"), "MemAvailable"),
        (CAPTURED.replace("3.00 2.50", "high 2.50"), "load average is not a number"),
        (CAPTURED.replace("      95% /\n", "      lots /\n"), "not df -P format"),
        (CAPTURED.replace("Filesystem ", "Filesys "), "not df -P format"),
        ("Welcome to the server!\n" + CAPTURED, "starts with 'Welcome"),
        (CAPTURED.replace(":::floorwatch rc 3\n", ""), "no exit status"),
    ],
)
def test_parser_rejects_output_it_cannot_read(broken: str, message: str) -> None:
    """Truncated or garbled output raises ProtocolError naming what is wrong."""
    with pytest.raises(ProtocolError, match=message) as exc_info:
        parse_metrics(broken, SERVICES, PRIMARY)
    assert exc_info.value.target == PRIMARY


def test_parser_reports_a_failing_disk_command() -> None:
    """A disk command exiting non-zero raises CommandFailed with its last line."""
    text = re.sub(
        r":::floorwatch disk\n.*?:::floorwatch rc 0\n",
        ":::floorwatch disk\nsh: 1: dff: not found\n:::floorwatch rc 127\n",
        CAPTURED,
        flags=re.DOTALL,
    )
    with pytest.raises(CommandFailed, match="disk command exited 127: sh: 1: dff: not found"):
        parse_metrics(text, SERVICES, PRIMARY)


def test_overloads_name_each_threshold_exceeded() -> None:
    """Every threshold exceeded gives one line naming the measure, value and limit."""
    metrics = parse_metrics(CAPTURED, SERVICES, PRIMARY)
    strict = SshThresholds(cpu_percent=80, memory_percent=70, disk_percent=90, load_per_cpu=1)

    assert overloads(metrics, strict) == [
        "cpu 90% > 80%",
        "memory 75% > 70%",
        "load 1.50 per cpu > 1",
        "disk / 95% > 90%",
    ]
    assert overloads(metrics, SshThresholds(disk_percent=95, load_per_cpu=2)) == []
    assert services_down(metrics) == ["game-engine: failed"]


def test_metrics_script_quotes_service_names() -> None:
    """A service name with shell metacharacters reaches the service command as one word."""
    script = metrics_script(["a b;rm -rf /"], "systemctl", "df -P")
    assert "systemctl status 'a b;rm -rf /'" in script
    assert HostMetrics(1, 2, 3, 4).values()["disks"] == {}


# -- private keys ---------------------------------------------------------------------------

PASSPHRASE = "pass-phrase-4711"
KEY_FORMATS = {
    "openssh": serialization.PrivateFormat.OpenSSH,
    "pkcs8": serialization.PrivateFormat.PKCS8,
    "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
}


def private_key_text(kind: str, key_format: str, passphrase: str | None = None) -> tuple[str, str]:
    """(private key text, its public key line) for a fresh key of ``kind``."""
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    text = key.private_bytes(serialization.Encoding.PEM, KEY_FORMATS[key_format], encryption)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return text.decode(), public.decode()


def ssh_host(private_key: str, passphrase: str | None = None) -> SshHost:
    """An SshHost holding ``private_key`` (the host key is any valid one)."""
    return SshHost(
        host="127.0.0.1",
        username="ops",
        private_key=SecretStr(private_key),
        private_key_passphrase=SecretStr(passphrase) if passphrase else None,
        host_key=other_host_key("ed25519"),
    )


@pytest.mark.parametrize(
    ("kind", "key_format", "key_class"),
    [
        ("ed25519", "openssh", paramiko.Ed25519Key),
        ("ed25519", "pkcs8", paramiko.Ed25519Key),
        ("rsa", "openssh", paramiko.RSAKey),
        ("rsa", "pkcs8", paramiko.RSAKey),
        ("rsa", "traditional", paramiko.RSAKey),
        ("ecdsa", "openssh", paramiko.ECDSAKey),
        ("ecdsa", "traditional", paramiko.ECDSAKey),
    ],
)
@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_private_keys_load_from_every_common_format(
    kind: str, key_format: str, key_class: type[paramiko.PKey], passphrase: str | None
) -> None:
    """ed25519, RSA and ECDSA keys load from OpenSSH, PKCS#8 or PEM text, encrypted or not."""
    text, public = private_key_text(kind, key_format, passphrase)

    key = load_private_key(ssh_host(text, passphrase))

    assert isinstance(key, key_class)
    assert f"{key.get_name()} {key.get_base64()}" == " ".join(public.split()[:2])


@pytest.mark.parametrize("given", [None, "wrong-passphrase"])
def test_unreadable_private_key_is_a_connect_error_without_secrets(given: str | None) -> None:
    """A missing or wrong passphrase raises ConnectError that quotes neither key nor phrase."""
    text, _ = private_key_text("ed25519", "openssh", PASSPHRASE)

    with pytest.raises(ConnectError, match="private key cannot be read") as exc_info:
        load_private_key(ssh_host(text, given), name=PRIMARY)

    message = str(exc_info.value)
    assert message.startswith(f"{PRIMARY}: ")
    assert PASSPHRASE not in message
    assert "wrong-passphrase" not in message
    assert text.splitlines()[1] not in message


# -- helpers for the sandbox ----------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def steady(probe: SshMetricsProbe, **thresholds: float) -> SshMetricsProbe:
    """``probe`` with its CPU threshold at 100 %: this machine's CPU is shared with whatever
    else runs on it, so only the cpu_hog test asserts on CPU use."""
    changed = probe.thresholds.model_copy(update={"cpu_percent": 100.0, **thresholds})
    return probe.model_copy(update={"thresholds": changed})


def ssh_probe(target: Target) -> SshMetricsProbe:
    found = target.probes_of(SshMetricsProbe)
    assert found, f"{target.name} has no ssh_metrics probe"
    return found[0]


async def probe_once(
    target: Target, probe: SshMetricsProbe, credentials: dict[str, Any]
) -> ProbeResult:
    """One probe in its own sweep context."""
    async with ProbeContext(zone=ZONE, credentials=credentials) as ctx:
        return await run_probe(target, probe, ctx)


def accepted_logins(state: dict[str, Any], server: str) -> int:
    """How many logins the server's sshd has accepted so far (from its log)."""
    log = Path(state["components"]["servers"][server]["server_dir"]) / "logs" / "sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey")


def other_host_key(kind: str) -> str:
    """A fresh public host key line of ``kind`` that no sandbox server has."""
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


def other_private_key() -> SecretStr:
    """A fresh ed25519 client key that no sandbox server authorizes."""
    text = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    return SecretStr(text)


@pytest.fixture
def servers(sandbox_state: dict[str, Any]) -> dict[str, Any]:
    """The sandbox state; every server fault is healed after the test (by sandbox_state)."""
    return sandbox_state


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()
        for conn in held:
            conn.close()


# -- the probe against the sandbox ---------------------------------------------------------


@integration
async def test_healthy_servers_pass_with_their_metrics(
    servers: dict[str, Any], sandbox_inventory: Inventory, sandbox_credentials: dict[str, Any]
) -> None:
    """Both servers pass, reporting CPU, memory, load, their data mount and active services."""
    targets = [sandbox_inventory.target(name) for name in (PRIMARY, STANDBY)]
    async with ProbeContext(zone=ZONE, credentials=sandbox_credentials) as ctx:
        results = await asyncio.gather(*(run_probe(t, steady(ssh_probe(t)), ctx) for t in targets))

    for target, result in zip(targets, results, strict=True):
        assert result.ok, result.error_message
        assert result.probe_id == "ssh_metrics"
        values = result.values
        assert 0 <= values["cpu_percent"] <= 100
        assert 0 < values["memory_percent"] < 100
        assert values["load_per_cpu"] >= 0
        assert values["cpus"] == os.cpu_count()
        mount = servers["components"]["servers"][target.name]["data_mount"]["path"]
        assert set(values["disks"]) == {mount}
        assert values["disks"][mount] < 90
        assert values["services"] == dict.fromkeys(SERVICES, "active")
        assert result.latency_ms is not None
        assert 500 <= result.latency_ms < 5000  # the CPU sample takes half a second


@integration
async def test_a_sweep_logs_in_once_per_host(
    servers: dict[str, Any], sandbox_inventory: Inventory, sandbox_credentials: dict[str, Any]
) -> None:
    """Three probes of one server in one sweep share one SSH login."""
    target = sandbox_inventory.target(STANDBY)
    probe = steady(ssh_probe(target))
    before = accepted_logins(servers, STANDBY)

    async with ProbeContext(zone=ZONE, credentials=sandbox_credentials) as ctx:
        results = await asyncio.gather(*(run_probe(target, probe, ctx) for _ in range(3)))

    assert [r.ok for r in results] == [True, True, True], [r.error_message for r in results]
    assert accepted_logins(servers, STANDBY) - before == 1


@integration
async def test_cpu_hog_is_infrastructure_overload(
    servers: dict[str, Any],
    sandbox_platform: Sandbox,
    sandbox_inventory: Inventory,
    sandbox_credentials: dict[str, Any],
) -> None:
    """A real busy loop pushes CPU use over a threshold set below one core's share."""
    target = sandbox_inventory.target(PRIMARY)
    cpus = os.cpu_count() or 1
    # one busy core is 100/cpus % of the machine; ask for a little more than half of that
    limit = round(60 / cpus, 1)
    hot = steady(ssh_probe(target), cpu_percent=limit)
    sandbox_platform.inject("cpu_hog", PRIMARY)
    try:
        await asyncio.sleep(0.3)  # the hog is a fresh Python process: let it start spinning
        result = await probe_once(target, hot, sandbox_credentials)
        assert not result.ok
        assert result.faults == (FaultKind.INFRASTRUCTURE_OVERLOAD,)
        assert result.values["cpu_percent"] > limit
        assert re.fullmatch(rf"cpu [\d.]+% > {limit:g}%", result.error_message or "")
        assert result.error_class is None
    finally:
        sandbox_platform.heal(PRIMARY)

    healed = await probe_once(target, steady(ssh_probe(target)), sandbox_credentials)
    assert healed.ok, healed.error_message
    assert "cpu_hog" not in sandbox_platform.status()["active_faults"].get(PRIMARY, [])


@integration
async def test_disk_full_is_infrastructure_overload_naming_the_mount(
    servers: dict[str, Any],
    sandbox_platform: Sandbox,
    sandbox_inventory: Inventory,
    sandbox_credentials: dict[str, Any],
) -> None:
    """A data mount filled to 95 % exceeds the 90 % threshold and the message names it."""
    target = sandbox_inventory.target(STANDBY)
    probe = steady(ssh_probe(target))
    mount = servers["components"]["servers"][STANDBY]["data_mount"]["path"]
    sandbox_platform.inject("disk_full", STANDBY)
    try:
        result = await probe_once(target, probe, sandbox_credentials)
        assert not result.ok
        assert result.faults == (FaultKind.INFRASTRUCTURE_OVERLOAD,)
        assert result.values["disks"][mount] >= 95
        assert result.error_message == f"disk {mount} {result.values['disks'][mount]:g}% > 90%"
        assert result.values["services"] == dict.fromkeys(SERVICES, "active")
    finally:
        sandbox_platform.heal(STANDBY)

    healed = await probe_once(target, probe, sandbox_credentials)
    assert healed.ok, healed.error_message
    assert healed.values["disks"][mount] < 90


@integration
async def test_crashed_service_is_service_down(
    servers: dict[str, Any],
    sandbox_platform: Sandbox,
    sandbox_inventory: Inventory,
    sandbox_credentials: dict[str, Any],
) -> None:
    """A killed game-engine shows as failed while session-worker stays active."""
    target = sandbox_inventory.target(PRIMARY)
    probe = steady(ssh_probe(target))
    sandbox_platform.inject("service_crash", PRIMARY)
    try:
        result = await probe_once(target, probe, sandbox_credentials)
        assert not result.ok
        assert result.faults == (FaultKind.SERVICE_DOWN,)
        assert result.error_message == "game-engine: failed"
        assert result.values["services"] == {"game-engine": "failed", "session-worker": "active"}
        assert result.error_class is None
    finally:
        sandbox_platform.heal(PRIMARY)

    healed = await probe_once(target, probe, sandbox_credentials)
    assert healed.ok, healed.error_message
    assert healed.values["services"]["game-engine"] == "active"


@integration
async def test_inventory_fault_replaces_the_natural_one(
    servers: dict[str, Any],
    sandbox_platform: Sandbox,
    sandbox_inventory: Inventory,
    sandbox_credentials: dict[str, Any],
) -> None:
    """A probe whose inventory entry names a fault reports that fault for a bad answer."""
    target = sandbox_inventory.target(STANDBY)
    probe = steady(ssh_probe(target)).model_copy(update={"fault": FaultKind.SECURITY_ALERT})
    sandbox_platform.inject("service_crash", STANDBY)
    try:
        result = await probe_once(target, probe, sandbox_credentials)
    finally:
        sandbox_platform.heal(STANDBY)

    assert result.faults == (FaultKind.SECURITY_ALERT,)
    assert result.error_message == "game-engine: failed"


@integration
async def test_hung_service_still_looks_active_over_ssh(
    servers: dict[str, Any],
    sandbox_platform: Sandbox,
    sandbox_inventory: Inventory,
    sandbox_credentials: dict[str, Any],
) -> None:
    """A stopped (hung) game-engine still has its process, so the service manager says
    active: this probe cannot see a hang; the game-engine's HTTP probe catches it."""
    target = sandbox_inventory.target(PRIMARY)
    sandbox_platform.inject("service_hang", PRIMARY)
    try:
        result = await probe_once(target, steady(ssh_probe(target)), sandbox_credentials)
    finally:
        sandbox_platform.heal(PRIMARY)

    assert result.ok, result.error_message
    assert result.values["services"]["game-engine"] == "active"


@integration
@pytest.mark.parametrize("key_kind", ["ed25519", "ecdsa"])
async def test_wrong_pinned_host_key_is_a_security_alert_without_login(
    servers: dict[str, Any],
    sandbox_inventory: Inventory,
    sandbox_credentials: dict[str, Any],
    key_kind: str,
) -> None:
    """A server whose host key is not the pinned one is a security alert, never logged in to."""
    target = sandbox_inventory.target(PRIMARY)
    block_name = target.connection.block
    assert block_name is not None
    real: SshHost = sandbox_credentials[block_name]
    forged = real.model_copy(update={"host_key": other_host_key(key_kind)})
    before = accepted_logins(servers, PRIMARY)

    result = await probe_once(target, ssh_probe(target), {block_name: forged})

    assert not result.ok
    assert result.faults == (FaultKind.SECURITY_ALERT,)
    assert result.error_class == "HostKeyMismatch"
    message = result.error_message or ""
    assert message.startswith(f"{PRIMARY}: host key mismatch at 127.0.0.1:")
    assert real.host_key.split()[1] not in message  # fingerprints only, not key material
    assert "SHA256:" in message
    assert result.values == {}
    assert accepted_logins(servers, PRIMARY) == before


@integration
async def test_unreachable_port_is_service_down(
    sandbox_inventory: Inventory, sandbox_credentials: dict[str, Any]
) -> None:
    """Nothing listening on the server's port is a ConnectError, reported as service_down."""
    target = sandbox_inventory.target(STANDBY)
    port = free_port()
    moved = target.model_copy(
        update={"connection": target.connection.model_copy(update={"port": port})}
    )

    result = await probe_once(moved, ssh_probe(moved), sandbox_credentials)

    assert not result.ok
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.error_class == "ConnectError"
    assert result.error_message == f"{STANDBY}: SSH connection to 127.0.0.1:{port} refused"


@integration
async def test_silent_server_times_out_within_the_probe_timeout(
    sandbox_inventory: Inventory, sandbox_credentials: dict[str, Any], silent_server: int
) -> None:
    """A port that accepts but never sends an SSH banner is a ProbeTimeout within the timeout."""
    target = sandbox_inventory.target(STANDBY)
    moved = target.model_copy(
        update={"connection": target.connection.model_copy(update={"port": silent_server})}
    )
    probe = ssh_probe(moved).model_copy(update={"timeout": 1.0})
    started = time.monotonic()

    result = await probe_once(moved, probe, sandbox_credentials)

    assert time.monotonic() - started < 1.8
    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.error_class == "ProbeTimeout"
    assert "did not connect within 1 s" in (result.error_message or "")


@integration
async def test_refused_login_is_a_connect_error(
    sandbox_inventory: Inventory, sandbox_credentials: dict[str, Any]
) -> None:
    """A client key the server does not authorize is a ConnectError naming the refused login."""
    target = sandbox_inventory.target(PRIMARY)
    block_name = target.connection.block
    assert block_name is not None
    real: SshHost = sandbox_credentials[block_name]
    stranger = real.model_copy(update={"private_key": other_private_key()})

    result = await probe_once(target, ssh_probe(target), {block_name: stranger})

    assert result.faults == (FaultKind.SERVICE_DOWN,)
    assert result.error_class == "ConnectError"
    assert result.error_message == (
        f"{PRIMARY}: SSH login as {real.username} at 127.0.0.1:{real.port} refused"
    )


@integration
@pytest.mark.parametrize(
    ("disk_command", "error_class", "message"),
    [
        ("echo nothing like df", "ProtocolError", "not df -P format: 'nothing like df'"),
        ("true", "ProtocolError", "disk command printed no df -P header"),
        ("echo 'no such disk' >&2; exit 2", "CommandFailed", "disk command exited 2: no such"),
    ],
)
async def test_bad_disk_command_output_is_a_clear_error(
    sandbox_inventory: Inventory,
    sandbox_credentials: dict[str, Any],
    disk_command: str,
    error_class: str,
    message: str,
) -> None:
    """A disk command printing something else, or failing, is reported as such, not ignored."""
    target = sandbox_inventory.target(STANDBY)
    block_name = target.connection.block
    assert block_name is not None
    real: SshHost = sandbox_credentials[block_name]
    odd = real.model_copy(update={"disk_command": disk_command})

    result = await probe_once(target, ssh_probe(target), {block_name: odd})

    assert result.faults == (FaultKind.API_INTEGRATION_ERROR,)
    assert result.error_class == error_class
    assert message in (result.error_message or "")


# -- the adapter, as runbooks use it -------------------------------------------------------


@integration
def test_remote_shell_runs_commands_and_reports_exit_status(
    sandbox_credentials: dict[str, Any],
) -> None:
    """run gives exit status, stdout and stderr; check=True turns a failure into CommandFailed."""
    block: SshHost = sandbox_credentials[f"sandbox-{STANDBY}"]
    with RemoteShell(block, name=STANDBY) as shell:
        done = shell.run("echo out; echo err >&2; exit 3", timeout=5)
        status = shell.run(f"{block.service_command} status game-engine", timeout=10)
        with pytest.raises(CommandFailed, match=r"`exit 7` exited 7"):
            shell.run("exit 7", timeout=5, check=True)

    assert (done.exit_code, done.stdout, done.stderr, done.ok) == (3, "out\n", "err\n", False)
    assert 0 < done.duration_ms < 5000
    assert status.ok
    assert status.stdout.startswith("game-engine active (running)")
    with pytest.raises(ConnectError, match="not open"):
        shell.run("true", timeout=1)


@integration
def test_remote_shell_bounds_a_command_by_its_timeout(
    sandbox_credentials: dict[str, Any],
) -> None:
    """A command running past its timeout raises ProbeTimeout at the deadline."""
    block: SshHost = sandbox_credentials[f"sandbox-{STANDBY}"]
    with RemoteShell(block, name=STANDBY) as shell:
        started = time.monotonic()
        with pytest.raises(ProbeTimeout, match=r"`sleep 2` did not finish within 0.3 s"):
            shell.run("sleep 2", timeout=0.3)
        assert time.monotonic() - started < 1.0
        assert shell.run("echo still usable", timeout=5).stdout == "still usable\n"


@integration
def test_remote_shell_refuses_an_unpinned_host_key(
    sandbox_credentials: dict[str, Any],
) -> None:
    """Connecting under another pinned key raises HostKeyMismatch, a ConnectError."""
    block: SshHost = sandbox_credentials[f"sandbox-{STANDBY}"]
    forged = block.model_copy(update={"host_key": other_host_key("ed25519")})
    shell = RemoteShell(forged, name=STANDBY)
    with pytest.raises(HostKeyMismatch, match="host key mismatch") as exc_info:
        shell.connect(timeout=5)
    assert isinstance(exc_info.value, ConnectError)
    with pytest.raises(ConnectError, match="not open"):
        shell.run("true", timeout=1)
