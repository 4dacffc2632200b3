"""A local Prefect server (`prefect server start`) as a child process: the main job's
orchestration backend and the integration tests' real server."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx

from floorwatch.errors import FloorwatchError

STARTUP_TIMEOUT_S = 90.0


AUTH_FILE = "api-auth"


def api_auth_string(home: Path) -> str:
    """The Prefect API's basic-auth credential (``user:password``), made on first use and
    kept in ``<home>/api-auth`` (mode 600): the server refuses requests without it, and the
    UI asks for it."""
    path = home / AUTH_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"floorwatch:{secrets.token_urlsafe(24)}\n")
    return path.read_text().strip()


def prefect_env(home: Path, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """Settings every Floorwatch process shares with its Prefect server.

    The batch sizes avoid SQLite "database is locked" stalls under bursts of task runs
    (5-15 s stalls measured at the defaults, under 3 s at 100). Flow heartbeats stay on:
    they are how the server notices a crashed flow run, and our flows are async, which do
    not pay the heartbeat thread's second.
    """
    api_url = f"http://{host}:{port}/api"
    auth = api_auth_string(home)
    return {
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_API_AUTH_STRING": auth,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
    }


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` asking Linux to send SIGTERM to the server when the process that
    started it dies, however it dies (even SIGKILL), so no server outlives its main job."""
    parent = os.getpid()

    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return arrange


PR_SET_PDEATHSIG = 1


class PrefectServer:
    """``prefect server start`` on 127.0.0.1, healthy when ``start`` returns."""

    def __init__(self, home: Path, port: int = 4200, host: str = "127.0.0.1",
                 database_url: str | None = None) -> None:
        self.home = home.resolve()
        self.port = port
        self.host = host
        # None: Prefect's own SQLite file in ``home``. The URL reaches only the server
        # process: clients talk to the API, never to the database.
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        return prefect_env(self.home, self.port, self.host)

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        if _healthy(self.api_url, api_auth_string(self.home)):
            raise FloorwatchError(
                f"something already answers on {self.ui_url}; stop it or choose another --port"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(self.env())
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        prefect = Path(sys.executable).with_name("prefect")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(prefect), "server", "start", "--host", self.host, "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FloorwatchError(
                    f"prefect server exited with code {self.proc.returncode}; "
                    f"see {self.log_path}:\n{self._tail()}"
                )
            if _healthy(self.api_url, api_auth_string(self.home)):
                return self
            time.sleep(0.25)
        self.stop()
        raise FloorwatchError(f"prefect server not healthy within {timeout:.0f} s:\n{self._tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def _tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _healthy(api_url: str, auth: str) -> bool:
    user, _, password = auth.partition(":")
    try:
        response = httpx.get(f"{api_url}/health", timeout=1.0, auth=(user, password))
        return response.status_code == 200
    except httpx.HTTPError:
        return False
