"""The gaming terminal's line console.

Requests are one ASCII line ended by CRLF: ``STATUS``, ``VERSION``, ``CONFIG-HASH``,
``REBOOT`` or ``CONFIG-PUSH <base64 of the configuration>``. Each request gets one reply line,
``OK key=value key=value ...*XX`` or ``ERR <reason>*XX``, where ``XX`` is the XOR of every
character before the ``*`` as two hex digits (as in NMEA 0183), so a garbled line is detected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeGuard, get_args

from floorwatch.errors import CommandFailed, ProtocolError

TARGET = "console"
EOL = b"\r\n"
MAX_LINE = 65536  # a CONFIG-PUSH line carries a whole configuration

STATUS = "STATUS"
VERSION = "VERSION"
CONFIG_HASH = "CONFIG-HASH"
REBOOT = "REBOOT"
CONFIG_PUSH = "CONFIG-PUSH"
COMMANDS = frozenset({STATUS, VERSION, CONFIG_HASH, REBOOT, CONFIG_PUSH})

State = Literal["playing", "idle", "booting"]
CacheMode = Literal["online", "local"]
STATES: tuple[str, ...] = get_args(State)
CACHE_MODES: tuple[str, ...] = get_args(CacheMode)
CONFIG_HASH_CHARS = 16


def config_hash(config: str) -> str:
    """The hash a terminal reports for ``config``: the first 16 hex digits of its sha256."""
    return hashlib.sha256(config.encode()).hexdigest()[:CONFIG_HASH_CHARS]


def checksum(text: str) -> str:
    """XOR of the characters of ``text``, as two upper-case hex digits."""
    value = 0
    for char in text.encode("ascii"):
        value ^= char
    return f"{value:02X}"


@dataclass(frozen=True)
class Request:
    """One console command and its argument (only CONFIG-PUSH takes one)."""

    command: str
    argument: str | None = None


def encode_request(command: str, argument: str | None = None) -> bytes:
    """The request line for ``command``, CRLF-terminated."""
    if command not in COMMANDS:
        raise ProtocolError(TARGET, f"unknown console command {command!r}")
    if (command == CONFIG_PUSH) != (argument is not None):
        raise ProtocolError(
            TARGET,
            f"{command} {'needs' if command == CONFIG_PUSH else 'takes no'} argument",
        )
    line = command if argument is None else f"{command} {argument}"
    _check_ascii_line(line, "request")
    return line.encode("ascii") + EOL


def encode_config_push(config: str) -> bytes:
    """The ``CONFIG-PUSH`` request that installs ``config``."""
    return encode_request(CONFIG_PUSH, base64.b64encode(config.encode()).decode("ascii"))


def parse_request(line: bytes | str, target: str = TARGET) -> Request:
    """Parse one request line (with or without its line ending)."""
    text = _as_text(line, target).strip()
    command, _, argument = text.partition(" ")
    if command not in COMMANDS:
        raise ProtocolError(target, f"unknown command {command!r}")
    if command == CONFIG_PUSH:
        if not argument.strip():
            raise ProtocolError(target, "CONFIG-PUSH needs the configuration in base64")
        return Request(command, argument.strip())
    if argument:
        raise ProtocolError(target, f"{command} takes no argument, got {argument!r}")
    return Request(command)


def decode_config_push(argument: str, target: str = TARGET) -> str:
    """The configuration a CONFIG-PUSH argument carries."""
    try:
        return base64.b64decode(argument, validate=True).decode()
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text, bad UTF-8
        raise ProtocolError(target, f"CONFIG-PUSH argument is not base64 UTF-8: {exc}") from exc


@dataclass(frozen=True)
class Reply:
    """One reply line: ``ok`` with ``fields``, or an ``error`` reason."""

    ok: bool
    fields: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def encode_reply(fields: Mapping[str, object]) -> bytes:
    """The ``OK key=value ...*XX`` line for ``fields``, CRLF-terminated."""
    parts = ["OK"]
    for key, value in fields.items():
        text = str(int(value)) if isinstance(value, bool) else str(value)
        if not key or any(c in key for c in " =*") or not _printable(key):
            raise ProtocolError(TARGET, f"cannot encode reply key {key!r}")
        if not text or any(c in text for c in " *") or not _printable(text):
            raise ProtocolError(TARGET, f"cannot encode reply value {text!r} of {key!r}")
        parts.append(f"{key}={text}")
    return _seal(" ".join(parts))


def encode_error(reason: str) -> bytes:
    """The ``ERR <reason>*XX`` line, CRLF-terminated."""
    if not reason or "*" in reason or not _printable(reason):
        raise ProtocolError(TARGET, f"cannot encode error reason {reason!r}")
    return _seal(f"ERR {reason}")


def decode_reply(line: bytes | str, target: str = TARGET) -> Reply:
    """Parse one reply line; ProtocolError if the checksum or the format is wrong."""
    text = _as_text(line, target).rstrip("\r\n")
    body, star, given = text.rpartition("*")
    if not star:
        raise ProtocolError(target, f"reply without checksum: {text!r}")
    if len(given) != 2 or any(c not in "0123456789abcdefABCDEF" for c in given):
        raise ProtocolError(target, f"reply checksum {given!r} is not two hex digits: {text!r}")
    expected = checksum(body)
    if given.upper() != expected:
        raise ProtocolError(
            target, f"bad reply checksum {given.upper()} (computed {expected}): {text!r}"
        )
    if body == "OK" or body.startswith("OK "):
        fields: dict[str, str] = {}
        for item in body[3:].split():
            key, eq, value = item.partition("=")
            if not eq or not key or not value:
                raise ProtocolError(target, f"reply field {item!r} is not key=value: {text!r}")
            if key in fields:
                raise ProtocolError(target, f"reply repeats field {key!r}: {text!r}")
            fields[key] = value
        return Reply(ok=True, fields=fields)
    if body.startswith("ERR "):
        return Reply(ok=False, error=body[4:])
    raise ProtocolError(target, f"reply is neither OK nor ERR: {text!r}")


def parse_reply(line: bytes | str, target: str = TARGET) -> dict[str, str]:
    """The fields of an OK reply; CommandFailed for an ERR reply, ProtocolError if garbled."""
    reply = decode_reply(line, target)
    if not reply.ok:
        raise CommandFailed(target, f"console answered ERR {reply.error}")
    return reply.fields


@dataclass(frozen=True)
class TerminalStatus:
    """The fields of a STATUS reply, typed."""

    state: State
    heartbeat: int
    uptime_s: int
    cache: CacheMode
    games_cached: int
    config_hash: str

    def to_fields(self) -> dict[str, object]:
        """The reply fields, in wire order."""
        return {
            "state": self.state,
            "heartbeat": self.heartbeat,
            "uptime_s": self.uptime_s,
            "cache": self.cache,
            "games_cached": self.games_cached,
            "config_hash": self.config_hash,
        }


def parse_status(fields: Mapping[str, str], target: str = TARGET) -> TerminalStatus:
    """Type the fields of a STATUS reply; ProtocolError naming a missing or bad field."""
    names = ("state", "heartbeat", "uptime_s", "cache", "games_cached", "config_hash")
    missing = [name for name in names if name not in fields]
    if missing:
        raise ProtocolError(target, f"STATUS reply lacks {', '.join(missing)}")
    state, cache = fields["state"], fields["cache"]
    if not _is_state(state):
        raise ProtocolError(target, f"STATUS state {state!r} is not one of {STATES}")
    if not _is_cache_mode(cache):
        raise ProtocolError(target, f"STATUS cache {cache!r} is not one of {CACHE_MODES}")
    numbers: dict[str, int] = {}
    for name in ("heartbeat", "uptime_s", "games_cached"):
        value = fields[name]
        if not (value.isascii() and value.isdigit()):
            raise ProtocolError(target, f"STATUS {name} {value!r} is not a whole number")
        numbers[name] = int(value)
    digest = fields["config_hash"]
    if len(digest) != CONFIG_HASH_CHARS or any(c not in "0123456789abcdef" for c in digest):
        raise ProtocolError(target, f"STATUS config_hash {digest!r} is not 16 hex digits")
    return TerminalStatus(
        state=state,
        heartbeat=numbers["heartbeat"],
        uptime_s=numbers["uptime_s"],
        cache=cache,
        games_cached=numbers["games_cached"],
        config_hash=digest,
    )


def _is_state(value: str) -> TypeGuard[State]:
    return value in STATES


def _is_cache_mode(value: str) -> TypeGuard[CacheMode]:
    return value in CACHE_MODES


def _seal(body: str) -> bytes:
    return f"{body}*{checksum(body)}".encode("ascii") + EOL


def _printable(text: str) -> bool:
    return all(32 <= ord(c) < 127 for c in text)


def _check_ascii_line(line: str, what: str) -> None:
    if not _printable(line) or len(line) + len(EOL) > MAX_LINE:
        raise ProtocolError(TARGET, f"cannot encode {what} line {line[:40]!r}")


def _as_text(line: bytes | str, target: str) -> str:
    if isinstance(line, str):
        return line
    try:
        return line.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(target, f"line is not ASCII: {line[:80]!r}") from exc
