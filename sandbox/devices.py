"""Device simulators of the gaming hall, and the pseudo-terminals they answer on.

Each simulator is a small state machine, ``receive(data, now) -> reply bytes``, speaking the
real frames of ``floorwatch.protocols``; fault flags change what it answers. ``PtyLine`` opens
one pseudo-terminal per device (raw mode, stable symlink) and ``DeviceLoop`` serves all of
them from one thread with a selector. Callers hold one lock around ``receive`` and any fault
change, so the simulators themselves are not thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import termios
import threading
import time
import tty
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from floorwatch.errors import ProtocolError, SandboxError
from floorwatch.protocols import cctalk, console, escpos

log = logging.getLogger(__name__)

BAUD = 9600  # what the inventory says; a pseudo-terminal ignores the speed
REBOOT_SILENT_S = 1.0  # after REBOOT: no answer at all (the console is down)
REBOOT_BOOTING_S = 2.0  # then state=booting until this long after REBOOT
CCTALK_INTERBYTE_S = 0.05  # ccTalk: a gap this long discards a partial frame (resync)
GAMES_CACHED = 24
STALE_CONFIG = "hall-1 config v41\nlimits: standard\ngames: catalogue-2026.08\n"


class Device(ABC):
    """A serial device: bytes in, bytes out, with a ``garbled`` line fault."""

    protocol: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.garbled = False

    @abstractmethod
    def receive(self, data: bytes, now: float) -> bytes:
        """Take bytes the host sent; return the bytes the device answers."""

    @abstractmethod
    def faults(self) -> list[str]:
        """Faults in force on this device."""

    @abstractmethod
    def heal(self, now: float) -> None:
        """Undo every fault."""


class Terminal(Device):
    """A gaming terminal's line console: STATUS, VERSION, CONFIG-HASH, REBOOT, CONFIG-PUSH.

    ``offline``: no answer at all, REBOOT included. ``hung``: answers, heartbeat frozen; a
    REBOOT clears it. ``config`` differing from ``expected_config`` is the stale_config fault;
    a CONFIG-PUSH of the expected configuration fixes it, a REBOOT does not.
    """

    protocol = "console"

    def __init__(
        self,
        name: str,
        index: int,
        expected_config: str,
        now: float,
        platform_reachable: Callable[[], bool],
    ) -> None:
        super().__init__(name)
        self.index = index
        self.expected_config = expected_config
        self.config = expected_config
        self.offline = False
        self._platform_reachable = platform_reachable
        # Terminals have been up for a while when the hall starts; varied per terminal.
        self._up_since = now - 3600.0 * index
        self._beat_since = self._up_since
        self._frozen_beat: int | None = None
        self._reboot_at: float | None = None
        self._state: console.State = "playing" if index % 2 else "idle"
        self._rx = b""

    @property
    def hung(self) -> bool:
        return self._frozen_beat is not None

    def hang(self, now: float) -> None:
        if self._frozen_beat is None:
            self._frozen_beat = self.heartbeat(now)

    def unhang(self, now: float) -> None:
        if self._frozen_beat is not None:
            # The game loop resumes counting from where it stopped.
            self._beat_since = now - self._frozen_beat
            self._frozen_beat = None

    def heartbeat(self, now: float) -> int:
        if self._frozen_beat is not None:
            return self._frozen_beat
        return max(0, int(now - self._beat_since))

    def phase(self, now: float) -> str:
        """``silent`` (console down after REBOOT), ``booting``, or ``up``."""
        if self._reboot_at is not None:
            since = now - self._reboot_at
            if since < REBOOT_SILENT_S:
                return "silent"
            if since < REBOOT_BOOTING_S:
                return "booting"
        return "up"

    def status(self, now: float) -> console.TerminalStatus:
        booting = self.phase(now) == "booting"
        return console.TerminalStatus(
            state="booting" if booting else self._state,
            heartbeat=0 if booting else self.heartbeat(now),
            uptime_s=max(0, int(now - self._up_since)),
            cache="online" if self._platform_reachable() else "local",
            games_cached=GAMES_CACHED,
            config_hash=console.config_hash(self.config),
        )

    def reboot(self, now: float) -> None:
        self._reboot_at = now
        self._frozen_beat = None  # a reboot fixes a hang
        self._up_since = now + REBOOT_SILENT_S
        self._beat_since = now + REBOOT_BOOTING_S

    def receive(self, data: bytes, now: float) -> bytes:
        self._rx += data
        out = b""
        while b"\n" in self._rx:
            raw, self._rx = self._rx.split(b"\n", 1)
            line = raw.rstrip(b"\r")
            # Offline or rebooting: the console is down and the line is lost, as on the wire.
            if not line.strip() or self.offline or self.phase(now) == "silent":
                continue
            reply = self._answer(line, now)
            out += self._garble(reply) if self.garbled else reply
        if len(self._rx) > console.MAX_LINE:
            self._rx = b""
            if not self.offline:
                out += console.encode_error(f"line longer than {console.MAX_LINE} bytes")
        return out

    def _answer(self, line: bytes, now: float) -> bytes:
        try:
            request = console.parse_request(line, self.name)
        except ProtocolError as exc:
            return console.encode_error(_reason(exc, self.name))
        if request.command == console.STATUS:
            return console.encode_reply(self.status(now).to_fields())
        if request.command == console.VERSION:
            return console.encode_reply(
                {"model": "FW-T100", "firmware": "4.2.1", "serial": f"H1T{self.index:05d}"}
            )
        if request.command == console.CONFIG_HASH:
            return console.encode_reply({"config_hash": console.config_hash(self.config)})
        if request.command == console.REBOOT:
            self.reboot(now)
            return console.encode_reply({"reboot": "accepted"})
        # CONFIG-PUSH
        try:
            self.config = console.decode_config_push(request.argument or "", self.name)
        except ProtocolError as exc:
            return console.encode_error(_reason(exc, self.name))
        return console.encode_reply({"config_hash": console.config_hash(self.config)})

    @staticmethod
    def _garble(line: bytes) -> bytes:
        # Change one character in the middle of the body: the checksum no longer matches,
        # while the line ending stays, so the host reads a whole (bad) line, not a timeout.
        star = line.rfind(b"*")
        pos = max(0, star // 2)
        bad = b"#" if line[pos : pos + 1] != b"#" else b"%"
        return line[:pos] + bad + line[pos + 1 :]

    def faults(self) -> list[str]:
        found = []
        if self.offline:
            found.append("terminal_offline")
        if self.hung:
            found.append("terminal_hung")
        if self.config != self.expected_config:
            found.append("stale_config")
        if self.garbled:
            found.append("garbled")
        return found

    def heal(self, now: float) -> None:
        self.offline = False
        self.garbled = False
        self.unhang(now)
        self.config = self.expected_config


class BillAcceptor(Device):
    """A ccTalk bill validator at ``address``.

    ``jammed``: read buffered bill events reports "bill jammed in transport"; a ccTalk reset
    clears the event buffer but not the jam (it is reported again), only a person can clear
    it (``heal``), after which the device restarts with an empty buffer.
    """

    protocol = "cctalk"

    def __init__(self, name: str, address: int, serial_number: int) -> None:
        super().__init__(name)
        self.address = address
        self.serial_number = serial_number
        self.jammed = False
        self.counter = 0
        self.events: deque[tuple[int, int]] = deque(maxlen=cctalk.BILL_EVENT_SLOTS)
        self.master_inhibit = True  # ccTalk validators start inhibited until the host enables
        self._rx = b""
        self._last_rx = 0.0

    def push_event(self, a: int, b: int) -> None:
        """Record an event: newest first, counter 1..255 wrapping to 1 (0 means reset)."""
        self.events.appendleft((a, b))
        self.counter = self.counter % 255 + 1

    def credit(self, bill_type: int) -> None:
        """A player inserts a bill of ``bill_type`` and it is stacked."""
        if self.jammed:
            raise SandboxError(f"{self.name}: jammed, cannot take a bill")
        self.push_event(bill_type, 0)

    def reset(self) -> None:
        self.counter = 0
        self.events.clear()

    def receive(self, data: bytes, now: float) -> bytes:
        if self._rx and now - self._last_rx > CCTALK_INTERBYTE_S:
            log.debug("%s: dropping partial frame %s", self.name, self._rx.hex(" "))
            self._rx = b""
        self._last_rx = now
        self._rx += data
        try:
            frames, self._rx = cctalk.split_frames(self._rx, self.name)
        except ProtocolError as exc:
            # A real validator ignores a frame with a bad checksum: the host times out.
            log.warning("%s: ignoring bad frame: %s", self.name, exc)
            self._rx = b""
            return b""
        out = b""
        for frame in frames:
            if frame.dest not in (self.address, 0):
                continue  # addressed to another device on the bus
            header, reply = self._answer(frame)
            raw = cctalk.encode_frame(frame.src, self.address, header, reply)
            if self.garbled:
                raw = raw[:-1] + bytes([(raw[-1] + 1) % 256])
            out += raw
        return out

    def _answer(self, frame: cctalk.Frame) -> tuple[int, bytes]:
        ack = cctalk.HEADER_ACK
        if frame.header == cctalk.HEADER_SIMPLE_POLL:
            return ack, b""
        if frame.header == cctalk.HEADER_RESET_DEVICE:
            self.reset()
            return ack, b""
        if frame.header == cctalk.HEADER_READ_BUFFERED_BILL_EVENTS:
            latest = cctalk.BillEvent(*self.events[0]) if self.counter else None
            if self.jammed and not (latest and latest.is_jam):
                self.push_event(0, cctalk.CODE_BILL_JAMMED_UNSAFE)
            return ack, cctalk.encode_bill_events(self.counter, list(self.events))
        if frame.header == cctalk.HEADER_REQUEST_SERIAL_NUMBER:
            return ack, self.serial_number.to_bytes(3, "little")
        if frame.header == cctalk.HEADER_REQUEST_EQUIPMENT_CATEGORY:
            return ack, b"Bill Validator"
        if frame.header == cctalk.HEADER_REQUEST_MANUFACTURER_ID:
            return ack, b"FWS"
        if frame.header == cctalk.HEADER_MODIFY_MASTER_INHIBIT and len(frame.data) == 1:
            self.master_inhibit = not frame.data[0] & 1  # bit 0 set: accept bills
            return ack, b""
        if frame.header == cctalk.HEADER_MODIFY_INHIBIT_STATUS and len(frame.data) == 2:
            return ack, b""
        return cctalk.HEADER_NAK, b""

    def faults(self) -> list[str]:
        return [f for f, on in (("bill_jam", self.jammed), ("garbled", self.garbled)) if on]

    def heal(self, now: float) -> None:
        self.garbled = False
        if self.jammed:
            self.jammed = False
            self.reset()  # clearing a jam means opening and restarting the validator


class Printer(Device):
    """An ESC/POS receipt printer answering ``DLE EOT n`` real-time status requests.

    Other bytes are print data and are consumed (counted in ``printed``).
    """

    protocol = "escpos"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.status = escpos.PrinterStatus()
        self.printed = 0
        self._rx = b""

    @property
    def paper_out(self) -> bool:
        return self.status.paper_end

    def set_paper_out(self, out: bool) -> None:
        # Out of paper: both sensors see no paper, printing stopped, printer offline.
        self.status = replace(
            self.status, paper_end=out, paper_near_end=out, paper_end_stop=out, online=not out
        )

    def receive(self, data: bytes, now: float) -> bytes:
        buf = self._rx + data
        out = bytearray()
        i = 0
        while i < len(buf):
            if buf[i] == escpos.DLE and buf[i + 1 : i + 2] in (b"", bytes([escpos.EOT])):
                if i + 2 >= len(buf):
                    break  # wait for the rest of a possible DLE EOT n
                n = buf[i + 2]
                if n in escpos.STATUS_KINDS:
                    byte = escpos.encode_status(n, self.status)
                    out.append(byte ^ escpos.FIXED_MASK if self.garbled else byte)
                # Epson: DLE EOT with n out of range is ignored.
                i += 3
                continue
            self.printed += 1
            i += 1
        self._rx = bytes(buf[i:])
        return bytes(out)

    def faults(self) -> list[str]:
        return [f for f, on in (("paper_out", self.paper_out), ("garbled", self.garbled)) if on]

    def heal(self, now: float) -> None:
        self.garbled = False
        self.status = escpos.PrinterStatus()


class PtyLine:
    """One pseudo-terminal in raw mode, with a stable symlink to its slave side.

    The simulator answers on the master; it keeps the slave open too, so the line does not
    hang up (EIO on the master) each time a client closes it.
    """

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master, self.slave = os.openpty()
        try:
            tty.setraw(self.slave)  # no echo, no CR/LF mapping: clients see bytes unchanged
            os.set_blocking(self.master, False)
            self.tty = os.ttyname(self.slave)
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.tty)
            tmp.replace(link)  # atomic: replaces a stale link from a crashed run
        except OSError:
            self.close()
            raise

    def write(self, data: bytes) -> None:
        """Send ``data`` to the client; drop stale unread replies if the line is full."""
        view = memoryview(data)
        flushed = False
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                if flushed:
                    log.error("%s: line full, dropping %d reply bytes", self.link, len(view))
                    return
                # Nobody has read earlier replies: discard them so the fresh one gets through.
                log.warning("%s: discarding unread replies on a full line", self.link)
                termios.tcflush(self.slave, termios.TCIFLUSH)
                flushed = True

    def close(self) -> None:
        """Close both sides and remove the symlink (if it is still ours)."""
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == getattr(self, "tty", None):
                self.link.unlink()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class DeviceLoop:
    """Serve every device's pseudo-terminal from one thread."""

    def __init__(self, lock: threading.Lock, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = lock
        self._clock = clock
        self._lines: list[tuple[PtyLine, Device]] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, line: PtyLine, device: Device) -> None:
        self._lines.append((line, device))
        self._selector.register(line.master, selectors.EVENT_READ, (line, device))

    def start(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="sandbox-hall", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the selector (the lines stay for the caller to close)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise SandboxError(f"hall device thread did not stop within {timeout} s")
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                if key.data is None:
                    continue  # woken up to stop
                line, device = key.data
                try:
                    data = os.read(line.master, 4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    log.error("%s: read failed, line dropped: %s", device.name, exc)
                    self._selector.unregister(line.master)
                    continue
                try:
                    with self._lock:
                        reply = device.receive(data, self._clock())
                    if reply:
                        line.write(reply)
                except Exception:  # one misbehaving device must not stop the whole hall
                    log.exception("%s: simulator failed on %r", device.name, data[:64])


def _reason(exc: ProtocolError, target: str) -> str:
    # An ERR reason must be printable and free of the checksum marker.
    text = str(exc).removeprefix(f"{target}: ")
    return "".join(c if 32 <= ord(c) < 127 and c != "*" else "?" for c in text)
