"""The sandbox servers' service supervisor: a tiny systemd for one simulated server.

One module, two halves:

- the daemon (``python -m sandbox.supervisor --dir D daemon``), one per server, started by
  ``sandbox.servers``. It is the server's "init": a child subreaper, so every process started
  on the server (sshd sessions, anything a session leaves behind) ends up its descendant, is
  reaped here and is killed at shutdown. It runs the server's sshd and its services, and never
  restarts a service that dies: a crash shows as ``failed`` until someone restarts it.
- ``svc`` (``python -m sandbox.supervisor --dir D status NAME``...), the server's systemctl. It
  asks the daemon over a Unix socket in the server folder; ``journal`` and ``df`` read files.

Exit statuses follow systemctl: 0 active / done, 1 failed, 3 not active, 4 no such service.

The server folder::

    server.json          what to run: server name, sshd argv, services (written by sandbox.servers)
    quota.json           the data mount and its declared size, for ``svc df``
    svc.sock, svcd.pid   the daemon's control socket and pid
    state/NAME.json      per service: desired state, state, pid, since, result (rewritten on change)
    logs/NAME.log        per service journal: supervisor lines and the service's own output
    logs/sshd.log        sshd's log (``svc journal sshd``)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from floorwatch.errors import SandboxError

CONFIG_FILE = "server.json"
QUOTA_FILE = "quota.json"
SOCKET_FILE = "svc.sock"
PID_FILE = "svcd.pid"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_ACTIVE = 3
EXIT_UNKNOWN = 4

START_TIMEOUT = 5.0  # a service with a port must accept connections within this
STOP_TIMEOUT = 3.0  # SIGTERM grace before SIGKILL, like systemd's TimeoutStopSec
SHUTDOWN_GRACE = 2.0  # at daemon shutdown, for every process of the server at once
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL
_PR_SET_CHILD_SUBREAPER = 36
_POLL = 0.05


class SvcError(SandboxError):
    """The supervisor refused or failed a request; ``code`` is the exit status ``svc`` uses."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        self.code = code
        super().__init__(message)


class SupervisorUnavailable(SvcError):
    """No supervisor answers on the server's control socket."""


@dataclass(frozen=True)
class UnitStatus:
    """What the supervisor knows about one service."""

    name: str
    state: str  # active | inactive | failed
    desired: str  # running | stopped
    pid: int | None
    since: float | None
    result: str  # success | signal | exit-code | timeout
    detail: str  # e.g. "status=9/KILL"
    port: int | None

    @property
    def active(self) -> bool:
        return self.state == "active"

    def line(self, now: float | None = None) -> str:
        """One systemctl-like line: ``game-engine active (running) pid 42 since ...; 5s ago``."""
        when = ""
        if self.since is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
            ago = _ago((now if now is not None else time.time()) - self.since)
            when = f" since {stamp}; {ago} ago"
        if self.state == "active":
            return f"{self.name} active (running) pid {self.pid}{when}"
        if self.state == "failed":
            return f"{self.name} failed (Result: {self.result}, {self.detail}){when}"
        return f"{self.name} inactive (dead){when}"


def _ago(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}min {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}min"


def socket_path(server_dir: Path) -> Path:
    """The control socket of the supervisor of ``server_dir``; raises if the path is too long."""
    path = server_dir / SOCKET_FILE
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SandboxError(
            f"server folder path too long for a Unix socket ({len(str(path))} > "
            f"{MAX_SOCKET_PATH} bytes): {path}; use a shorter sandbox folder"
        )
    return path


# --- /proc helpers ----------------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` from /proc (R, S, T, Z...), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may hold spaces and parentheses: the fields start after the last ')'
    return stat.rpartition(")")[2].split()[0]


def process_tree(root: int) -> list[int]:
    """Every live descendant of ``root`` (not ``root`` itself), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = deque(children.get(root, []))
    while queue:
        pid = queue.popleft()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` ([] if it is gone or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


def signal_quietly(pid: int, sig: int, *, group: bool = False) -> None:
    """Send ``sig`` to ``pid`` (or its process group); a process already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


# --- disk usage for `svc df` -------------------------------------------------------------------


def disk_usage(folder: Path) -> int:
    """Bytes really allocated under ``folder`` (like ``du``: blocks, so sparse files count less)."""
    total = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:
            continue
        total += os.stat(current).st_blocks * 512
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                continue  # removed while we counted
    return total


def df_report(server_dir: Path) -> str:
    """``df -P`` output for the server's data mount: its declared size against real usage."""
    quota = json.loads((server_dir / QUOTA_FILE).read_text())
    size_k = int(quota["size_bytes"]) // 1024
    used_k = math.ceil(disk_usage(Path(quota["mount"])) / 1024)
    avail_k = max(size_k - used_k, 0)
    capacity = math.ceil(used_k * 100 / size_k) if size_k else 100  # df rounds up
    device = str(quota["device"])
    width = max(len(device), len("Filesystem"))
    return (
        f"{'Filesystem':<{width}} 1024-blocks      Used Available Capacity Mounted on\n"
        f"{device:<{width}} {size_k:>11} {used_k:>9} {avail_k:>9} {capacity:>7}% "
        f"{quota['mount']}\n"
    )


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of ``path`` (reads at most the last 1 MiB)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 1024 * 1024, 0))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    kept = text.splitlines()[-lines:] if lines > 0 else []
    return "".join(line + "\n" for line in kept)


# --- the daemon --------------------------------------------------------------------------------


@dataclass
class _Unit:
    name: str
    argv: list[str]
    port: int | None
    enabled: bool
    desired: str = "stopped"
    state: str = "inactive"
    pid: int | None = None
    since: float | None = None
    result: str = "success"
    detail: str = ""
    stopping: bool = False

    def status(self) -> UnitStatus:
        return UnitStatus(
            self.name, self.state, self.desired, self.pid, self.since, self.result,
            self.detail, self.port,
        )  # fmt: skip


def _exit_detail(status: int) -> tuple[str, str, str]:
    """(state, result, detail) of a service that exited on its own with wait ``status``."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name.removeprefix("SIG")
        return "failed", "signal", f"status={sig}/{name}"
    code = os.WEXITSTATUS(status)
    if code == 0:
        return "inactive", "success", "status=0/SUCCESS"
    return "failed", "exit-code", f"status={code}"


class _Daemon:
    """The supervisor of one server folder."""

    def __init__(self, server_dir: Path) -> None:
        self.dir = server_dir.resolve()
        config = json.loads((self.dir / CONFIG_FILE).read_text())
        self.server: str = config["server"]
        self.sshd_argv: list[str] = list(config["sshd"])
        self.env: dict[str, str] = {str(k): str(v) for k, v in config.get("env", {}).items()}
        self.units: dict[str, _Unit] = {
            name: _Unit(name, list(spec["argv"]), spec.get("port"), bool(spec.get("enabled")))
            for name, spec in config["services"].items()
        }
        self.sshd_pid: int | None = None
        self.sshd_exit: str | None = None
        self.stop_requested = False

    # logging
    def log(self, message: str) -> None:
        print(f"{_stamp()} {self.server} svcd[{os.getpid()}]: {message}", flush=True)

    def journal(self, unit: _Unit, message: str) -> None:
        line = f"{_stamp()} {self.server} svc[{os.getpid()}]: {unit.name}: {message}\n"
        with (self.dir / "logs" / f"{unit.name}.log").open("a") as handle:
            handle.write(line)

    def save(self, unit: _Unit) -> None:
        """Rewrite ``state/NAME.json`` atomically, so readers never see half a file."""
        path = self.dir / "state" / f"{unit.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(unit.status()) | {"argv": unit.argv}, indent=1))
        tmp.replace(path)

    # processes
    def spawn(self, argv: Sequence[str], log_path: Path) -> int:
        """Start ``argv`` in its own session with output appended to ``log_path``."""
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", "/"),
            **self.env,
        }
        return os.posix_spawn(argv[0], list(argv), env, file_actions=actions, setsid=True)

    def reap(self) -> None:
        """Collect every exited child: services, sshd and adopted orphans alike."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.on_exit(pid, status)

    def on_exit(self, pid: int, status: int) -> None:
        if pid == self.sshd_pid:
            self.sshd_pid = None
            self.sshd_exit = _exit_detail(status)[2]
            self.log(f"sshd exited ({self.sshd_exit}); see {self.dir / 'logs' / 'sshd.log'}")
            return
        for unit in self.units.values():
            if unit.pid != pid:
                continue
            unit.pid = None
            unit.since = time.time()
            if unit.stopping:
                unit.state, unit.result, unit.detail = "inactive", "success", ""
            else:
                # no Restart=: a service that dies stays dead until someone restarts it
                unit.state, unit.result, unit.detail = _exit_detail(status)
                self.journal(unit, f"main process exited, {unit.detail}")
                if unit.state == "failed":
                    self.journal(unit, f"failed with result '{unit.result}'")
            self.save(unit)
            return

    def wait_gone(self, unit: _Unit, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            if unit.pid != pid:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)

    def start_unit(self, unit: _Unit) -> None:
        unit.desired = "running"
        if unit.state == "active" and unit.pid is not None:
            self.save(unit)
            return
        self.journal(unit, "starting")
        pid = self.spawn(unit.argv, self.dir / "logs" / f"{unit.name}.log")
        unit.pid, unit.state, unit.since = pid, "active", time.time()
        unit.result, unit.detail, unit.stopping = "success", "", False
        self.save(unit)
        if unit.port is not None:
            self.wait_listening(unit, pid, unit.port)
        self.journal(unit, f"started (pid {pid})")

    def wait_listening(self, unit: _Unit, pid: int, port: int) -> None:
        """Like Type=notify: the start job ends when the service accepts connections."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.reap()
            if unit.pid != pid:
                raise SvcError(
                    f"{unit.name} on {self.server} exited while starting ({unit.detail}); "
                    f"see: svc journal {unit.name}"
                )
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(_POLL)
        self.stop_unit(unit)
        unit.state, unit.result, unit.detail = "failed", "timeout", f"no listener on port {port}"
        unit.desired = "running"
        self.save(unit)
        self.journal(unit, f"start timed out after {START_TIMEOUT:g}s: nothing listens on {port}")
        raise SvcError(f"{unit.name} on {self.server} did not listen on port {port} in time")

    def stop_unit(self, unit: _Unit) -> None:
        unit.desired = "stopped"
        pid = unit.pid
        if pid is None:
            if unit.state == "failed":
                unit.state, unit.result, unit.detail = "inactive", "success", ""
            self.save(unit)
            return
        self.journal(unit, f"stopping (pid {pid})")
        unit.stopping = True
        # SIGCONT after SIGTERM, as systemd does, so a stopped (hung) process can act on it
        signal_quietly(pid, signal.SIGTERM, group=True)
        signal_quietly(pid, signal.SIGCONT, group=True)
        if not self.wait_gone(unit, pid, STOP_TIMEOUT):
            self.journal(unit, f"did not stop in {STOP_TIMEOUT:g}s, killing")
            signal_quietly(pid, signal.SIGKILL, group=True)
            if not self.wait_gone(unit, pid, 2.0):
                raise SvcError(f"{unit.name} on {self.server}: pid {pid} survived SIGKILL")
        unit.stopping = False
        self.journal(unit, "stopped")
        self.save(unit)

    # requests
    def lookup(self, names: Iterable[str]) -> list[_Unit]:
        units = []
        for name in names:
            if name not in self.units:
                raise SvcError(
                    f"unknown service {name!r} on {self.server} (known: {', '.join(self.units)})",
                    EXIT_UNKNOWN,
                )
            units.append(self.units[name])
        return units

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        names = [str(n) for n in request.get("names", [])]
        if op in ("status", "start", "stop", "restart") and not names:
            raise SvcError(f"{op}: name at least one service")
        units = self.lookup(names) if names else list(self.units.values())
        if op == "start":
            for unit in units:
                self.start_unit(unit)
        elif op == "stop":
            for unit in units:
                self.stop_unit(unit)
        elif op == "restart":
            for unit in units:
                self.stop_unit(unit)
                self.start_unit(unit)
        elif op not in ("status", "list", "info"):
            raise SvcError(f"unknown request {op!r}")
        self.reap()
        return {
            "ok": True,
            "server": self.server,
            "pid": os.getpid(),
            "sshd": {"pid": self.sshd_pid, "exit": self.sshd_exit},
            "units": [asdict(unit.status()) for unit in units],
        }

    def serve_one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2.0)
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                request = json.loads(data)
                if not isinstance(request, dict):
                    raise SvcError("request must be a JSON object")
                reply = self.handle(request)
            except SvcError as exc:
                reply = {"ok": False, "code": exc.code, "error": str(exc)}
            except (OSError, ValueError) as exc:
                reply = {"ok": False, "code": EXIT_FAILED, "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):  # the client may have given up
                conn.sendall(json.dumps(reply).encode() + b"\n")

    # life cycle
    def run(self) -> int:
        os.chdir(self.dir)
        for sub in ("state", "logs"):
            (self.dir / sub).mkdir(exist_ok=True)
        # become the reaper of every orphan of this server (sshd sessions, nohup'd commands),
        # so nothing the server started outlives it or lingers as a zombie
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            self.log(f"warning: PR_SET_CHILD_SUBREAPER failed (errno {ctypes.get_errno()})")
        parent = os.getppid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.request_stop)
        path = socket_path(self.dir)
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        (self.dir / PID_FILE).write_text(f"{os.getpid()}\n")
        self.log(f"supervising {self.server}: {', '.join(self.units)}")
        try:
            self.sshd_pid = self.spawn(self.sshd_argv, self.dir / "logs" / "sshd.log")
            for unit in self.units.values():
                self.save(unit)
            for unit in self.units.values():
                if unit.enabled:
                    try:
                        self.start_unit(unit)
                    except SvcError as exc:
                        self.log(str(exc))
            with selectors.DefaultSelector() as selector:
                selector.register(listener, selectors.EVENT_READ)
                while not self.stop_requested:
                    self.reap()
                    if os.getppid() != parent:
                        self.log("parent gone: shutting the server down")
                        break
                    if selector.select(timeout=0.2):
                        conn, _ = listener.accept()
                        self.serve_one(conn)
        finally:
            listener.close()
            path.unlink(missing_ok=True)
            self.shutdown()
            (self.dir / PID_FILE).unlink(missing_ok=True)
        return 0

    def request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def shutdown(self) -> None:
        """Stop everything this server runs: services, sshd, sessions and adopted orphans."""
        self.log("shutting down")
        for unit in self.units.values():
            if unit.pid is not None:
                unit.stopping = True
        pids = process_tree(os.getpid())
        for pid in pids:
            signal_quietly(pid, signal.SIGTERM)
            signal_quietly(pid, signal.SIGCONT)
        if not self.wait_no_children(SHUTDOWN_GRACE):
            for pid in process_tree(os.getpid()):
                signal_quietly(pid, signal.SIGKILL)
            if not self.wait_no_children(2.0):
                self.log(f"processes left after SIGKILL: {process_tree(os.getpid())}")
        for unit in self.units.values():
            if unit.stopping:
                unit.stopping = False
                self.journal(unit, "stopped (server shutdown)")
            unit.desired = "stopped"
            self.save(unit)
        self.log("stopped")

    def wait_no_children(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            if not process_tree(os.getpid()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- the client --------------------------------------------------------------------------------


class SvcClient:
    """Talks to one server's supervisor over its control socket."""

    def __init__(self, server_dir: Path, timeout: float = 30.0) -> None:
        self.dir = server_dir
        self.timeout = timeout

    def call(self, op: str, names: Sequence[str] = ()) -> dict[str, Any]:
        """Send one request; raise SvcError (with svc's exit code) if the supervisor refuses."""
        path = socket_path(self.dir)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(self.timeout)
                conn.connect(str(path))
                conn.sendall(json.dumps({"op": op, "names": list(names)}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise SupervisorUnavailable(f"no supervisor answers on {path}: {exc}") from exc
        except OSError as exc:
            raise SvcError(f"supervisor at {path} failed during {op!r}: {exc}") from exc
        try:
            reply: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise SvcError(f"supervisor at {path} answered garbage to {op!r}: {data!r}") from exc
        if not reply.get("ok"):
            raise SvcError(str(reply.get("error")), int(reply.get("code", EXIT_FAILED)))
        return reply

    def units(self, op: str, names: Sequence[str] = ()) -> list[UnitStatus]:
        return [UnitStatus(**unit) for unit in self.call(op, names)["units"]]

    def status(self, name: str) -> UnitStatus:
        """The status of one service."""
        return self.units("status", [name])[0]

    def start(self, name: str) -> UnitStatus:
        return self.units("start", [name])[0]

    def stop(self, name: str) -> UnitStatus:
        return self.units("stop", [name])[0]

    def restart(self, name: str) -> UnitStatus:
        return self.units("restart", [name])[0]

    def list(self) -> list[UnitStatus]:
        return self.units("list")


# --- the svc command ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svc", description="Control the services of a sandbox server, like systemctl."
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=os.environ.get("FLOORWATCH_SERVER_DIR"),
        help="server folder (default: $FLOORWATCH_SERVER_DIR)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("status", "start", "stop", "restart"):
        sub.add_parser(command).add_argument("names", nargs="+", metavar="NAME")
    sub.add_parser("list", help="every service and its state")
    journal = sub.add_parser("journal", help="the tail of a service's log (or sshd's)")
    journal.add_argument("name", metavar="NAME")
    journal.add_argument("-n", "--lines", type=int, default=20)
    sub.add_parser("df", help="usage of the data mount, as df -P prints it")
    sub.add_parser("daemon", help="run the supervisor (started by sandbox.servers)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``svc``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.dir is None:
        print("svc: no server folder: pass --dir or set FLOORWATCH_SERVER_DIR", file=sys.stderr)
        return EXIT_FAILED
    server_dir: Path = args.dir
    try:
        if args.command == "daemon":
            return _Daemon(server_dir).run()
        if args.command == "df":
            sys.stdout.write(df_report(server_dir))
            return EXIT_OK
        if args.command == "journal":
            return _journal(server_dir, args.name, args.lines)
        client = SvcClient(server_dir)
        if args.command == "list":
            for unit in client.list():
                port = f" port {unit.port}" if unit.port is not None else ""
                print(f"{unit.line()}{port}")
            return EXIT_OK
        units = client.units(args.command, args.names)
    except SvcError as exc:
        print(f"svc: {exc}", file=sys.stderr)
        return exc.code
    except (SandboxError, OSError, ValueError, KeyError) as exc:
        print(f"svc: {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.command != "status":
        return EXIT_OK  # like systemctl, start/stop/restart are silent when they succeed
    for unit in units:
        print(unit.line())
    return EXIT_OK if all(unit.active for unit in units) else EXIT_NOT_ACTIVE


def _journal(server_dir: Path, name: str, lines: int) -> int:
    known = [*json.loads((server_dir / CONFIG_FILE).read_text())["services"], "sshd"]
    if name not in known:
        print(f"svc: no journal for {name!r} (known: {', '.join(known)})", file=sys.stderr)
        return EXIT_UNKNOWN
    sys.stdout.write(tail(server_dir / "logs" / f"{name}.log", lines))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
