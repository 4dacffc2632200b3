"""ESC/POS real-time status: ``DLE EOT n`` (0x10 0x04 n, n = 1..4) and its one-byte replies.

Bit meanings follow Epson's ESC/POS reference for ``DLE EOT``. Every reply byte has fixed
bits (bit 0 = 0, bit 1 = 1, bit 4 = 1, bit 7 = 0); a byte that breaks them is not a status
byte, which is how a garbled reply is recognised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from floorwatch.errors import ProtocolError

TARGET = "escpos"

DLE = 0x10
EOT = 0x04
FIXED_MASK = 0x93  # bits 0, 1, 4, 7
FIXED_VALUE = 0x12  # bits 1 and 4 set, 0 and 7 clear

PRINTER_STATUS = 1
OFFLINE_CAUSE = 2
ERROR_CAUSE = 3
PAPER_SENSOR = 4
STATUS_KINDS = (PRINTER_STATUS, OFFLINE_CAUSE, ERROR_CAUSE, PAPER_SENSOR)

# n -> field -> bit mask; a field is true when any of its bits is set. The paper sensor
# reports each sensor on two bits (Epson sets both together).
_BITS: dict[int, dict[str, int]] = {
    PRINTER_STATUS: {
        "drawer_pin3_high": 0x04,
        "offline": 0x08,
        "waiting_recovery": 0x20,
        "feed_button": 0x40,
    },
    OFFLINE_CAUSE: {
        "cover_open": 0x04,
        "paper_feeding": 0x08,
        "paper_end_stop": 0x20,
        "error": 0x40,
    },
    ERROR_CAUSE: {
        "recoverable_error": 0x04,
        "autocutter_error": 0x08,
        "unrecoverable_error": 0x20,
        "auto_recoverable_error": 0x40,
    },
    PAPER_SENSOR: {
        "paper_near_end": 0x0C,
        "paper_end": 0x60,
    },
}


def status_request(n: int) -> bytes:
    """The ``DLE EOT n`` request for status kind ``n`` (1..4)."""
    _check_kind(n)
    return bytes([DLE, EOT, n])


ALL_STATUS_REQUESTS = b"".join(bytes([DLE, EOT, n]) for n in STATUS_KINDS)


def decode_status(n: int, byte: int, target: str = TARGET) -> dict[str, bool]:
    """The flags one status byte of kind ``n`` carries; ProtocolError if its fixed bits are
    wrong (a garbled reply)."""
    _check_kind(n, target)
    if not 0 <= byte <= 255:
        raise ProtocolError(target, f"status reply {byte} is not a byte")
    if byte & FIXED_MASK != FIXED_VALUE:
        raise ProtocolError(
            target,
            f"garbled status reply to DLE EOT {n}: 0x{byte:02x} has wrong fixed bits "
            f"(expected bits 1,4 set and 0,7 clear)",
        )
    return {name: bool(byte & mask) for name, mask in _BITS[n].items()}


@dataclass(frozen=True)
class PrinterStatus:
    """A printer's state as the four real-time status bytes report it."""

    online: bool = True
    cover_open: bool = False
    paper_near_end: bool = False
    paper_end: bool = False
    error: bool = False
    paper_end_stop: bool = False
    paper_feeding: bool = False
    feed_button: bool = False
    waiting_recovery: bool = False
    drawer_pin3_high: bool = False
    recoverable_error: bool = False
    autocutter_error: bool = False
    unrecoverable_error: bool = False
    auto_recoverable_error: bool = False

    @property
    def ready(self) -> bool:
        """Online, paper loaded, cover closed, no error: the printer can print a receipt."""
        return self.online and not (self.paper_end or self.cover_open or self.error)

    def problems(self) -> list[str]:
        """Human-readable reasons the printer is not fully healthy (empty when it is)."""
        names = {
            "cover_open": "cover open",
            "paper_end": "paper end",
            "paper_near_end": "paper near end",
            "paper_end_stop": "printing stopped: paper end",
            "error": "error",
            "recoverable_error": "recoverable error",
            "autocutter_error": "autocutter error",
            "unrecoverable_error": "unrecoverable error",
            "auto_recoverable_error": "auto-recoverable error",
        }
        found = ["offline"] if not self.online else []
        found += [text for name, text in names.items() if getattr(self, name)]
        return found


def encode_status(n: int, status: PrinterStatus) -> int:
    """The byte a printer in ``status`` answers to ``DLE EOT n``."""
    _check_kind(n)
    byte = FIXED_VALUE
    for name, mask in _BITS[n].items():
        value = not status.online if name == "offline" else bool(getattr(status, name))
        if value:
            byte |= mask
    return byte


def decode_printer_status(replies: Mapping[int, int], target: str = TARGET) -> PrinterStatus:
    """Combine the replies to ``DLE EOT 1..4`` (n -> byte) into one PrinterStatus."""
    missing = [n for n in STATUS_KINDS if n not in replies]
    if missing:
        raise ProtocolError(target, f"no reply to DLE EOT {', '.join(map(str, missing))}")
    flags: dict[str, bool] = {}
    for n in STATUS_KINDS:
        flags.update(decode_status(n, replies[n], target))
    flags["online"] = not flags.pop("offline")
    return PrinterStatus(**flags)


def _check_kind(n: int, target: str = TARGET) -> None:
    if n not in STATUS_KINDS:
        raise ProtocolError(target, f"DLE EOT n must be 1..4, got {n}")
