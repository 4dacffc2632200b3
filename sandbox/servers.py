"""Application servers reached over real OpenSSH: app-primary and app-standby.

Each server is a folder under ``<sandbox>/servers/`` run by its own supervisor process
(``sandbox.supervisor``, the server's init and systemd): the supervisor starts the server's
own ``sshd -D -e -f CONFIG`` on 127.0.0.1 (own ed25519 host key, key-only login) and the
services (game-engine with an HTTP/1.0 ``/health`` port, session-worker), reaps every orphan
of the server, and kills everything at shutdown. The services are children of the supervisor,
never of an sshd session, so a restart done over SSH survives the session.

How an SSH client reaches ``svc`` (the server's systemctl): ``describe()`` gives its absolute
path, which works in any session and is what automation should run. For people, sshd's
``SetEnv PATH=<server>/bin:...`` also puts it first on the session PATH (sshd applies SetEnv
after its built-in default PATH; exec_command runs ``$SHELL -c CMD``, which keeps it), so
``svc status game-engine`` works as typed. No authorized_keys ``environment=`` or
PermitUserEnvironment needed.

Faults, per server: ``service_crash`` (SIGKILL game-engine; not restarted), ``service_hang``
(SIGSTOP game-engine; its port accepts and never answers), ``disk_full`` (real bytes fill the
data mount to 95 % of its declared size, as ``svc df`` shows), ``cpu_hog`` (a busy loop for
``cpu_hog_seconds``, then it exits by itself).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import pwd
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floorwatch.errors import SandboxError
from sandbox.component import Component
from sandbox.supervisor import (
    CONFIG_FILE,
    QUOTA_FILE,
    SupervisorUnavailable,
    SvcClient,
    SvcError,
    UnitStatus,
    cmdline,
    disk_usage,
    proc_state,
    process_tree,
    signal_quietly,
    socket_path,
    tail,
)
from sandbox.topology import HOST, SERVER_SERVICES, SERVERS, Layout

SSHD = "/usr/sbin/sshd"
ENGINE = "game-engine"
FAULTS = ("service_crash", "service_hang", "disk_full", "cpu_hog")
QUOTA_BYTES = 64 * 1024 * 1024
DISK_FULL_FRACTION = 0.95
READY_TIMEOUT = 8.0  # both servers: supervisor, sshd, services, a real SSH login
STOP_TIMEOUT = 6.0  # the supervisor's own shutdown is bounded at about 4 s
_CHUNK = 1024 * 1024


def _username() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (sshd refuses a group-readable host key)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_ed25519_key(path: Path, comment: str) -> str:
    """Reuse the OpenSSH-format ed25519 key at ``path`` or make one; returns its public line."""
    key: Ed25519PrivateKey | None = None
    if path.exists():
        loaded = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        key = loaded if isinstance(loaded, Ed25519PrivateKey) else None
    if key is None:
        key = Ed25519PrivateKey.generate()
        _write_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = public.decode()
    path.with_name(path.name + ".pub").write_text(f"{line} {comment}\n")
    return line


def _left(deadline: float) -> float:
    """Seconds to ``deadline``, at least a little, so a last attempt can still succeed."""
    return max(deadline - time.monotonic(), 0.5)


def _q(value: object) -> str:
    """A double-quoted sshd_config argument."""
    text = str(value)
    if '"' in text:
        raise SandboxError(f"sshd_config cannot quote a path holding '\"': {text}")
    return f'"{text}"'


@dataclass
class _Server:
    """One running server: its folder, ports, keys and the faults injected into it."""

    name: str
    dir: Path
    ssh_port: int
    service_ports: dict[str, int | None]
    host_key: str = ""
    supervisor: subprocess.Popen[bytes] | None = None
    sshd_pid: int | None = None
    hog: subprocess.Popen[bytes] | None = None
    hung_pid: int | None = None
    crashed: bool = False

    @property
    def svc(self) -> Path:
        return self.dir / "bin" / "svc"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def fill_file(self) -> Path:
        # a runaway core dump: the classic way a data disk fills up
        return self.data / "tmp" / "core.game-engine.dump"

    @property
    def client(self) -> SvcClient:
        return SvcClient(self.dir)

    def log_tail(self, name: str, lines: int = 15) -> str:
        text = tail(self.dir / "logs" / f"{name}.log", lines).rstrip()
        return f"\n--- {name}.log ---\n{text}" if text else f"\n--- {name}.log is empty ---"


class AppServers(Component):
    """app-primary and app-standby: each its own sshd, supervisor and services on loopback."""

    name = "servers"

    def __init__(
        self,
        layout: Layout,
        *,
        cpu_hog_seconds: float = 120.0,
        quota_bytes: int = QUOTA_BYTES,
    ) -> None:
        super().__init__(layout)
        self.cpu_hog_seconds = cpu_hog_seconds
        self.quota_bytes = quota_bytes
        self.username = _username()
        self._lock = threading.RLock()
        self._servers: dict[str, _Server] = {}

    # --- paths -------------------------------------------------------------------------------

    @property
    def _dir(self) -> Path:
        return self.layout.component_dir(self.name)

    @property
    def client_key_file(self) -> Path:
        """The private key (OpenSSH format, ed25519) that logs in to both servers."""
        return self._dir / "client_ed25519"

    def _new_server(self, name: str) -> _Server:
        ports = {
            service: (self.layout.port(offset) if offset is not None else None)
            for service, offset in SERVER_SERVICES[name].items()
        }
        return _Server(name, self._dir / name, self.layout.ssh_port(name), ports)

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start both servers; returns once each answers a real SSH login running ``svc``."""
        with self._lock:
            if self._servers:
                return
            client_public = ensure_ed25519_key(
                self.client_key_file, f"floorwatch-sandbox-client@{self.username}"
            )
            if os.geteuid() == 0:
                # sshd's privilege separation directory, missing when sshd never ran here
                Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
            servers = [self._new_server(name) for name in SERVERS]
            for server in servers:
                self._prepare(server, client_public)
            try:
                for server in servers:
                    self._servers[server.name] = server
                    self._spawn_supervisor(server)
                deadline = time.monotonic() + READY_TIMEOUT
                for server in servers:
                    self._wait_ready(server, deadline)
            except BaseException:
                self.stop()
                raise

    def _prepare(self, server: _Server, client_public: str) -> None:
        """Write the server folder: keys, sshd_config, supervisor config, quota, svc."""
        for sub in ("bin", "data", "logs", "state"):
            (server.dir / sub).mkdir(parents=True, exist_ok=True)
        socket_path(server.dir)  # fail now, clearly, if the folder path is too long
        host_key = server.dir / "ssh_host_ed25519_key"
        server.host_key = ensure_ed25519_key(host_key, f"root@{server.name}")
        authorized = server.dir / "authorized_keys"
        authorized.write_text(f"{client_public} floorwatch-sandbox\n")
        session_path = f"{server.dir / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
        config = server.dir / "sshd_config"
        lines = [
            f"# sshd for sandbox server {server.name}, written by sandbox.servers",
            f"Port {server.ssh_port}",
            f"ListenAddress {HOST}",
            "AddressFamily inet",
            f"HostKey {_q(host_key)}",
            f"PidFile {_q(server.dir / 'sshd.pid')}",
            f"AuthorizedKeysFile {_q(authorized)}",
            f"AllowUsers {self.username}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"SetEnv {_q('PATH=' + session_path + ':/sbin:/bin')} "
            f"{_q('FLOORWATCH_SERVER=' + server.name)} "
            f"{_q('FLOORWATCH_SERVER_DIR=' + str(server.dir))}",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "UseDNS no",
            # probe sweeps open many sessions at once; the default 10 drops some at random
            "MaxStartups 100:30:200",
            "MaxSessions 32",
            "LoginGraceTime 15",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
        ]
        config.write_text("\n".join(lines) + "\n")
        check = subprocess.run(
            [SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=5
        )
        if check.returncode != 0:
            raise SandboxError(
                f"sshd rejects the configuration of {server.name} ({config}): "
                f"{check.stderr.strip() or check.stdout.strip()}"
            )
        python = [sys.executable, "-I", "-u", "-m", "sandbox.workload"]
        services: dict[str, dict[str, Any]] = {}
        for service, port in server.service_ports.items():
            if service == ENGINE:
                argv = [*python, service, "--server", server.name, "--port", str(port)]
            else:
                argv = [*python, service, "--server", server.name, "--data", str(server.data)]
            services[service] = {"argv": argv, "port": port, "enabled": True}
        supervisor_config = {
            "server": server.name,
            "sshd": [SSHD, "-D", "-e", "-f", str(config)],
            "env": {"FLOORWATCH_SERVER": server.name, "FLOORWATCH_SERVER_DIR": str(server.dir)},
            "services": services,
        }
        (server.dir / CONFIG_FILE).write_text(json.dumps(supervisor_config, indent=1))
        quota = {
            "device": f"sandbox-{server.name}-data",
            "mount": str(server.data),
            "size_bytes": self.quota_bytes,
        }
        (server.dir / QUOTA_FILE).write_text(json.dumps(quota, indent=1))
        server.svc.write_text(
            "#!/bin/sh\n"
            f"# svc for sandbox server {server.name}: its systemctl (sandbox/supervisor.py)\n"
            f"exec {shlex.quote(sys.executable)} -I -m sandbox.supervisor "
            f'--dir {shlex.quote(str(server.dir))} "$@"\n'
        )
        server.svc.chmod(0o755)
        server.fill_file.unlink(missing_ok=True)  # a disk_full left by a crashed run

    def _spawn_supervisor(self, server: _Server) -> None:
        with (server.dir / "logs" / "supervisor.log").open("ab") as log:
            server.supervisor = subprocess.Popen(
                [sys.executable, "-I", "-u", "-m", "sandbox.supervisor",
                 "--dir", str(server.dir), "daemon"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=server.dir,
                start_new_session=True,  # terminal signals meant for the daemon skip it
            )  # fmt: skip

    def _wait_ready(self, server: _Server, deadline: float) -> None:
        """Supervisor answering, sshd up, services active, health 200, a real SSH login."""
        info: dict[str, Any] = {}
        while True:
            self._check_alive(server)
            try:
                # a supervisor still starting services answers late: wait no longer than allowed
                info = SvcClient(server.dir, timeout=_left(deadline)).call("list")
                break
            except SupervisorUnavailable:
                self._check_deadline(server, deadline, "the supervisor to answer")
                time.sleep(0.05)
        sshd = info["sshd"]
        if sshd["pid"] is None:
            raise SandboxError(
                f"servers: sshd of {server.name} exited at start ({sshd['exit']})"
                + server.log_tail("sshd")
            )
        server.sshd_pid = int(sshd["pid"])
        for unit in info["units"]:
            status = UnitStatus(**unit)
            if not status.active:
                raise SandboxError(
                    f"servers: {status.line()} on {server.name} after start"
                    + server.log_tail(status.name)
                )
        self._engine_health(server)
        command = f"{shlex.quote(str(server.svc))} status {' '.join(server.service_ports)}"
        while True:
            try:
                code, out, err = self.run_ssh(server.name, command, timeout=_left(deadline))
            except (paramiko.BadHostKeyException, paramiko.AuthenticationException) as exc:
                raise SandboxError(
                    f"servers: SSH login to {server.name} refused: {exc}" + server.log_tail("sshd")
                ) from exc
            except (paramiko.SSHException, OSError):
                self._check_alive(server)
                self._check_deadline(server, deadline, "an SSH login")
                time.sleep(0.1)
                continue
            if code != 0:
                raise SandboxError(
                    f"servers: `svc status` over SSH on {server.name} exited {code}: "
                    f"{(out + err).strip()}"
                )
            return

    def _check_alive(self, server: _Server) -> None:
        proc = server.supervisor
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise SandboxError(
                f"servers: supervisor of {server.name} exited (status {code})"
                + server.log_tail("supervisor")
            )

    def _check_deadline(self, server: _Server, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise SandboxError(
                f"servers: {server.name} not ready in {READY_TIMEOUT:g}s: waited for {what}"
                + server.log_tail("supervisor")
                + server.log_tail("sshd")
            )

    def _engine_health(self, server: _Server) -> None:
        port = server.service_ports[ENGINE]
        conn = http.client.HTTPConnection(HOST, port, timeout=3)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise SandboxError(
                f"servers: game-engine of {server.name} on port {port} does not answer: {exc}"
            ) from exc
        finally:
            conn.close()
        if response.status != 200:
            raise SandboxError(
                f"servers: game-engine of {server.name} answered {response.status}: {body!r}"
            )

    def stop(self) -> None:
        """Stop both servers: every service, sshd, SSH session and fault process is gone."""
        with self._lock:
            servers = list(self._servers.values())
            for server in servers:
                self._kill_hog(server)
                if server.hung_pid is not None:
                    signal_quietly(server.hung_pid, signal.SIGCONT)
                if server.supervisor is not None and server.supervisor.poll() is None:
                    server.supervisor.terminate()  # its shutdown stops all the server runs
            deadline = time.monotonic() + STOP_TIMEOUT
            for server in servers:
                self._reap_supervisor(server, deadline)
                self._kill_leftovers(server)
                server.fill_file.unlink(missing_ok=True)
            self._servers.clear()

    def _reap_supervisor(self, server: _Server, deadline: float) -> None:
        proc = server.supervisor
        if proc is None:
            return
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            # the supervisor is stuck: kill it and everything below it ourselves
            tree = process_tree(proc.pid)
            proc.kill()
            proc.wait(timeout=2)
            for pid in tree:
                signal_quietly(pid, signal.SIGCONT)
                signal_quietly(pid, signal.SIGKILL)

    def _kill_leftovers(self, server: _Server) -> None:
        """Kill what a supervisor that died uncleanly left: recorded service pids and sshd."""
        recorded: list[tuple[int, list[str]]] = []
        for state_file in (server.dir / "state").glob("*.json"):
            try:
                state = json.loads(state_file.read_text())
            except ValueError:
                continue  # a half-written file from a killed supervisor: nothing to trust
            if state.get("pid"):
                recorded.append((int(state["pid"]), list(state.get("argv", []))))
        pid_file = server.dir / "sshd.pid"
        if pid_file.exists() and pid_file.read_text().strip().isdigit():
            recorded.append((int(pid_file.read_text()), [SSHD, "-D", "-e", "-f"]))
        for pid, argv in recorded:
            # only a process still running that very command: pids get reused
            if argv and cmdline(pid)[: len(argv)] == argv:
                signal_quietly(pid, signal.SIGCONT)
                signal_quietly(pid, signal.SIGKILL)

    # --- description -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Per server: how to log in (host, port, user, key, pinned host key), svc, services."""
        with self._lock:
            described: dict[str, Any] = {}
            for name in SERVERS:
                server = self._servers.get(name) or self._new_server(name)
                host_key = server.host_key
                if not host_key:
                    pub = server.dir / "ssh_host_ed25519_key.pub"
                    host_key = " ".join(pub.read_text().split()[:2]) if pub.exists() else ""
                supervisor = server.supervisor
                described[name] = {
                    "kind": "ssh",
                    "host": HOST,
                    "port": server.ssh_port,
                    "username": self.username,
                    "private_key_file": str(self.client_key_file),
                    "host_key": host_key,
                    "svc": str(server.svc),
                    "services": {
                        service: {"port": port} for service, port in server.service_ports.items()
                    },
                    "data_mount": {"path": str(server.data), "size_bytes": self.quota_bytes},
                    "server_dir": str(server.dir),
                    "pids": {
                        "supervisor": supervisor.pid if supervisor is not None else None,
                        "sshd": server.sshd_pid,
                    },
                }
            return described

    # --- SSH, as a client would use it ---------------------------------------------------------

    def ssh_client(self, target: str, timeout: float = 5.0) -> paramiko.SSHClient:
        """A paramiko client logged in to ``target`` with the pinned host key (RejectPolicy)."""
        info = self.describe()[self._known_target(target)]
        client = paramiko.SSHClient()
        key_type, key_data = info["host_key"].split()[:2]
        client.get_host_keys().add(
            f"[{info['host']}]:{info['port']}",
            key_type,
            paramiko.Ed25519Key(data=base64.b64decode(key_data)),
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
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client

    def run_ssh(self, target: str, command: str, timeout: float = 10.0) -> tuple[int, str, str]:
        """Run ``command`` on ``target`` over SSH: (exit status, stdout, stderr)."""
        client = self.ssh_client(target, timeout=timeout)
        try:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            return stdout.channel.recv_exit_status(), out, err
        finally:
            client.close()

    # --- faults ------------------------------------------------------------------------------

    def faults(self) -> dict[str, list[str]]:
        return {fault: list(SERVERS) for fault in FAULTS}

    def _known_target(self, target: str) -> str:
        if target not in SERVERS:
            raise SandboxError(f"servers: unknown server {target!r} (known: {', '.join(SERVERS)})")
        return target

    def _running(self, target: str) -> _Server:
        self._known_target(target)
        server = self._servers.get(target)
        if server is None:
            raise SandboxError(f"servers: {target} is not running (start the sandbox first)")
        return server

    def inject(self, fault: str, target: str) -> None:
        """Inject ``fault`` into server ``target``; injecting it again changes nothing."""
        self.check_fault(fault, target)
        with self._lock:
            server = self._running(target)
            if fault == "service_crash":
                self._crash(server)
            elif fault == "service_hang":
                self._hang(server)
            elif fault == "disk_full":
                self._fill_disk(server)
            else:
                self._start_hog(server)

    def _engine(self, server: _Server) -> UnitStatus:
        return server.client.status(ENGINE)

    def _crash(self, server: _Server) -> None:
        status = self._engine(server)
        if status.active and status.pid is not None:
            signal_quietly(status.pid, signal.SIGKILL)
            deadline = time.monotonic() + 3
            while self._engine(server).active:  # the supervisor notices within ~0.2 s
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"servers: game-engine on {server.name} still active after SIGKILL"
                    )
                time.sleep(0.05)
        server.crashed = True

    def _hang(self, server: _Server) -> None:
        status = self._engine(server)
        if not status.active or status.pid is None:
            raise SandboxError(
                f"servers: cannot hang game-engine on {server.name}: {status.line()}"
            )
        signal_quietly(status.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while proc_state(status.pid) not in ("T", "t"):
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"servers: game-engine pid {status.pid} on {server.name} did not stop"
                )
            time.sleep(0.02)
        server.hung_pid = status.pid

    def _fill_disk(self, server: _Server) -> None:
        if server.fill_file.exists():
            return
        wanted = int(self.quota_bytes * DISK_FULL_FRACTION) - disk_usage(server.data)
        server.fill_file.parent.mkdir(parents=True, exist_ok=True)
        # real bytes, not a sparse file: du-style usage (what svc df reports) counts blocks
        chunk = os.urandom(_CHUNK)
        try:
            with server.fill_file.open("wb") as handle:
                remaining = max(wanted, 0)
                while remaining > 0:
                    remaining -= handle.write(chunk[: min(remaining, _CHUNK)])
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            server.fill_file.unlink(missing_ok=True)
            raise SandboxError(
                f"servers: disk_full on {server.name} could not write: {exc}"
            ) from exc

    def _start_hog(self, server: _Server) -> None:
        if server.hog is not None and server.hog.poll() is None:
            return
        with (server.dir / "logs" / "cpu-hog.log").open("ab") as log:
            server.hog = subprocess.Popen(
                [sys.executable, "-I", "-u", "-m", "sandbox.workload", "cpu-hog",
                 "--server", server.name, "--seconds", f"{self.cpu_hog_seconds:g}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=server.dir,
                start_new_session=True,
            )  # fmt: skip

    def _kill_hog(self, server: _Server) -> None:
        if server.hog is not None:
            if server.hog.poll() is None:
                server.hog.kill()
            server.hog.wait(timeout=5)
            server.hog = None

    def heal(self, target: str | None = None) -> None:
        """Undo every fault on ``target`` (or on both servers); a stopped sandbox has none."""
        with self._lock:
            names = list(SERVERS) if target is None else [self._known_target(target)]
            for name in names:
                server = self._servers.get(name)
                if server is not None:
                    self._heal(server)

    def _heal(self, server: _Server) -> None:
        self._kill_hog(server)
        server.fill_file.unlink(missing_ok=True)
        if server.hung_pid is not None:
            signal_quietly(server.hung_pid, signal.SIGCONT)
            server.hung_pid = None
        if server.crashed:
            if not self._engine(server).active:
                try:
                    server.client.restart(ENGINE)
                except SvcError as exc:
                    raise SandboxError(
                        f"servers: healing service_crash on {server.name}: {exc}"
                    ) from exc
            server.crashed = False

    def active_faults(self) -> dict[str, list[str]]:
        """Faults in force now, as observed: a fault someone already repaired is not listed."""
        with self._lock:
            active: dict[str, list[str]] = {}
            for name, server in self._servers.items():
                found: list[str] = []
                if server.crashed:
                    if self._engine(server).active:
                        server.crashed = False  # restarted, by a runbook or by hand
                    else:
                        found.append("service_crash")
                if server.hung_pid is not None:
                    if proc_state(server.hung_pid) in ("T", "t"):
                        found.append("service_hang")
                    else:
                        server.hung_pid = None  # continued, or restarted away
                if server.fill_file.exists():
                    found.append("disk_full")
                if server.hog is not None and server.hog.poll() is None:
                    found.append("cpu_hog")
                if found:
                    active[name] = found
            return active
