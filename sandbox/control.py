"""Start, drive and stop a sandbox daemon: what the CLI and the test fixtures call."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from floorwatch.errors import SandboxError
from sandbox.daemon import LOG_FILE, PID_FILE, SOCKET_FILE, STATE_FILE
from sandbox.topology import DEFAULT_BASE_PORT, DEFAULT_TERMINALS

DEFAULT_DIR = Path(".floorwatch/sandbox")
READY_TIMEOUT_S = 40.0
DOWN_TIMEOUT_S = 20.0


class Sandbox:
    """A handle on the sandbox living in ``dir`` (running or not)."""

    def __init__(self, dir: Path | str = DEFAULT_DIR) -> None:
        self.dir = Path(dir).resolve()

    # -- paths -------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def socket_path(self) -> Path:
        return self.dir / SOCKET_FILE

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    def pid(self) -> int | None:
        """The daemon's pid if it is alive."""
        try:
            pid = int((self.dir / PID_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    # -- life cycle ----------------------------------------------------------------------
    def up(
        self,
        base_port: int = DEFAULT_BASE_PORT,
        terminals: int = DEFAULT_TERMINALS,
        chaos: float | None = None,
        gamedb: str = "sqlite",
        seed: int | None = None,
        timeout: float = READY_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Start the daemon and wait until every part answers; returns ``sandbox.json``."""
        if self.pid() is not None:
            raise SandboxError(f"a sandbox already runs in {self.dir} (pid {self.pid()})")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "sandbox.daemon", "--dir", str(self.dir),
               "--base-port", str(base_port), "--terminals", str(terminals), "--gamedb", gamedb]
        if chaos:
            cmd += ["--chaos", str(chaos)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._read_state()
            if state is not None and state.get("ready"):
                return state
            if state is not None and state.get("error"):
                proc.wait(timeout=DOWN_TIMEOUT_S)
                raise SandboxError(f"sandbox failed to start: {state['error']}")
            if proc.poll() is not None:
                raise SandboxError(
                    f"sandbox daemon exited with code {proc.returncode}; "
                    f"last log lines:\n{self._log_tail()}"
                )
            time.sleep(0.05)
        self._kill(proc.pid)
        raise SandboxError(f"sandbox not ready within {timeout:.0f} s; log:\n{self._log_tail()}")

    def down(self, timeout: float = DOWN_TIMEOUT_S) -> bool:
        """Stop the daemon and every part; True if one was running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            self._request("POST", "/down")
        except SandboxError:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.05)
        self._kill(pid)
        raise SandboxError(f"sandbox daemon {pid} did not stop within {timeout:.0f} s; killed")

    # -- control -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self._request("GET", "/status")

    def describe(self) -> dict[str, Any]:
        state = self._read_state()
        if state is None or not state.get("ready"):
            raise SandboxError(f"no sandbox runs in {self.dir} (run `floorwatch sandbox up`)")
        return state

    def inject(self, fault: str, target: str) -> dict[str, Any]:
        return self._request("POST", "/inject", {"fault": fault, "target": target})

    def heal(self, target: str | None = None) -> dict[str, Any]:
        return self._request("POST", "/heal", {"target": target})

    # -- internals -----------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self.socket_path.exists():
            raise SandboxError(f"no sandbox runs in {self.dir} (run `floorwatch sandbox up`)")
        transport = httpx.HTTPTransport(uds=str(self.socket_path))
        try:
            with httpx.Client(transport=transport, base_url="http://sandbox", timeout=60) as c:
                response = c.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise SandboxError(f"sandbox daemon in {self.dir} does not answer: {exc}") from exc
        data = response.json()
        if response.status_code >= 400:
            raise SandboxError(data.get("error", response.text))
        return data

    def _read_state(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    @staticmethod
    def _kill(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
