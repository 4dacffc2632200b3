"""The audit log against real databases and a real syslog receiver: tampering (edit, delete,
reorder, rewrite) is found and the first bad row named; every entry reaches the JSONL file
and syslog (UDP and TCP) at once, one RFC 5424 line per entry; exports by time."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from floorwatch import store
from floorwatch.audit import (
    AuditLog,
    JsonlSink,
    SyslogSink,
    entry_line,
    entry_record,
    export,
    parse_since,
    sinks_from_env,
    syslog_sink,
)
from floorwatch.cli_security import audit_export, audit_verify
from floorwatch.errors import ConnectError, StoreError
from floorwatch.store import AuditEntry, Store, audit_hash
from tests.fixtures.postgres import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RECEIVE_TIMEOUT_S = 5.0


@pytest.fixture
def migrated(store_url: str) -> Iterator[Store]:
    """A Store on a freshly migrated database (SQLite file or PostgreSQL)."""
    store.upgrade(store_url)
    with Store(store_url) as s:
        yield s


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store, for the tests about sinks rather than databases."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store.upgrade(url)
    with Store(url) as s:
        yield s


def fill(s: Store, count: int = 6) -> list[AuditEntry]:
    return [
        s.append_audit(actor=f"ops:{i}", action=f"step-{i}", subject="hall-1",
                       details={"i": i}, ts=T0 + timedelta(minutes=i))
        for i in range(1, count + 1)
    ]


def as_attacker(s: Store, statements: list[str]) -> None:
    """Run ``statements`` the way someone with database access would: the append-only
    triggers disabled first (SQLite: dropped), restored after on PostgreSQL."""
    with s.engine.begin() as conn:
        if s.backend == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        for statement in statements:
            conn.execute(text(statement))
        if s.backend == "postgresql":
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))


def fault_of(s: Store) -> store.AuditFault:
    count, fault = s.audit_chain_fault()
    assert fault is not None, f"{count} entries, no fault found"
    with pytest.raises(StoreError) as caught:
        s.verify_audit_chain()
    assert str(caught.value) == fault.message
    ok, message = audit_verify(s.url)
    assert (ok, message) == (False, fault.message)
    return fault


# --------------------------------------------------------------------------- tampering


def test_an_intact_chain_verifies_and_says_what_it_holds(migrated: Store) -> None:
    """Six honest entries verify; the message names the count and the newest entry."""
    entries = fill(migrated)
    assert migrated.audit_chain_fault() == (6, None)
    ok, message = audit_verify(migrated.url)
    assert ok
    assert message.startswith("audit log intact: 6 entries, newest #6 (2026-01-05T12:06:00")
    assert entries[-1].hash[:12] in message


def test_an_edited_row_is_named(migrated: Store) -> None:
    """Changing the actor of entry #3 (triggers disabled) makes #3 the first bad row."""
    fill(migrated)
    as_attacker(migrated, ["UPDATE audit_log SET actor = 'mallory' WHERE id = 3"])
    fault = fault_of(migrated)
    assert (fault.entry_id, fault.kind) == (3, "edited")
    assert fault.message.startswith("audit entry #3 was edited or forged: its content does not")


def test_an_edit_with_a_recomputed_hash_is_named_by_the_broken_link(migrated: Store) -> None:
    """Rewriting #3 and its own hash still breaks #4's link: #3 is named as rewritten."""
    entries = fill(migrated)
    third = entries[2]
    forged = audit_hash(ts=third.ts, actor="mallory", action=third.action,
                        subject=third.subject, details=third.details,
                        prev_hash=third.prev_hash)
    as_attacker(migrated, [
        f"UPDATE audit_log SET actor = 'mallory', hash = '{forged}' WHERE id = 3"])
    fault = fault_of(migrated)
    assert (fault.entry_id, fault.kind) == (3, "rewritten")
    assert fault.message.startswith("audit entry #3 was rewritten (edited and re-hashed)")
    assert f"#4 links to {third.hash[:12]}" in fault.message


@pytest.mark.parametrize(
    ("deleted", "named", "gone"), [([4], 4, "#4"), ([2, 3], 2, "#2..#3"), ([1], 1, "#1")]
)
def test_deleted_rows_are_named(
    migrated: Store, deleted: list[int], named: int, gone: str
) -> None:
    """Deleting one row, two rows or the first row names the first missing id."""
    fill(migrated)
    ids = ", ".join(map(str, deleted))
    as_attacker(migrated, [f"DELETE FROM audit_log WHERE id IN ({ids})"])
    fault = fault_of(migrated)
    assert (fault.entry_id, fault.kind) == (named, "deleted")
    assert fault.message.startswith(f"audit entry {gone} was deleted: #{deleted[-1] + 1} links")


def test_reordered_rows_are_named(migrated: Store) -> None:
    """Swapping the ids of #3 and #4 makes #3 out of order: it follows a later row."""
    fill(migrated)
    as_attacker(migrated, [
        "UPDATE audit_log SET id = -3 WHERE id = 3",
        "UPDATE audit_log SET id = 3 WHERE id = 4",
        "UPDATE audit_log SET id = 4 WHERE id = -3",
    ])
    fault = fault_of(migrated)
    assert (fault.entry_id, fault.kind) == (3, "reordered")
    assert fault.message == (
        "audit entry #3 is out of order: it follows #4, which is stored after it, "
        "not #2 (rows were reordered)"
    )


def test_deleting_the_newest_rows_is_found_against_the_live_jsonl_export(
    migrated: Store, tmp_path: Path
) -> None:
    """The chain cannot show a cut-off tail, but the JSONL file that received it can."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(migrated, [JsonlSink(path)]) as log:
        for i in range(4):
            log.record(actor="floorwatch", action=f"step-{i}", subject="dns")
    assert audit_verify(migrated.url, str(path))[0]
    as_attacker(migrated, ["DELETE FROM audit_log WHERE id >= 3"])
    assert migrated.audit_chain_fault() == (2, None)  # what is left is a valid chain
    ok, message = audit_verify(migrated.url, str(path))
    assert not ok
    assert message == (
        f"audit entry #3 was deleted: {path}:3 received it, the store no longer holds it"
    )


def test_a_rewritten_chain_is_found_against_the_live_jsonl_export(
    migrated: Store, tmp_path: Path
) -> None:
    """Re-hashing every entry after an edit fools the chain, not the exported hashes."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(migrated, [JsonlSink(path)]) as log:
        for i in range(3):
            log.record(actor="floorwatch", action=f"step-{i}", subject="dns")
    entries = migrated.audit_entries()
    statements, prev = [], entries[0].hash
    for entry in entries[1:]:
        actor = "mallory" if entry.id == 2 else entry.actor
        digest = audit_hash(ts=entry.ts, actor=actor, action=entry.action,
                            subject=entry.subject, details=entry.details, prev_hash=prev)
        statements.append(f"UPDATE audit_log SET actor = '{actor}', prev_hash = '{prev}', "
                          f"hash = '{digest}' WHERE id = {entry.id}")
        prev = digest
    as_attacker(migrated, statements)
    assert migrated.audit_chain_fault() == (3, None)
    ok, message = audit_verify(migrated.url, str(path))
    assert not ok
    assert message.startswith("audit entry #2 was rewritten: its hash ")
    assert message.endswith(f"that {path}:2 received")


# --------------------------------------------------------------------------- syslog receivers


@dataclass
class Receiver:
    """A syslog collector on loopback: every message it got, in order."""

    protocol: str
    port: int
    messages: list[bytes] = field(default_factory=list)
    connections: int = 0
    got: threading.Condition = field(default_factory=threading.Condition)

    def add(self, message: bytes) -> None:
        with self.got:
            self.messages.append(message)
            self.got.notify_all()

    def wait_for(self, count: int) -> list[bytes]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.messages) >= count, RECEIVE_TIMEOUT_S), (
                f"{len(self.messages)} of {count} messages arrived")
            return list(self.messages)


def _read_frames(conn: socket.socket, receiver: Receiver, stop: threading.Event,
                 drop_after: int | None) -> None:
    """Cut an RFC 6587 octet-counted stream into messages."""
    buf = b""
    with conn:
        conn.settimeout(0.1)
        while not stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            while (space := buf.find(b" ")) > 0 and len(buf) >= space + 1 + int(buf[:space]):
                length = int(buf[:space])
                receiver.add(buf[space + 1 : space + 1 + length])
                buf = buf[space + 1 + length :]
                if drop_after is not None and len(receiver.messages) >= drop_after:
                    return  # the collector restarts: this connection goes away


def _serve_tcp(server: socket.socket, receiver: Receiver, stop: threading.Event,
               drop_after: int | None) -> None:
    workers = []
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        receiver.connections += 1
        worker = threading.Thread(target=_read_frames,
                                  args=(conn, receiver, stop, drop_after), daemon=True)
        worker.start()
        workers.append(worker)
        drop_after = None  # only the first connection is dropped
    for worker in workers:
        worker.join(timeout=2)


def _serve_udp(server: socket.socket, receiver: Receiver, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            data, _ = server.recvfrom(65536)
        except TimeoutError:
            continue
        receiver.add(data)


@pytest.fixture
def start_receiver() -> Iterator[Callable[..., Receiver]]:
    """Starts syslog receivers on free loopback ports; all stopped after the test."""
    stops: list[tuple[threading.Event, threading.Thread, socket.socket]] = []

    def start(protocol: str, drop_after: int | None = None) -> Receiver:
        kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
        server = socket.socket(socket.AF_INET, kind)
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.1)
        receiver = Receiver(protocol, server.getsockname()[1])
        stop = threading.Event()
        if protocol == "tcp":
            server.listen(4)
            thread = threading.Thread(target=_serve_tcp,
                                      args=(server, receiver, stop, drop_after), daemon=True)
        else:
            thread = threading.Thread(target=_serve_udp, args=(server, receiver, stop),
                                      daemon=True)
        thread.start()
        stops.append((stop, thread, server))
        return receiver

    try:
        yield start
    finally:
        for stop, thread, server in stops:
            stop.set()
            thread.join(timeout=3)
            server.close()


# RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG]
HEADER = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>[!-~]{1,255}) "
    r"(?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")


def parse_rfc5424(message: bytes) -> dict[str, Any]:
    """Parse one RFC 5424 message, structured data escapes included; AssertionError if it
    does not follow the grammar."""
    line = message.decode("utf-8")
    head = HEADER.match(line)
    assert head, f"not an RFC 5424 header: {line[:120]!r}"
    assert TIMESTAMP.fullmatch(head["ts"]), head["ts"]
    pos, elements = head.end(), {}
    if line[pos] == "-":
        pos += 1
    while pos < len(line) and line[pos] == "[":
        end_id = min(i for i in (line.find(" ", pos), line.find("]", pos)) if i > 0)
        sd_id, pos, params = line[pos + 1 : end_id], end_id, {}
        while line[pos] == " ":
            eq = line.index("=", pos)
            name = line[pos + 1 : eq]
            assert line[eq + 1] == '"', line[eq:]
            pos, value = eq + 2, []
            while line[pos] != '"':
                if line[pos] == "\\" and line[pos + 1] in '"\\]':
                    pos += 1
                value.append(line[pos])
                pos += 1
            params[name] = "".join(value)
            pos += 1
        assert line[pos] == "]", line[pos:]
        elements[sd_id] = params
        pos += 1
    assert pos == len(line) or line[pos] == " ", line[pos:]
    return {**head.groupdict(), "sd": elements, "msg": line[pos + 1 :]}


def check_syslog(messages: list[bytes], entries: list[AuditEntry]) -> None:
    """Each message is one line of RFC 5424 carrying its entry, in order."""
    assert len(messages) == len(entries)
    for message, entry in zip(messages, entries, strict=True):
        assert b"\n" not in message
        assert b"\r" not in message
        parsed = parse_rfc5424(message)
        assert parsed["version"] == "1"
        warning = "refus" in entry.action
        assert int(parsed["pri"]) == 13 * 8 + (4 if warning else 5)  # log audit facility
        assert parsed["ts"] == entry.ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert (parsed["app"], parsed["msgid"]) == ("floorwatch", entry.action)
        assert parsed["sd"] == {"floorwatch@32473": {
            "id": str(entry.id), "actor": entry.actor, "subject": entry.subject,
            "hash": entry.hash, "prev": entry.prev_hash}}
        assert json.loads(parsed["msg"]) == entry_record(entry)


# --------------------------------------------------------------------------- live export


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_every_entry_reaches_syslog_and_the_jsonl_file_at_once(
    local_store: Store, tmp_path: Path, start_receiver: Callable[..., Receiver], protocol: str
) -> None:
    """Each recorded entry is, before record returns, a line in the file and an RFC 5424
    message at the collector; quotes, brackets and newlines do not break either."""
    receiver = start_receiver(protocol)
    path = tmp_path / "export" / "audit.jsonl"
    sink = SyslogSink("127.0.0.1", receiver.port, protocol, hostname="fw-test")
    entries = []
    with AuditLog(local_store, [JsonlSink(path), sink]) as log:
        for action, subject, details in [
            ("auth.allowed", "restart_service on app-primary", {"step": 1}),
            ("auth.refused", 'say "hi"] \\ there', {"reason": "wrong code\nfor 'ana'"}),
            ("roster.add", "person josé", {"role": "technician", "note": "ünïcode"}),
        ]:
            entries.append(log.record(actor="ana", action=action, subject=subject,
                                      details=details))
            lines = path.read_text().splitlines()
            assert lines[-1] == entry_line(entries[-1])  # written before record returned
    assert path.read_text().splitlines() == [entry_line(e) for e in entries]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    check_syslog(receiver.wait_for(3), entries)
    assert parse_rfc5424(receiver.messages[0])["host"] == "fw-test"


def test_tcp_sink_reconnects_when_the_collector_drops_the_connection(
    local_store: Store, start_receiver: Callable[..., Receiver]
) -> None:
    """After the collector closes the connection, the next entry arrives on a new one."""
    receiver = start_receiver("tcp", drop_after=1)
    with AuditLog(local_store, [syslog_sink(f"tcp://127.0.0.1:{receiver.port}")]) as log:
        first = log.record(actor="floorwatch", action="step-1", subject="dns")
        receiver.wait_for(1)
        second = log.record(actor="floorwatch", action="step-2", subject="dns")
        check_syslog(receiver.wait_for(2), [first, second])
    assert receiver.connections == 2


def test_an_unreachable_collector_fails_loudly_after_the_entry_is_stored(
    local_store: Store, tmp_path: Path
) -> None:
    """With nobody listening, record raises ConnectError naming the sink and the entry; the
    store and the other sinks have the entry."""
    path = tmp_path / "audit.jsonl"
    port = free_port()
    sinks = [SyslogSink("127.0.0.1", port, "tcp", timeout_s=2), JsonlSink(path)]
    with AuditLog(local_store, sinks) as log, pytest.raises(ConnectError) as caught:
        log.record(actor="floorwatch", action="failover", subject="dns")
    assert str(caught.value).startswith(
        f"syslog tcp://127.0.0.1:{port}: audit entry #1 is stored but not exported: "
        "cannot send audit entry #1: Connection refused")
    assert [e.action for e in local_store.audit_entries()] == ["failover"]
    assert len(path.read_text().splitlines()) == 1


def test_an_unwritable_jsonl_file_fails_as_a_store_error(
    local_store: Store, tmp_path: Path
) -> None:
    """A JSONL path that is a folder raises StoreError naming the file; the entry is kept."""
    folder = tmp_path / "is-a-folder"
    folder.mkdir()
    with AuditLog(local_store, [JsonlSink(folder)]) as log, pytest.raises(
        StoreError, match=rf"audit entry #1 is stored but not exported: cannot append audit "
        rf"entry #1 to {re.escape(str(folder))}"
    ):
        log.record(actor="floorwatch", action="x", subject="y")
    assert local_store.verify_audit_chain() == 1


def test_sinks_come_from_the_environment(tmp_path: Path) -> None:
    """FLOORWATCH_AUDIT_JSONL and FLOORWATCH_AUDIT_SYSLOG configure the live export."""
    env = {"FLOORWATCH_AUDIT_JSONL": str(tmp_path / "a.jsonl"),
           "FLOORWATCH_AUDIT_SYSLOG": "tcp://127.0.0.1:6514"}
    jsonl, syslog = sinks_from_env(env)
    assert (jsonl.name, syslog.name) == (f"audit file {tmp_path / 'a.jsonl'}",
                                         "syslog tcp://127.0.0.1:6514")
    assert sinks_from_env({}) == []
    for bad in ("http://127.0.0.1:514", "udp://127.0.0.1", "tcp://:514", "udp://h:99999"):
        with pytest.raises(ValueError, match="syslog URL"):
            syslog_sink(bad)


# --------------------------------------------------------------------------- export


def test_export_since_renders_jsonl_and_csv(migrated: Store) -> None:
    """Entries at or after since, oldest first, as JSON lines or CSV with details as JSON."""
    entries = fill(migrated, 4)
    since = T0 + timedelta(minutes=3)
    assert export(migrated, since, "jsonl") == "".join(entry_line(e) + "\n" for e in entries[2:])
    rows = list(csv.DictReader(io.StringIO(audit_export(migrated.url, since, "csv"))))
    assert [int(r["id"]) for r in rows] == [3, 4]
    assert json.loads(rows[0]["details"]) == {"i": 3}
    assert rows[1]["hash"] == entries[3].hash
    assert rows[0]["ts"] == "2026-01-05T12:03:00.000000+00:00"
    assert audit_export(migrated.url, None, "jsonl").count("\n") == 4
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        audit_export(migrated.url, None, "xml")


def test_since_takes_iso_times_and_ages() -> None:
    """'24h', '7d', '15m' count back from now; ISO times without a zone are UTC."""
    now = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since(" 15m ", now) == now - timedelta(minutes=15)
    assert parse_since("2026-01-05T12:00") == T0
    assert parse_since("2026-01-05T14:00+02:00") == T0
    with pytest.raises(ValueError, match="since 'yesterday': expected an ISO 8601 time"):
        parse_since("yesterday")
