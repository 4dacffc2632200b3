"""The serial adapter: terminals' line consoles, ccTalk bill validators and ESC/POS printers.

Three role objects, one per line protocol, each with one ``query(request) -> reply`` verb and a
few typed helpers on top, all over ``SerialLine``::

    Console(line).query(b"STATUS\\r\\n", timeout=2.0)      -> b"OK state=... *5A\\r\\n"
    CctalkDevice(line, address=40).query(254, timeout=1)  -> cctalk.Frame (ACK)
    EscposPrinter(line).query(ALL_STATUS_REQUESTS, 4, timeout=1) -> 4 status bytes

``SerialLine.exchange`` opens the device with pyserial (8N1 at the target's baud), takes the
device's lock, drops stale input, writes the request and reads until the role's reply is
complete, all within ``timeout``; then it closes the device again, so a sweep holds no file
descriptors between probes. Errors are Floorwatch's:

- the device cannot be opened or the line fails      -> ConnectError
- no (complete) reply in time, or the line stays busy -> ProbeTimeout
- a reply the codec cannot parse (bad checksum, NAK)  -> ProtocolError
- a console that answers ``ERR``                      -> CommandFailed

The lock is a thread lock per device (in this process) plus ``flock`` on the open device (for
other processes: a runbook worker and a sweep on the same host), so two requests never
interleave on one line. Blocking pyserial calls run in a dedicated thread pool: a hall full of
silent terminals, each waiting out its timeout, must not starve the default executor that the
other probes use.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import serial

from floorwatch.errors import ConnectError, ProbeTimeout, ProtocolError
from floorwatch.inventory import Target
from floorwatch.protocols import cctalk, console, escpos

__all__ = [
    "CctalkDevice",
    "Console",
    "EscposPrinter",
    "SerialLine",
    "line_for",
]

T = TypeVar("T")

# A reader gets each chunk of received bytes and returns the reply once it is complete
# (None: not yet); it raises ProtocolError on bytes that cannot start a valid reply.
Reader = Callable[[bytes], T | None]

DEFAULT_BAUD = 9600
POLL_S = 0.05  # longest single wait inside a read or a lock attempt: how far past a deadline
LOCK_POLL_S = 0.01  # retry interval for another process's flock on the device
MAX_WORKERS = 32
DEFAULT_BILL_ADDRESS = 40  # ccTalk's customary address for a bill validator
DEFAULT_HOST_ADDRESS = 1

_executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="floorwatch-serial")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _device_lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


class SerialLine:
    """One serial device, opened for each exchange: 8 data bits, no parity, 1 stop bit.

    ``device`` is a path (symlinks are followed for locking, so two names of one device share
    its lock) or a pyserial URL such as ``socket://host:port``.
    """

    def __init__(self, target: str, device: str, baud: int = DEFAULT_BAUD) -> None:
        self.target = target
        self.device = device
        self.baud = baud

    def __repr__(self) -> str:
        return f"SerialLine({self.target!r}, {self.device!r}, {self.baud})"

    @property
    def _is_url(self) -> bool:
        return "://" in self.device

    async def exchange(self, request: bytes, reader: Reader[T], *, timeout: float) -> T:
        """Send ``request`` and return what ``reader`` makes of the reply, within ``timeout``."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _executor, self.exchange_blocking, request, reader, timeout
        )

    def exchange_blocking(self, request: bytes, reader: Reader[T], timeout: float) -> T:
        """``exchange`` for callers already in a worker thread."""
        if timeout <= 0:
            raise ProbeTimeout(self.target, "no time left to query the serial device")
        deadline = time.monotonic() + timeout
        key = self.device if self._is_url else os.path.realpath(self.device)
        lock = _device_lock(key)
        if not lock.acquire(timeout=timeout):
            raise ProbeTimeout(
                self.target,
                f"serial device busy: another request held it for {_seconds(timeout)} s",
            )
        try:
            port = self._open(max(deadline - time.monotonic(), POLL_S))
            try:
                self._lock_across_processes(port, deadline, timeout)
                return self._transact(port, request, reader, deadline, timeout)
            finally:
                port.close()
        finally:
            lock.release()

    def _open(self, write_timeout: float) -> serial.SerialBase:
        try:
            port: serial.SerialBase = serial.serial_for_url(
                self.device,
                baudrate=self.baud,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=POLL_S,
                write_timeout=write_timeout,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectError(
                self.target, f"cannot open serial device {self.device}: {_reason(exc)}"
            ) from exc
        return port

    def _lock_across_processes(
        self, port: serial.SerialBase, deadline: float, timeout: float
    ) -> None:
        if self._is_url:
            return  # a network port has no file to lock; its server serialises access
        while True:
            try:
                fcntl.flock(port.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ProbeTimeout(
                        self.target,
                        f"serial device busy: another process held it for {_seconds(timeout)} s",
                    ) from None
                time.sleep(LOCK_POLL_S)
            except OSError as exc:
                raise ConnectError(
                    self.target, f"cannot lock serial device {self.device}: {_reason(exc)}"
                ) from exc

    def _transact(
        self,
        port: serial.SerialBase,
        request: bytes,
        reader: Reader[T],
        deadline: float,
        timeout: float,
    ) -> T:
        received = 0
        try:
            # Bytes left over from an earlier request (a late reply) would be taken for ours.
            port.reset_input_buffer()
            port.write(request)
            while time.monotonic() < deadline:
                chunk = port.read(max(1, port.in_waiting))
                if not chunk:
                    continue
                received += len(chunk)
                reply = reader(chunk)
                if reply is not None:
                    return reply
        except serial.SerialTimeoutException as exc:
            raise ProbeTimeout(
                self.target, f"could not send to serial device {self.device} in time"
            ) from exc
        except (serial.SerialException, OSError) as exc:
            raise ConnectError(
                self.target, f"serial device {self.device} failed: {_reason(exc)}"
            ) from exc
        if received:
            raise ProbeTimeout(
                self.target, f"incomplete reply within {_seconds(timeout)} s ({received} bytes)"
            )
        raise ProbeTimeout(self.target, f"no answer within {_seconds(timeout)} s")


def line_for(target: Target) -> SerialLine:
    """The serial line of a hall target, from its connection's device and baud."""
    device = target.connection.device
    if not device:
        raise ConnectError(target.name, "its connection names no serial device")
    return SerialLine(target.name, device, target.connection.baud)


class Console:
    """A gaming terminal's line console (``floorwatch.protocols.console``)."""

    def __init__(self, line: SerialLine) -> None:
        self.line = line

    @classmethod
    def for_target(cls, target: Target) -> Console:
        return cls(line_for(target))

    async def query(self, request: bytes, *, timeout: float) -> bytes:
        """Send one request line; return the one reply line, CRLF included, unparsed."""
        buf = bytearray()

        def read_line(chunk: bytes) -> bytes | None:
            buf.extend(chunk)
            end = buf.find(b"\n")
            if end >= 0:
                return bytes(buf[: end + 1])
            if len(buf) > console.MAX_LINE:
                raise ProtocolError(
                    self.line.target, f"console reply longer than {console.MAX_LINE} bytes"
                )
            return None

        return await self.line.exchange(request, read_line, timeout=timeout)

    async def command(
        self, command: str, argument: str | None = None, *, timeout: float
    ) -> dict[str, str]:
        """Run a console command; its reply fields. ERR -> CommandFailed, garbled -> Protocol."""
        request = _encoded(self.line.target, lambda: console.encode_request(command, argument))
        line = await self.query(request, timeout=timeout)
        return console.parse_reply(line, self.line.target)

    async def push_config(self, config: str, *, timeout: float) -> str:
        """Install ``config`` with CONFIG-PUSH; the configuration hash the terminal reports."""
        request = _encoded(self.line.target, lambda: console.encode_config_push(config))
        fields = console.parse_reply(
            await self.query(request, timeout=timeout), self.line.target
        )
        if "config_hash" not in fields:
            raise ProtocolError(self.line.target, "CONFIG-PUSH reply lacks config_hash")
        return fields["config_hash"]

    async def status(self, *, timeout: float) -> console.TerminalStatus:
        """STATUS, typed."""
        fields = await self.command(console.STATUS, timeout=timeout)
        return console.parse_status(fields, self.line.target)


class CctalkDevice:
    """One ccTalk device at ``address`` on a line, spoken to as host ``host_address``."""

    def __init__(
        self,
        line: SerialLine,
        address: int = DEFAULT_BILL_ADDRESS,
        host_address: int = DEFAULT_HOST_ADDRESS,
    ) -> None:
        self.line = line
        self.address = address
        self.host_address = host_address

    @classmethod
    def for_target(cls, target: Target, host_address: int = DEFAULT_HOST_ADDRESS) -> CctalkDevice:
        """The bill validator of ``target``, at its connection's address (default 40)."""
        address = target.connection.address or DEFAULT_BILL_ADDRESS
        return cls(line_for(target), address, host_address)

    async def query(self, header: int, data: bytes = b"", *, timeout: float) -> cctalk.Frame:
        """Send a request frame; return the device's ACK reply (header 0, with any data).

        NAK, BUSY, or a reply from another address -> ProtocolError.
        """
        target = self.line.target
        request = _encoded(
            target, lambda: cctalk.encode_frame(self.address, self.host_address, header, data)
        )
        frames = cctalk.FrameReader(target)
        frames.expect_echo(request)  # a real one-wire bus echoes the request back

        def read_frame(chunk: bytes) -> cctalk.Frame | None:
            found = frames.feed(chunk)
            return found[0] if found else None

        reply = await self.line.exchange(request, read_frame, timeout=timeout)
        if reply.src != self.address or reply.dest != self.host_address:
            raise ProtocolError(
                target,
                f"ccTalk reply from address {reply.src} to {reply.dest}, expected from "
                f"{self.address} to {self.host_address}",
            )
        if reply.is_nak:
            raise ProtocolError(target, f"ccTalk device answered NAK to header {header}")
        if reply.header == cctalk.HEADER_BUSY:
            raise ProtocolError(target, f"ccTalk device answered BUSY to header {header}")
        if not reply.is_ack:
            raise ProtocolError(
                target, f"ccTalk reply has header {reply.header}, expected ACK (0)"
            )
        return reply

    async def simple_poll(self, *, timeout: float) -> None:
        """Simple poll: the device is there and answers ACK with no data."""
        reply = await self.query(cctalk.HEADER_SIMPLE_POLL, timeout=timeout)
        if reply.data:
            raise ProtocolError(
                self.line.target, f"simple poll answered {len(reply.data)} data bytes, expected 0"
            )

    async def read_bill_events(self, *, timeout: float) -> cctalk.BillEventBuffer:
        """Read buffered bill events: the event counter and the five latest events."""
        reply = await self.query(cctalk.HEADER_READ_BUFFERED_BILL_EVENTS, timeout=timeout)
        return cctalk.decode_bill_events(reply.data, self.line.target)

    async def reset(self, *, timeout: float) -> None:
        """Reset device: a soft restart that clears the event buffer."""
        await self.query(cctalk.HEADER_RESET_DEVICE, timeout=timeout)


class EscposPrinter:
    """An ESC/POS receipt printer's real-time status (``DLE EOT n``)."""

    def __init__(self, line: SerialLine) -> None:
        self.line = line

    @classmethod
    def for_target(cls, target: Target) -> EscposPrinter:
        return cls(line_for(target))

    async def query(self, request: bytes, reply_length: int, *, timeout: float) -> bytes:
        """Send ``request``; return exactly ``reply_length`` reply bytes."""
        buf = bytearray()

        def read_bytes(chunk: bytes) -> bytes | None:
            buf.extend(chunk)
            if len(buf) > reply_length:
                raise ProtocolError(
                    self.line.target,
                    f"printer sent {len(buf)} bytes, expected {reply_length}",
                )
            return bytes(buf) if len(buf) == reply_length else None

        return await self.line.exchange(request, read_bytes, timeout=timeout)

    async def status(self, *, timeout: float) -> escpos.PrinterStatus:
        """DLE EOT 1..4 in one write, decoded into one PrinterStatus."""
        replies = await self.query(
            escpos.ALL_STATUS_REQUESTS, len(escpos.STATUS_KINDS), timeout=timeout
        )
        return escpos.decode_printer_status(
            dict(zip(escpos.STATUS_KINDS, replies, strict=True)), self.line.target
        )


def _encoded(target: str, encode: Callable[[], bytes]) -> bytes:
    # The codecs name their protocol as the target; name the device instead.
    try:
        return encode()
    except ProtocolError as exc:
        raise ProtocolError(target, str(exc).split(": ", 1)[-1]) from exc


def _reason(exc: BaseException) -> str:
    """The OS's words for a pyserial error, without pyserial's repeated prefixes."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return os.strerror(code)
    return str(exc) or type(exc).__name__


def _seconds(value: float) -> str:
    # A budget that is what is left of a probe's timeout: 1.49998 reads as 1.5.
    return f"{round(value, 2):g}"
