"""ccTalk frames and bill validator events (ccTalk Generic Specification, parts 1-3).

A frame is ``[dest, data_len, src, header, data..., checksum]`` with the simple 8-bit checksum:
the sum of all its bytes is 0 modulo 256. A reply carries header 0 (ACK, or the answer's data)
or 5 (NAK). On the real one-wire bus the host reads back its own request before the reply;
``FrameReader`` skips such an echo when told what was sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from floorwatch.errors import ProtocolError

TARGET = "cctalk"

# Headers (ccTalk part 2, "Header Reference"): only those the hall uses.
HEADER_ACK = 0
HEADER_RESET_DEVICE = 1
HEADER_NAK = 5
HEADER_BUSY = 6
HEADER_READ_BUFFERED_BILL_EVENTS = 159
HEADER_MODIFY_MASTER_INHIBIT = 228
HEADER_MODIFY_INHIBIT_STATUS = 231
HEADER_REQUEST_SERIAL_NUMBER = 242
HEADER_REQUEST_EQUIPMENT_CATEGORY = 245
HEADER_REQUEST_MANUFACTURER_ID = 246
HEADER_SIMPLE_POLL = 254
# Coin acceptors' "read buffered credit or error codes": same reply layout as 159, but a bill
# validator does not implement it.
HEADER_READ_BUFFERED_CREDIT_CODES = 229

MAX_DATA = 252  # ccTalk part 1: a frame carries 0..252 data bytes
OVERHEAD = 5  # dest, data_len, src, header, checksum
BILL_EVENT_SLOTS = 5  # read buffered bill events: counter + 5 (A, B) pairs, newest first


def checksum(body: bytes) -> int:
    """The byte that makes the sum of ``body`` plus it 0 modulo 256."""
    return (-sum(body)) % 256


@dataclass(frozen=True)
class Frame:
    """One ccTalk message."""

    dest: int
    src: int
    header: int
    data: bytes = b""

    def encode(self) -> bytes:
        """The frame's bytes on the wire."""
        return encode_frame(self.dest, self.src, self.header, self.data)

    @property
    def is_ack(self) -> bool:
        return self.header == HEADER_ACK

    @property
    def is_nak(self) -> bool:
        return self.header == HEADER_NAK


def encode_frame(dest: int, src: int, header: int, data: bytes = b"") -> bytes:
    """Bytes of a frame from ``src`` to ``dest``; ProtocolError on out-of-range values."""
    for name, value in (("dest", dest), ("src", src), ("header", header)):
        if not 0 <= value <= 255:
            raise ProtocolError(TARGET, f"cannot encode frame: {name} {value} is not a byte")
    if len(data) > MAX_DATA:
        raise ProtocolError(
            TARGET, f"cannot encode frame: {len(data)} data bytes (at most {MAX_DATA})"
        )
    body = bytes([dest, len(data), src, header]) + bytes(data)
    return body + bytes([checksum(body)])


def decode_frame(buf: bytes, target: str = TARGET) -> Frame:
    """The one frame ``buf`` holds; ProtocolError on truncation, extra bytes or bad checksum."""
    if len(buf) < OVERHEAD:
        raise ProtocolError(target, f"truncated ccTalk frame: {len(buf)} bytes ({buf.hex(' ')})")
    expected = buf[1] + OVERHEAD
    if len(buf) < expected:
        raise ProtocolError(
            target,
            f"truncated ccTalk frame: {len(buf)} of {expected} bytes ({buf.hex(' ')})",
        )
    if len(buf) > expected:
        raise ProtocolError(
            target,
            f"ccTalk frame of {expected} bytes followed by {len(buf) - expected} extra bytes",
        )
    if sum(buf) % 256 != 0:
        raise ProtocolError(
            target,
            f"bad ccTalk checksum: byte sum {sum(buf) % 256} != 0 ({buf.hex(' ')})",
        )
    return Frame(dest=buf[0], src=buf[2], header=buf[3], data=bytes(buf[4:-1]))


def split_frames(buf: bytes, target: str = TARGET) -> tuple[list[Frame], bytes]:
    """Complete frames at the start of ``buf`` and the incomplete rest.

    Raises ProtocolError on the first complete frame whose checksum is wrong: after a bad
    frame the stream cannot be trusted to be in step, so the caller should discard it.
    """
    frames: list[Frame] = []
    pos = 0
    while len(buf) - pos >= 2:
        end = pos + buf[pos + 1] + OVERHEAD
        if end > len(buf):
            break
        frames.append(decode_frame(buf[pos:end], target))
        pos = end
    return frames, bytes(buf[pos:])


class FrameReader:
    """Cut a byte stream into frames, skipping the bus echo of our own request.

    ``expect_echo(request)`` arms the reader: if the stream then starts with exactly those
    bytes they are dropped (a one-wire bus echoes them); if it does not, nothing is dropped
    (our pseudo-terminals do not echo).
    """

    def __init__(self, target: str = TARGET) -> None:
        self.target = target
        self._buf = b""
        self._echo = b""

    def expect_echo(self, request: bytes) -> None:
        """Skip ``request`` if it is the next thing the stream carries."""
        self._echo = bytes(request)

    @property
    def pending(self) -> bytes:
        """Bytes received that do not yet make a whole frame."""
        return self._buf

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete."""
        self._buf += data
        if self._echo:
            if self._buf.startswith(self._echo):
                self._buf = self._buf[len(self._echo) :]
                self._echo = b""
            elif not self._echo.startswith(self._buf):
                # The stream diverged from the echo: there is none, it is the reply.
                self._echo = b""
            else:
                return []  # could still be the echo: wait for more bytes
        frames, self._buf = split_frames(self._buf, self.target)
        return frames


# Bill validator event codes: result A = 0, result B = code (ccTalk Generic Specification
# part 3, "Bill Validator Event Codes" table). The type decides what a host does with it.
EventKind = Literal["credit", "escrow", "status", "reject", "fraud", "fatal", "unknown"]

BILL_EVENT_CODES: dict[int, tuple[EventKind, str]] = {
    0: ("status", "master inhibit active"),
    1: ("status", "bill returned from escrow"),
    2: ("reject", "invalid bill (validation fail)"),
    3: ("reject", "invalid bill (transport problem)"),
    4: ("status", "inhibited bill (on serial)"),
    5: ("status", "inhibited bill (on DIP switches)"),
    6: ("fatal", "bill jammed in transport (unsafe mode)"),
    7: ("fatal", "bill jammed in stacker"),
    8: ("fraud", "bill pulled backwards"),
    9: ("fraud", "bill tamper"),
    10: ("status", "stacker OK"),
    11: ("status", "stacker removed"),
    12: ("status", "stacker inserted"),
    13: ("fatal", "stacker faulty"),
    14: ("status", "stacker full"),
    15: ("fatal", "stacker jammed"),
    16: ("fatal", "bill jammed in transport (safe mode)"),
    17: ("fraud", "opto fraud detected"),
    18: ("fraud", "string fraud detected"),
    19: ("fatal", "anti-string mechanism faulty"),
    20: ("status", "barcode detected"),
    21: ("status", "unknown bill type stacked"),
    255: ("fatal", "unspecified alarm code"),
}
CODE_BILL_JAMMED_UNSAFE = 6
CODE_BILL_JAMMED_SAFE = 16
CODE_STACKER_FULL = 14
JAM_CODES = frozenset({6, 7, 15, 16})


@dataclass(frozen=True)
class BillEvent:
    """One (A, B) result pair: a bill credited (A > 0) or a status/error code (A == 0)."""

    a: int
    b: int

    @property
    def kind(self) -> EventKind:
        if self.a > 0:
            # For a bill, B is the routing: 0 sent to the stacker, 1 held in escrow.
            if self.b == 0:
                return "credit"
            return "escrow" if self.b == 1 else "unknown"
        return BILL_EVENT_CODES.get(self.b, ("unknown", ""))[0]

    @property
    def bill_type(self) -> int | None:
        return self.a if self.a > 0 else None

    @property
    def is_jam(self) -> bool:
        return self.a == 0 and self.b in JAM_CODES

    @property
    def description(self) -> str:
        if self.a > 0:
            where = {0: "stacked", 1: "held in escrow"}.get(self.b, f"routing code {self.b}")
            return f"bill type {self.a} {where}"
        known = BILL_EVENT_CODES.get(self.b)
        return known[1] if known else f"unknown event code {self.b}"


@dataclass(frozen=True)
class BillEventBuffer:
    """The reply to ``read buffered bill events``: counter and the five latest events.

    ``counter`` is 0 after power-up or reset, then counts 1..255 and wraps to 1. ``events``
    holds all five slots, newest first; only the ones ``new_events`` returns are real.
    """

    counter: int
    events: tuple[BillEvent, ...]

    def new_count(self, previous: int | None = None) -> int:
        """How many events happened since the host last read ``previous`` (None: unknown)."""
        if self.counter == 0:
            return 0
        if previous is None or previous == 0:
            return self.counter
        return (self.counter - previous) % 255

    def new_events(self, previous: int | None = None) -> tuple[BillEvent, ...]:
        """Events since ``previous``, newest first (at most the five the device keeps)."""
        return self.events[: min(self.new_count(previous), BILL_EVENT_SLOTS)]

    def lost_events(self, previous: int | None = None) -> int:
        """Events that happened since ``previous`` but fell out of the five-slot buffer."""
        return max(0, self.new_count(previous) - BILL_EVENT_SLOTS)

    @property
    def latest(self) -> BillEvent | None:
        """The newest event, if any happened since reset."""
        return self.events[0] if self.counter else None


def encode_bill_events(counter: int, events: Sequence[tuple[int, int]]) -> bytes:
    """Data of a bill events reply: counter, then (A, B) pairs newest first, padded to 5."""
    if not 0 <= counter <= 255:
        raise ProtocolError(TARGET, f"cannot encode bill events: counter {counter} not a byte")
    if len(events) > BILL_EVENT_SLOTS:
        raise ProtocolError(TARGET, f"cannot encode bill events: {len(events)} events (at most 5)")
    pairs = [*events, *[(0, 0)] * (BILL_EVENT_SLOTS - len(events))]
    out = bytearray([counter])
    for a, b in pairs:
        if not (0 <= a <= 255 and 0 <= b <= 255):
            raise ProtocolError(TARGET, f"cannot encode bill event ({a}, {b}): not bytes")
        out += bytes([a, b])
    return bytes(out)


def decode_bill_events(data: bytes, target: str = TARGET) -> BillEventBuffer:
    """Parse the data of a ``read buffered bill events`` reply (11 bytes)."""
    expected = 1 + 2 * BILL_EVENT_SLOTS
    if len(data) != expected:
        raise ProtocolError(
            target, f"bill events reply has {len(data)} data bytes, expected {expected}"
        )
    events = tuple(BillEvent(data[i], data[i + 1]) for i in range(1, expected, 2))
    return BillEventBuffer(counter=data[0], events=events)
