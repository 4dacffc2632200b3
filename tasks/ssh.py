"""The SSH adapter: one paramiko connection to one host, trusting only its pinned host key.

    with RemoteShell(block, name="app-primary") as shell:
        result = shell.run("systemctl status game-engine", timeout=5)

``RemoteShell`` is blocking (paramiko is); async code opens it with ``open_shell``, which
connects and closes in a worker thread, and calls ``run`` through ``asyncio.to_thread``.
Every call is bounded by its timeout. Library errors are translated here::

    paramiko.BadHostKeyException, an unpinned key   -> HostKeyMismatch (a ConnectError)
    AuthenticationException, unreadable private key -> ConnectError
    refused, unreachable, reset, closed (OSError)   -> ConnectError
    socket timeouts, a deadline passed              -> ProbeTimeout
    any other SSHException                          -> ConnectError
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from blocks.ssh import SshHost
from floorwatch.errors import (
    CommandFailed,
    ConnectError,
    HostKeyMismatch,
    ProbeTimeout,
    ProtocolError,
)

__all__ = ["CommandResult", "RemoteShell", "load_private_key", "open_shell", "pinned_host_key"]

# A command printing more than this is cut off with an error rather than filling memory.
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 65536
_POLL_S = 0.01  # how often a running command is checked for output and its deadline


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did: its exit status, output and how long it took."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0


class _UnpinnedHostKey(paramiko.SSHException):
    """Raised by the host key policy when the server has no pinned key at all."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        self.hostname = hostname
        self.key = key
        super().__init__(f"no pinned host key for {hostname}")


class _RejectUnpinned(paramiko.RejectPolicy):
    """RejectPolicy that says which key was refused; unknown keys are never added."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        raise _UnpinnedHostKey(hostname, key)


def pinned_host_key(host: SshHost) -> paramiko.PKey:
    """The block's pinned public host key as a paramiko key."""
    key_type, blob = host.host_key.split()[:2]
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        raise ConnectError(
            host.host, f"pinned host key type {key_type} is not supported by paramiko"
        ) from exc


def load_private_key(host: SshHost, name: str | None = None) -> paramiko.PKey:
    """The block's private key (ed25519, RSA or ECDSA; OpenSSH, PEM or PKCS#8 text).

    Errors describe the problem, never the key or its passphrase.
    """
    who = name or host.host
    passphrase = host.private_key_passphrase
    password = passphrase.get_secret_value().encode() if passphrase is not None else None
    data = host.private_key.get_secret_value().encode()
    loaded: object
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=password)
        except ValueError:
            # not OpenSSH format: PEM (PKCS#1, SEC1) or PKCS#8
            loaded = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:  # cryptography: a passphrase missing, or given for a plain key
        raise ConnectError(
            who, "private key cannot be read: passphrase missing or not needed"
        ) from exc
    except (ValueError, paramiko.SSHException) as exc:
        raise ConnectError(
            who, "private key cannot be read: wrong passphrase or not a supported key"
        ) from exc
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    else:
        raise ConnectError(
            who, f"private key type {type(loaded).__name__} is not ed25519, RSA or ECDSA"
        )
    # paramiko reads every key type from OpenSSH text, but not all from PKCS#8: re-encode.
    text = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    try:
        return key_class.from_private_key(io.StringIO(text))
    except (paramiko.SSHException, ValueError) as exc:
        raise ConnectError(who, "private key cannot be loaded by paramiko") from exc


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, a socket timeout (paramiko wraps a
    banner timeout in a plain SSHException)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):  # socket.timeout is TimeoutError
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(command: str, limit: int = 60) -> str:
    """The command's first line, cut to ``limit`` characters, for messages."""
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


class RemoteShell:
    """One SSH connection to one host, trusting only the block's pinned host key.

    ``name`` names the target in errors (default: the host). ``address`` and ``port``
    override where to connect (default: the block's host and port); the pinned key is
    required there just the same. Safe to ``run`` from several threads at once: each command
    gets its own channel on the one connection.
    """

    def __init__(
        self,
        host: SshHost,
        *,
        name: str | None = None,
        address: str | None = None,
        port: int | None = None,
    ) -> None:
        self.host = host
        self.name = name or host.host
        self.address = address or host.host
        self.port = port or host.port
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def endpoint(self) -> str:
        """``host:port`` connected to."""
        return f"{self.address}:{self.port}"

    def __repr__(self) -> str:
        return f"RemoteShell({self.host.username}@{self.endpoint}, name={self.name!r})"

    # -- connection ---------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Connect and log in within ``timeout`` seconds (default: the block's connect_timeout).

        Raises HostKeyMismatch, ConnectError or ProbeTimeout; connecting twice is a no-op.
        """
        budget = min(timeout, self.host.connect_timeout) if timeout else self.host.connect_timeout
        with self._lock:
            if self._closed:
                raise ConnectError(self.name, f"SSH connection to {self.endpoint} was closed")
            if self._client is not None:
                return
        pkey = load_private_key(self.host, self.name)
        client = paramiko.SSHClient()
        # Only the pinned key: no ~/.ssh/known_hosts, no system keys, never auto-add.
        where = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        expected = pinned_host_key(self.host)
        client.get_host_keys().add(where, expected.get_name(), expected)
        client.set_missing_host_key_policy(_RejectUnpinned())
        # paramiko bounds each phase (TCP, banner, key exchange, login) separately; the
        # watchdog bounds them together by closing the connection when time is up.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            client.close()

        watchdog = threading.Timer(budget, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            client.connect(
                self.address,
                port=self.port,
                username=self.host.username,
                pkey=pkey,
                timeout=budget,
                banner_timeout=budget,
                auth_timeout=budget,
                channel_timeout=budget,
                look_for_keys=False,
                allow_agent=False,
            )
        except BaseException as exc:
            client.close()
            # anything a closed-under-it paramiko raises after the watchdog is a timeout
            if isinstance(exc, paramiko.SSHException | OSError | EOFError) or (
                expired.is_set() and isinstance(exc, Exception)
            ):
                self._raise_connect_error(exc, expected, budget, timed_out=expired.is_set())
            raise
        finally:
            watchdog.cancel()
        if expired.is_set():  # the watchdog fired just as the login finished
            client.close()
            raise ProbeTimeout(
                self.name, f"SSH to {self.endpoint} did not connect within {budget:g} s"
            )
        with self._lock:
            if self._closed:  # closed by another thread while connecting: do not leak it
                client.close()
                raise ConnectError(self.name, f"SSH connection to {self.endpoint} was closed")
            self._client = client

    def _raise_connect_error(
        self, exc: BaseException, expected: paramiko.PKey, budget: float, *, timed_out: bool
    ) -> NoReturn:
        """Translate a paramiko/socket error from connect into the Floorwatch error tree."""
        where = self.endpoint
        # a wrong host key wins over everything else: it is a security event
        if isinstance(exc, paramiko.BadHostKeyException | _UnpinnedHostKey):
            raise HostKeyMismatch(
                self.name,
                f"host key mismatch at {where}: the server presented {exc.key.get_name()} "
                f"{exc.key.fingerprint}, pinned is {expected.get_name()} {expected.fingerprint}",
            ) from exc
        if timed_out or _timed_out(exc):
            raise ProbeTimeout(
                self.name, f"SSH to {where} did not connect within {budget:g} s"
            ) from exc
        if isinstance(exc, paramiko.AuthenticationException):
            raise ConnectError(
                self.name, f"SSH login as {self.host.username} at {where} refused"
            ) from exc
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            raise ConnectError(self.name, f"SSH connection to {where} refused") from exc
        if isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
            raise ConnectError(self.name, f"SSH connection to {where} failed: {reason}") from exc
        if isinstance(exc, paramiko.SSHException | EOFError):
            reason = str(exc) or type(exc).__name__
            raise ConnectError(self.name, f"SSH to {where} failed: {reason}") from exc
        raise exc

    def close(self) -> None:
        """Close the connection; later calls to ``run`` raise ConnectError."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> RemoteShell:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------

    def run(self, command: str, timeout: float, *, check: bool = False) -> CommandResult:
        """Run ``command`` (through the login shell) and wait at most ``timeout`` seconds.

        Raises ProbeTimeout when it does not finish in time (the channel is closed, which
        sshd turns into SIGHUP for the command), ConnectError when the connection is gone,
        ProtocolError when it prints more than MAX_OUTPUT_BYTES, and with ``check`` also
        CommandFailed when it exits non-zero.
        """
        started = time.monotonic()
        deadline = started + timeout
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            raise ConnectError(self.name, f"SSH connection to {self.endpoint} is not open")
        what = _short(command)
        try:
            channel = transport.open_session(timeout=max(timeout, 0.01))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise ProbeTimeout(
                    self.name, f"no SSH session at {self.endpoint} within {timeout:g} s"
                ) from exc
            raise ConnectError(
                self.name, f"SSH session at {self.endpoint} refused: {exc or type(exc).__name__}"
            ) from exc
        try:
            channel.exec_command(command)
            out, err = self._collect(channel, deadline, what, timeout)
            code = channel.recv_exit_status()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(
                self.name, f"SSH connection to {self.endpoint} lost running `{what}`"
            ) from exc
        finally:
            channel.close()
        result = CommandResult(
            exit_code=code,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            duration_ms=(time.monotonic() - started) * 1000,
        )
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise CommandFailed(
                self.name,
                f"`{what}` exited {code}" + (f": {_short(detail[-1], 200)}" if detail else ""),
            )
        return result

    def _collect(
        self, channel: paramiko.Channel, deadline: float, what: str, timeout: float
    ) -> tuple[bytes, bytes]:
        """Read stdout and stderr until the command exits or the deadline passes."""
        out = bytearray()
        err = bytearray()
        while True:
            busy = False
            while channel.recv_ready():
                out += channel.recv(_READ_CHUNK)
                busy = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(_READ_CHUNK)
                busy = True
            if len(out) + len(err) > MAX_OUTPUT_BYTES:
                raise ProtocolError(
                    self.name, f"`{what}` printed more than {MAX_OUTPUT_BYTES // 1024} KiB"
                )
            # sshd may send the exit status before the last output: done only at EOF too
            if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                while channel.recv_ready():
                    out += channel.recv(_READ_CHUNK)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(_READ_CHUNK)
                return bytes(out), bytes(err)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeTimeout(self.name, f"`{what}` did not finish within {timeout:g} s")
            if not busy:
                time.sleep(min(_POLL_S, left))


@asynccontextmanager
async def open_shell(
    host: SshHost,
    *,
    name: str | None = None,
    address: str | None = None,
    port: int | None = None,
    timeout: float | None = None,
) -> AsyncIterator[RemoteShell]:
    """An async context holding a connected RemoteShell, closed on exit (both in threads)."""
    shell = RemoteShell(host, name=name, address=address, port=port)
    try:
        await asyncio.to_thread(shell.connect, timeout)
    except BaseException:
        # a cancelled connect still runs in its thread: closing marks the shell, so a
        # connection made after all is closed at once instead of leaking
        shell.close()
        raise
    try:
        yield shell
    finally:
        await asyncio.to_thread(shell.close)
