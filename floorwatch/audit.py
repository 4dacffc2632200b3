"""The audit log's live export, its offline export, and checking it against an export.

The store's ``audit_log`` is the record (append-only, hash-chained: ``Store.append_audit``).
``AuditLog.record`` appends there first, then hands the entry at once to every sink::

    AuditLog(store, sinks).record(actor=..., action=..., subject=..., details=...)
      ├─ JsonlSink(path)                 one JSON line per entry; appended, flushed, fsynced
      └─ SyslogSink(host, port, proto)   RFC 5424; UDP datagrams (RFC 5426) or TCP with
                                         octet-counting framing (RFC 6587)

A sink that fails does not lose the entry (the store has it) and is not silent: ``record``
raises after every sink was tried. ``export`` renders entries since a time as JSON lines or
CSV; ``compare_with_export`` finds entries the store lost since a JSONL file received them,
which the chain alone cannot show when the newest rows were deleted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import select
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

from floorwatch.errors import AdapterError, ConnectError, FloorwatchError, StoreError
from floorwatch.store import AuditEntry, Store, canonical_json

JSONL_ENV: Final = "FLOORWATCH_AUDIT_JSONL"  # path of the live JSONL export
SYSLOG_ENV: Final = "FLOORWATCH_AUDIT_SYSLOG"  # udp://host:port or tcp://host:port

ExportFormat = Literal["jsonl", "csv"]
EXPORT_FORMATS: Final[tuple[ExportFormat, ...]] = ("jsonl", "csv")
FIELDS: Final = ("id", "ts", "actor", "action", "subject", "details", "prev_hash", "hash")

SYSLOG_VERSION: Final = 1
FACILITY_LOG_AUDIT: Final = 13  # RFC 5424 table 1: "log audit"
SEVERITY_WARNING: Final = 4
SEVERITY_NOTICE: Final = 5
SD_ID: Final = "floorwatch@32473"  # 32473: the enterprise number RFC 5612 sets aside
APP_NAME: Final = "floorwatch"
MAX_UDP_PAYLOAD: Final = 65507  # IPv4: 65535 - 8 (UDP header) - 20 (IP header)
TCP_TIMEOUT_S: Final = 5.0


# --------------------------------------------------------------------------- records


def entry_record(entry: AuditEntry) -> dict[str, Any]:
    """The entry as plain JSON values (timestamps in ISO 8601 UTC, microseconds)."""
    return {
        "id": entry.id,
        "ts": entry.ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def entry_line(entry: AuditEntry) -> str:
    """The entry as one JSON line, without its newline. ASCII only: a line separator inside a
    value (U+2028) would split the line for some readers."""
    return json.dumps(entry_record(entry), sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- sinks


class AuditSink(Protocol):
    """Somewhere each audit entry goes as soon as it is stored."""

    @property
    def name(self) -> str:
        """Where the entries go, for error messages."""
        ...

    def write(self, entry: AuditEntry) -> None:
        """Deliver one entry; raise a FloorwatchError naming the sink when it cannot."""
        ...

    def close(self) -> None:
        """Release the file or connection."""
        ...


class JsonlSink:
    """Appends each entry as one JSON line to ``path`` (mode 0600), flushed and fsynced before
    ``write`` returns. Several processes may share the file: each line is one O_APPEND write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"audit file {self.path}"

    def write(self, entry: AuditEntry) -> None:
        data = (entry_line(entry) + "\n").encode("ascii")
        with self._lock:
            try:
                if self._fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(
                        self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                    )
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write: {written} of {len(data)} bytes")
                os.fsync(self._fd)
            except OSError as exc:
                raise StoreError(
                    f"cannot append audit entry #{entry.id} to {self.path}: {exc}"
                ) from exc

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _sd_escape(value: str) -> str:
    # RFC 5424 section 6.3.3: '"', '\' and ']' are escaped inside a PARAM-VALUE.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` long, or '-'."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def severity_of(entry: AuditEntry) -> int:
    """Refusals and alerts are warnings; everything else is a notice."""
    text = entry.action.lower()
    return SEVERITY_WARNING if "refus" in text or "alert" in text else SEVERITY_NOTICE


def format_rfc5424(
    entry: AuditEntry,
    *,
    hostname: str,
    app_name: str = APP_NAME,
    procid: str | None = None,
    facility: int = FACILITY_LOG_AUDIT,
) -> bytes:
    """One RFC 5424 syslog message for ``entry``: the audit action as MSGID, its id, actor,
    subject and hashes as structured data, and the whole entry as a JSON line in MSG."""
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility {facility} is not 0..23")
    pri = facility * 8 + severity_of(entry)
    ts = entry.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    params = {
        "id": str(entry.id),
        "actor": entry.actor,
        "subject": entry.subject,
        "hash": entry.hash,
        "prev": entry.prev_hash,
    }
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_escape(v)}"' for k, v in params.items()) + "]"
    header = " ".join(
        [
            f"<{pri}>{SYSLOG_VERSION}",
            ts,
            _header_token(hostname, 255),
            _header_token(app_name, 48),
            _header_token(procid if procid is not None else str(os.getpid()), 128),
            _header_token(entry.action, 32),
            sd,
        ]
    )
    # MSG is ASCII JSON (MSG-ANY), so no BOM; it never holds a newline.
    return f"{header} {entry_line(entry)}".encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d " % len(message) + message


class SyslogSink:
    """Sends each entry to a syslog collector as RFC 5424, over UDP (one datagram per
    entry) or TCP (octet-counted frames on one kept connection, reconnected once on error).

    UDP cannot tell whether the collector got the entry; choose TCP where that matters.
    """

    def __init__(
        self,
        host: str,
        port: int,
        protocol: Literal["udp", "tcp"] = "udp",
        *,
        hostname: str | None = None,
        app_name: str = APP_NAME,
        facility: int = FACILITY_LOG_AUDIT,
        timeout_s: float = TCP_TIMEOUT_S,
    ) -> None:
        if protocol not in ("udp", "tcp"):
            raise ValueError(f"syslog protocol {protocol!r}: udp or tcp")
        if not 0 < port < 65536:
            raise ValueError(f"syslog port {port} is not 1..65535")
        self.host = host
        self.port = port
        self.protocol = protocol
        self.hostname = hostname or socket.gethostname()
        self.app_name = app_name
        self.facility = facility
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"syslog {self.protocol}://{self.host}:{self.port}"

    def write(self, entry: AuditEntry) -> None:
        message = format_rfc5424(
            entry, hostname=self.hostname, app_name=self.app_name, facility=self.facility
        )
        with self._lock:
            if self.protocol == "udp":
                self._send_udp(entry, message)
            else:
                self._send_tcp(entry, octet_counted(message))

    def _send_udp(self, entry: AuditEntry, message: bytes) -> None:
        if len(message) > MAX_UDP_PAYLOAD:
            raise AdapterError(
                self.name,
                f"audit entry #{entry.id} is {len(message)} bytes, over the {MAX_UDP_PAYLOAD} "
                "a UDP datagram carries: use tcp",
            )
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.sendto(message, (self.host, self.port))
        except OSError as exc:
            raise ConnectError(
                self.name, f"cannot send audit entry #{entry.id}: {exc.strerror or exc}"
            ) from exc

    def _send_tcp(self, entry: AuditEntry, frame: bytes) -> None:
        # A kept connection may have been closed by the collector since the last entry:
        # one reconnect, then the error. The collector may see an entry twice, never zero times
        # unnoticed; its structured data carries the entry id to drop duplicates by.
        if self._sock is not None and _peer_closed(self._sock):
            # Sending on a connection the collector closed "succeeds" once and is lost.
            self._drop()
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(
                        (self.host, self.port), timeout=self.timeout_s
                    )
                self._sock.sendall(frame)
                return
            except OSError as exc:
                self._drop()
                if attempt == 2:
                    raise ConnectError(
                        self.name, f"cannot send audit entry #{entry.id}: {exc.strerror or exc}"
                    ) from exc

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def close(self) -> None:
        with self._lock:
            self._drop()


def _peer_closed(sock: socket.socket) -> bool:
    """True when the collector closed (or reset) the connection: it never sends anything,
    so a readable socket means end of stream or an error."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (OSError, ValueError):  # reset, or a socket already closed (fileno -1)
        return True


def syslog_sink(url: str) -> SyslogSink:
    """A SyslogSink for ``udp://host:port`` or ``tcp://host:port``."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"syslog URL {url!r} has a bad port") from exc
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or port is None:
        raise ValueError(f"syslog URL {url!r}: expected udp://host:port or tcp://host:port")
    protocol: Literal["udp", "tcp"] = "udp" if parts.scheme == "udp" else "tcp"
    return SyslogSink(parts.hostname, port, protocol)


def sinks_from_env(environ: Mapping[str, str] | None = None) -> list[AuditSink]:
    """The sinks ``$FLOORWATCH_AUDIT_JSONL`` (a path) and ``$FLOORWATCH_AUDIT_SYSLOG``
    (a syslog URL) configure; none when unset."""
    env = os.environ if environ is None else environ
    sinks: list[AuditSink] = []
    if path := env.get(JSONL_ENV, "").strip():
        sinks.append(JsonlSink(path))
    if url := env.get(SYSLOG_ENV, "").strip():
        sinks.append(syslog_sink(url))
    return sinks


class AuditLog:
    """Appends to the store's audit log and exports each entry at once to every sink."""

    def __init__(self, store: Store, sinks: Sequence[AuditSink] = ()) -> None:
        self.store = store
        self.sinks = list(sinks)

    def record(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> AuditEntry:
        """Append one entry, then write it to every sink. When a sink fails, the others are
        still tried and the first failure is raised afterwards, naming every failed sink."""
        entry = self.store.append_audit(
            actor=actor, action=action, subject=subject, details=details, ts=ts
        )
        failures: list[FloorwatchError] = []
        for sink in self.sinks:
            try:
                sink.write(entry)
            except FloorwatchError as exc:
                failures.append(exc)
        if failures:
            others = "; ".join(str(f) for f in failures[1:])
            note = f" (also: {others})" if others else ""
            prefix = f"audit entry #{entry.id} is stored but not exported{note}"
            raise _exported_error(failures[0], prefix) from failures[0]
        return entry

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _exported_error(error: FloorwatchError, prefix: str) -> FloorwatchError:
    """``error`` again, of the same kind where it can be, with ``prefix`` before its message."""
    if isinstance(error, AdapterError):
        # Every AdapterError takes (target, message).
        message = str(error).removeprefix(f"{error.target}: ")
        return type(error)(error.target, f"{prefix}: {message}")
    return StoreError(f"{prefix}: {error}")


# --------------------------------------------------------------------------- export


_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A point in time: ISO 8601 (UTC when it names no zone) or an age such as ``15m``,
    ``24h``, ``7d``, ``2w`` before ``now``. ValueError otherwise; usable as argparse ``type=``."""
    cleaned = text.strip()
    relative = _RELATIVE.fullmatch(cleaned.lower())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"since {text!r}: expected an ISO 8601 time (2026-01-05T12:00Z) or an age "
            "(15m, 24h, 7d, 2w)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def render(entries: Iterable[AuditEntry], format: ExportFormat = "jsonl") -> str:
    """Entries as JSON lines, or as CSV with a header (details as canonical JSON)."""
    if format == "jsonl":
        return "".join(entry_line(e) + "\n" for e in entries)
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        for entry in entries:
            record = entry_record(entry)
            record["details"] = canonical_json(entry.details)
            writer.writerow([record[f] for f in FIELDS])
        return out.getvalue()
    raise ValueError(f"unknown export format {format!r}; one of {', '.join(EXPORT_FORMATS)}")


def export(store: Store, since: datetime | None = None, format: ExportFormat = "jsonl") -> str:
    """The audit entries at or after ``since`` (all when None), oldest first, as text."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; one of {', '.join(EXPORT_FORMATS)}")
    return render(store.audit_entries(since=since), format)


def compare_with_export(entries: Sequence[AuditEntry], jsonl: str, source: str) -> str | None:
    """The first entry a JSONL export (``source`` names it) received that the store no longer
    holds as exported, or None when every exported entry is there unchanged."""
    held = {entry.id: entry for entry in entries}
    for number, line in enumerate(jsonl.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            entry_id, digest = int(record["id"]), str(record["hash"])
        except (ValueError, TypeError, KeyError):
            return f"{source}:{number} is not an audit record: the export itself was altered"
        entry = held.get(entry_id)
        if entry is None:
            return (
                f"audit entry #{entry_id} was deleted: {source}:{number} received it, "
                "the store no longer holds it"
            )
        if entry.hash != digest:
            return (
                f"audit entry #{entry_id} was rewritten: its hash {entry.hash[:12]}… differs "
                f"from {digest[:12]}… that {source}:{number} received"
            )
    return None
