"""A throwaway PostgreSQL server on loopback, for tests and the sandbox game database.

``LocalPostgres`` runs ``initdb`` (trust authentication, superuser ``postgres``) into a data
folder and starts the server with ``pg_ctl -w`` listening on 127.0.0.1 only, its Unix socket
inside the data folder. PostgreSQL refuses to run as root, so under root every server binary
runs as the ``postgres`` system user through ``runuser`` and the data folder is handed to it;
as any other user the binaries run directly.

    with LocalPostgres(tmp / "pg", port) as pg:
        url = pg.create_database("game")   # postgresql+psycopg://postgres@127.0.0.1:PORT/game
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from floorwatch.errors import SandboxError

SUPERUSER = "postgres"
SYSTEM_USER = "postgres"  # the OS account the server runs as when we are root
CONF_NAME = "floorwatch.conf"  # our settings, rewritten at every start (port may change)
LOG_NAME = "postgres.log"
COMMAND_TIMEOUT_S = 60.0
PG_CTL_WAIT_S = 30
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; PostgreSQL appends "/.s.PGSQL.NNNNN"


def find_bin_dir() -> Path:
    """The folder of the newest installed PostgreSQL's binaries (initdb, pg_ctl, postgres)."""
    versioned: list[tuple[int, Path]] = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        if bin_dir.parent.name.isdigit() and (bin_dir / "initdb").is_file():
            versioned.append((int(bin_dir.parent.name), bin_dir))
    if versioned:
        return max(versioned)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise SandboxError(
        "PostgreSQL is not installed: no initdb in /usr/lib/postgresql/*/bin or on PATH "
        "(install the postgresql package)"
    )


class LocalPostgres:
    """One PostgreSQL server owning ``data_dir``, listening on ``host:port``.

    ``fast=True`` turns off fsync, synchronous commit and full-page writes: a crash may lose
    the data, which is fine for tests and the sandbox, never for a real store. An existing,
    initialised ``data_dir`` is reused, so the sandbox can restart its database.
    """

    def __init__(
        self, data_dir: Path, port: int, host: str = "127.0.0.1", *, fast: bool = False,
        tcp: bool = True,
    ) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise SandboxError(f"LocalPostgres listens on loopback only, not on {host!r}")
        if not 0 < port < 65536:
            raise SandboxError(f"LocalPostgres: port {port} is out of range")
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        self.fast = fast
        # tcp=False: only the Unix socket in the data folder (0700), so only the owner of
        # the folder (and root) can connect at all, trust authentication notwithstanding.
        self.tcp = tcp
        self.user = SUPERUSER
        self._as_root = os.geteuid() == 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Initialise the data folder if needed and start the server; return once it accepts
        connections. Raises ``SandboxError`` with the server log when it does not start."""
        bin_dir = find_bin_dir()
        if self.running():
            raise SandboxError(f"PostgreSQL in {self.data_dir} is already running")
        self._prepare_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        self._write_conf()
        log = self.data_dir / LOG_NAME
        result = self._run(
            [
                str(bin_dir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                str(PG_CTL_WAIT_S),
                "-D",
                str(self.data_dir),
                "-l",
                str(log),
            ],
            what="pg_ctl start",
            check=False,
        )
        if result.returncode != 0:
            tail = _tail(log)
            # A half-started postmaster would outlive us: make sure nothing is left.
            self._force_stop(bin_dir)
            raise SandboxError(
                f"PostgreSQL on {self.host}:{self.port} did not start "
                f"(pg_ctl exit {result.returncode}): {result.stderr.strip()}\n{tail}"
            )

    def stop(self) -> None:
        """Fast shutdown (disconnect clients, no waiting for them); returns when no server
        process is left. Stopping a server that is not running does nothing."""
        pid = self._postmaster_pid()
        if pid is None or not _alive(pid):
            return
        bin_dir = find_bin_dir()
        result = self._run(
            [
                str(bin_dir / "pg_ctl"),
                "stop",
                "-m",
                "fast",
                "-w",
                "-t",
                str(PG_CTL_WAIT_S),
                "-D",
                str(self.data_dir),
            ],
            what="pg_ctl stop",
            check=False,
        )
        if result.returncode != 0 or not _wait_gone(pid, 5.0):
            self._force_stop(bin_dir)
        if _alive(pid):
            raise SandboxError(f"PostgreSQL postmaster {pid} in {self.data_dir} did not exit")

    def running(self) -> bool:
        """Whether a postmaster for this data folder is alive."""
        pid = self._postmaster_pid()
        return pid is not None and _alive(pid)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ databases

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of ``dbname`` on this server (trust auth: no password)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def socket_url(self, dbname: str, driver: str = "asyncpg") -> str:
        """SQLAlchemy URL of ``dbname`` through the Unix socket in the data folder."""
        return (f"postgresql+{driver}://{self.user}@:{self.port}/{dbname}"
                f"?host={self.data_dir}")

    def create_database(self, name: str, exist_ok: bool = False) -> str:
        """Create database ``name`` (kept when ``exist_ok`` and it exists); its URL."""
        if not name or len(name) > 63 or "\x00" in name:
            raise SandboxError(f"invalid PostgreSQL database name {name!r}")
        try:
            with psycopg.connect(
                host=self.host if self.tcp else str(self.data_dir),
                port=self.port,
                user=self.user,
                dbname="postgres",
                autocommit=True,  # CREATE DATABASE cannot run inside a transaction
                connect_timeout=10,
            ) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            if not exist_ok:
                raise SandboxError(f"cannot create database {name!r}: it already exists") from None
        except psycopg.Error as exc:
            raise SandboxError(
                f"cannot create database {name!r} on {self.host}:{self.port}: {exc}"
            ) from exc
        return self.url(name)

    # ------------------------------------------------------------------ internals

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # initdb and postgres refuse a group/world-open folder
        if not self._as_root:
            return
        account = _system_account()
        os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        # The postgres account must reach its folder; pytest's and mkdtemp's folders are 0700
        # root-owned, so name the ancestor that blocks rather than let initdb fail obscurely.
        if _can_traverse(self.data_dir):
            return
        blocker = next(
            (p for p in reversed(self.data_dir.parents) if not _can_traverse(p)), self.data_dir
        )
        raise SandboxError(
            f"the {SYSTEM_USER!r} user cannot traverse {blocker} to reach {self.data_dir}; "
            f"put the data folder under a traversable folder (e.g. chmod o+x {blocker})"
        )

    def _initdb(self, bin_dir: Path) -> None:
        args = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if self.fast:
            args.append("--no-sync")
        self._run(args, what="initdb")
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\ninclude_if_exists = '{CONF_NAME}'\n")

    def _write_conf(self) -> None:
        socket_dir = str(self.data_dir)
        if len(socket_dir) > SOCKET_PATH_MAX:
            if not self.tcp:
                raise SandboxError(f"{self.data_dir} is too long a path for a Unix socket "
                                   f"(at most {SOCKET_PATH_MAX} characters)")
            socket_dir = ""  # too long for a Unix socket path: TCP on loopback only
        lines = [
            f"listen_addresses = '{self.host if self.tcp else ''}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{socket_dir}'",
            "max_connections = 100",
            "shared_buffers = 32MB",
        ]
        if self.fast:
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        path = self.data_dir / CONF_NAME
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if self._as_root:
            account = _system_account()
            os.chown(path, account.pw_uid, account.pw_gid)

    def _force_stop(self, bin_dir: Path) -> None:
        """Immediate shutdown, then SIGKILL: used only when a fast shutdown did not finish."""
        pid = self._postmaster_pid()
        if pid is None or not _alive(pid):
            return
        self._run(
            [str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(self.data_dir)],
            what="pg_ctl stop -m immediate",
            check=False,
        )
        if not _wait_gone(pid, 5.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            _wait_gone(pid, 5.0)

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").split("\n")[0]
        except (FileNotFoundError, NotADirectoryError):
            return None
        return int(first) if re.fullmatch(r"\d+", first.strip()) else None

    def _run(
        self, args: list[str], *, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if self._as_root:
            args = ["runuser", "-u", SYSTEM_USER, "--", *args]
        try:
            result = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
                cwd="/",  # our own cwd may be unreadable for the postgres account
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"{what} did not finish in {COMMAND_TIMEOUT_S:.0f} s") from exc
        if check and result.returncode != 0:
            raise SandboxError(
                f"{what} failed (exit {result.returncode}) for {self.data_dir}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result


def _system_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise SandboxError(
            f"running as root, PostgreSQL needs the {SYSTEM_USER!r} system user, which does "
            "not exist (install the postgresql package)"
        ) from exc


def _can_traverse(path: Path) -> bool:
    probe = subprocess.run(
        ["runuser", "-u", SYSTEM_USER, "--", "test", "-x", str(path)],
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    return probe.returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    # pg_ctl detaches the postmaster, so init reaps it, and an init that reaps lazily leaves
    # a zombie for a second or more: an exited process, whatever signal 0 says.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no procfs: trust signal 0
    return stat.rpartition(")")[2].split()[0:1] != ["Z"]


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
