"""The store against real databases: every test runs on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from floorwatch import store
from floorwatch.errors import StoreError, UnknownNameError
from floorwatch.store import GENESIS_HASH, ProbeResultRow, Store
from tests.fixtures.postgres import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def migrated(store_url: str) -> Iterator[Store]:
    """A Store on a freshly migrated database."""
    store.upgrade(store_url)
    with Store(store_url) as s:
        yield s


def _rows(count: int, target: str = "api-gateway") -> list[ProbeResultRow]:
    return [
        ProbeResultRow(
            target=target,
            zone="online",
            probe_kind="http",
            ts=T0 + timedelta(seconds=i),
            ok=i % 7 != 0,
            latency_ms=float(i % 250),
            values={"status": 200 if i % 7 else 503, "seq": i},
            error_class=None if i % 7 else "CommandFailed",
            error_message=None if i % 7 else "HTTP 503",
            faults=() if i % 7 else ("api_integration_error",),
        )
        for i in range(count)
    ]


def _open(s: Store, target: str = "provider-alpha", fault: str = "down") -> store.IncidentRow:
    return s.open_incident(
        target=target,
        zone="online",
        fault_kind=fault,
        severity="major",
        summary=f"{target} {fault}",
        onset_at=T0,
        detected_at=T0 + timedelta(seconds=30),
    )


# --------------------------------------------------------------------------- migrations


def test_upgrade_reaches_head_and_repeating_it_changes_nothing(store_url: str) -> None:
    """A second upgrade on a migrated store is a no-op that keeps the data."""
    assert store.current_revision(store_url) is None
    head = store.head_revision()
    assert store.upgrade(store_url) == head
    with Store(store_url) as s:
        s.insert_probe_results(_rows(3))
    assert store.upgrade(store_url) == head
    assert store.current_revision(store_url) == head
    assert store.db_info(store_url)["tables"]["probe_results"] == 3


def test_migrated_schema_matches_store_metadata(store_url: str) -> None:
    """Autogenerate finds no difference between the migrated schema and store.metadata."""
    store.upgrade(store_url)
    engine = store.make_engine(store_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, store.metadata) == []
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- probe results


def test_bulk_insert_of_10000_rows_is_one_executemany(migrated: Store) -> None:
    """10,000 results go in as one INSERT statement executed many, and read back intact."""
    statements: list[tuple[str, bool]] = []

    def record(
        _conn: Connection, _cursor: Any, statement: str, _params: Any, _ctx: Any, many: bool
    ) -> None:
        statements.append((statement, many))

    rows = _rows(10_000)
    event.listen(migrated.engine, "before_cursor_execute", record)
    try:
        assert migrated.insert_probe_results(rows) == 10_000
    finally:
        event.remove(migrated.engine, "before_cursor_execute", record)

    inserts = [(sql, many) for sql, many in statements if sql.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert inserts[0][1] is True
    assert store.db_info(migrated.url)["tables"]["probe_results"] == 10_000
    newest = migrated.recent_results("api-gateway", limit=5)
    assert newest == rows[::-1][:5]
    assert newest[0].ts.tzinfo is not None
    assert migrated.recent_results("nobody") == []


def test_bulk_insert_accepts_mappings_and_names_the_bad_row(migrated: Store) -> None:
    """Plain mappings are validated; an invalid one is refused with its index, nothing written."""
    good = {"target": "dns", "zone": "online", "probe_kind": "dns", "ts": T0, "ok": True}
    assert migrated.insert_probe_results([good]) == 1
    naive = {**good, "ts": datetime(2026, 1, 5, 12, 0)}
    with pytest.raises(ValueError, match="probe result row 1 is invalid"):
        migrated.insert_probe_results([good, naive])
    assert len(migrated.recent_results("dns")) == 1


# --------------------------------------------------------------------------- incidents


def test_second_unresolved_incident_for_target_and_fault_is_refused(migrated: Store) -> None:
    """One unresolved incident per (target, fault): a second is refused, naming the first."""
    first = _open(migrated)
    with pytest.raises(StoreError, match=rf"incident #{first.id} is already open"):
        _open(migrated)
    other_fault = _open(migrated, fault="slow")
    assert other_fault.id != first.id
    migrated.set_incident_state(first.id, "resolved", message="probe green again")
    reopened = _open(migrated)
    assert reopened.id not in (first.id, other_fault.id)
    assert migrated.find_open_incident("provider-alpha", "down") == reopened


def test_partial_unique_index_holds_without_the_store_api(migrated: Store) -> None:
    """The database itself refuses a second unresolved incident written by raw SQL."""
    _open(migrated)
    row = {
        "target": "provider-alpha",
        "zone": "online",
        "fault_kind": "down",
        "severity": "major",
        "summary": "written around the API",
        "onset_at": T0,
        "detected_at": T0,
        "automatic": True,
        "created_at": T0,
        "updated_at": T0,
    }
    with migrated.engine.begin() as conn:
        # Resolved incidents may pile up for the same target and fault.
        conn.execute(store.incidents.insert(), [{**row, "state": "resolved"}] * 2)
    with pytest.raises(IntegrityError), migrated.engine.begin() as conn:
        conn.execute(store.incidents.insert(), {**row, "state": "escalated"})


def test_incident_timeline_records_each_state_with_its_timestamp(migrated: Store) -> None:
    """State changes stamp their column and append to the timeline, oldest first."""
    incident = _open(migrated)
    ack = migrated.set_incident_state(
        incident.id, "acknowledged", message="on it", actor="ops:ana", at=T0 + timedelta(minutes=1)
    )
    assert ack.acknowledged_at == T0 + timedelta(minutes=1)
    migrated.add_event(
        incident.id, "diagnosis", "port closed", data={"port": 443}, ts=T0 + timedelta(minutes=2)
    )
    timeline = migrated.events(incident.id)
    assert [(e.kind, e.actor, e.ts) for e in timeline] == [
        ("opened", "floorwatch", incident.detected_at),
        ("acknowledged", "ops:ana", T0 + timedelta(minutes=1)),
        ("diagnosis", "floorwatch", T0 + timedelta(minutes=2)),
    ]
    assert timeline[-1].data == {"port": 443}
    with pytest.raises(StoreError, match="no incident #999999"):
        migrated.set_incident_state(999_999, "resolved", message="x")


def test_action_duration_is_derived_from_its_start_and_finish(migrated: Store) -> None:
    """record_action stores the step with a duration in milliseconds."""
    incident = _open(migrated)
    action_id = migrated.record_action(
        runbook="restart-service",
        step="restart",
        outcome="succeeded",
        started_at=T0,
        finished_at=T0 + timedelta(milliseconds=1500),
        incident_id=incident.id,
        parameters={"service": "game-engine"},
        evidence={"exit": 0},
    )
    with migrated.engine.connect() as conn:
        duration = conn.execute(
            text("SELECT duration_ms FROM actions WHERE id = :id"), {"id": action_id}
        ).scalar_one()
    assert duration == pytest.approx(1500.0)


def test_notification_with_a_known_idempotency_key_is_not_queued_twice(migrated: Store) -> None:
    """Enqueueing the same key twice returns the first row and queues one notification."""
    first = migrated.enqueue_notification(
        event="incident.opened", channel="slack", idempotency_key="inc-1-opened", payload={"a": 1}
    )
    again = migrated.enqueue_notification(
        event="incident.opened", channel="slack", idempotency_key="inc-1-opened", payload={"a": 2}
    )
    assert first == (first[0], True)
    assert again == (first[0], False)
    pending = migrated.pending_notifications(now=datetime.now(UTC) + timedelta(seconds=1))
    assert [(n.id, n.payload) for n in pending] == [(first[0], {"a": 1})]
    migrated.mark_notification(first[0], "delivered")
    assert migrated.pending_notifications(now=datetime.now(UTC) + timedelta(seconds=1)) == []


# --------------------------------------------------------------------------- audit log


def test_audit_log_refuses_update_and_delete(migrated: Store) -> None:
    """The database rejects UPDATE and DELETE on audit_log; the entries stay as written."""
    migrated.append_audit(actor="ops:ana", action="approve", subject="incident#1")
    before = migrated.audit_entries()
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), migrated.engine.begin() as conn:
            conn.execute(text(statement))
    assert migrated.audit_entries() == before


def test_audit_entries_link_by_hash_and_a_forged_entry_is_detected(migrated: Store) -> None:
    """Each entry's prev_hash is its predecessor's hash; a forged append breaks verification."""
    entries = [
        migrated.append_audit(
            actor="floorwatch", action=f"step-{i}", subject="dns", details={"i": i}
        )
        for i in range(3)
    ]
    assert entries[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert migrated.audit_entries() == entries
    assert migrated.verify_audit_chain() == 3

    forged = {
        "ts": T0,
        "actor": "mallory",
        "action": "erase",
        "subject": "dns",
        "details": {},
        "prev_hash": entries[-1].hash,
        "hash": "f" * 64,
    }
    with migrated.engine.begin() as conn:
        conn.execute(store.audit_log.insert(), forged)
    with pytest.raises(StoreError, match="does not match its hash"):
        migrated.verify_audit_chain()


def test_concurrent_audit_appends_form_one_unbroken_chain(migrated: Store) -> None:
    """Writers appending at the same time are serialised: one chain, no fork, nothing lost."""

    def append(writer: int) -> None:
        for i in range(10):
            migrated.append_audit(actor=f"worker-{writer}", action=f"a{i}", subject="hall-1")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(append, range(4)))
    assert migrated.verify_audit_chain() == 40


# --------------------------------------------------------------------------- info and outages


def test_db_info_reports_backend_revision_counts_and_masks_the_password(store_url: str) -> None:
    """db_info names the backend, revision and row counts, never the password."""
    url = store_url
    if url.startswith("postgresql"):
        # Trust authentication accepts any password, so the secret only has to be hidden.
        url = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
    before = store.db_info(url)
    assert before["revision"] is None
    assert before["tables"]["incidents"] is None
    store.upgrade(url)
    with Store(url) as s:
        s.insert_probe_results(_rows(4))
        s.append_audit(actor="ops", action="login", subject="ui")
    info = store.db_info(url)
    assert "s3cret-pw" not in repr(info)
    assert info["revision"] == info["head"] == store.head_revision()
    assert info["tables"]["probe_results"] == 4
    assert info["tables"]["audit_log"] == 1
    assert info["tables"]["incidents"] == 0
    if url.startswith("sqlite"):
        assert info["backend"] == "sqlite"
        assert info["path"] == make_url(url).database
        assert Path(info["path"]).is_file()
    else:
        assert info["backend"] == "postgresql"
        assert info["path"] is None
        assert ":***@127.0.0.1" in info["url"]


def test_unreachable_postgres_is_a_store_error_naming_the_masked_url() -> None:
    """A PostgreSQL port with nothing listening gives StoreError with the masked URL."""
    port = free_port()
    url = f"postgresql+psycopg://floorwatch:hunter2@127.0.0.1:{port}/floorwatch"
    with Store(url) as s, pytest.raises(StoreError) as caught:
        s.insert_probe_results(_rows(1))
    message = str(caught.value)
    assert f"store unavailable at postgresql+psycopg://floorwatch:***@127.0.0.1:{port}" in message
    assert "inserting 1 probe results" in message
    assert "hunter2" not in message
    with pytest.raises(StoreError, match="while migrating"):
        store.upgrade(url)


# --------------------------------------------------------------------------- configuration


def test_database_url_prefers_explicit_then_env_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The URL comes from the argument, else FLOORWATCH_DATABASE_URL, else FLOORWATCH_HOME."""
    monkeypatch.setenv("FLOORWATCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLOORWATCH_DATABASE_URL", raising=False)
    assert store.database_url() == f"sqlite:///{tmp_path / 'home' / 'floorwatch.db'}"
    monkeypatch.setenv("FLOORWATCH_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/x")
    assert store.database_url() == "postgresql+psycopg://u@127.0.0.1/x"
    assert store.database_url("sqlite:///explicit.db") == "sqlite:///explicit.db"
    monkeypatch.delenv("FLOORWATCH_HOME")
    monkeypatch.delenv("FLOORWATCH_DATABASE_URL")
    monkeypatch.chdir(tmp_path)
    assert store.database_url() == f"sqlite:///{tmp_path / '.floorwatch' / 'floorwatch.db'}"


def test_history_returns_the_newest_results_per_target_oldest_first(migrated: Store) -> None:
    """history() keeps the newest N of each target, in time order, in one query."""
    s = migrated
    s.insert_probe_results(_rows(50, "api-gateway") + _rows(5, "provider-beta"))
    history = s.history(["api-gateway", "provider-beta", "nobody"], per_target=10)
    assert set(history) == {"api-gateway", "provider-beta"}
    seqs = [r.values["seq"] for r in history["api-gateway"]]
    assert seqs == list(range(40, 50))
    assert len(history["provider-beta"]) == 5
    failing = [r for r in history["api-gateway"] if not r.ok]
    assert all(r.faults == ("api_integration_error",) for r in failing)


def test_latest_results_and_unresolved_incidents(migrated: Store) -> None:
    """latest_results() gives one row per (target, probe); resolved incidents drop out."""
    s = migrated
    s.insert_probe_results(_rows(20, "api-gateway") + _rows(3, "provider-beta"))
    latest = {r.target: r for r in s.latest_results(since=T0)}
    assert latest["api-gateway"].values["seq"] == 19
    assert latest["provider-beta"].values["seq"] == 2
    first = _open(s, "provider-alpha", "service_down")
    second = _open(s, "provider-beta", "service_down")
    s.set_incident_state(first.id, "resolved", message="recovered")
    assert [i.id for i in s.unresolved_incidents()] == [second.id]
    assert s.unresolved_incidents(["provider-alpha"]) == []


def test_budget_counts_only_recent_automatic_actions_on_the_target(migrated: Store) -> None:
    """count_automatic_actions() is the remediation budget: automatic, this target, window."""
    s = migrated
    for minutes, automatic, target in ((5, True, "app-primary"), (30, True, "app-primary"),
                                       (90, True, "app-primary"), (5, False, "app-primary"),
                                       (5, True, "app-standby")):
        s.record_action(runbook="restart_service", step="restart", outcome="succeeded",
                        started_at=T0 - timedelta(minutes=minutes), target=target,
                        automatic=automatic)
    s.record_action(runbook="restart_service", step="plan", outcome="planned",
                    started_at=T0, target="app-primary", automatic=True)
    assert s.count_automatic_actions("app-primary", since=T0 - timedelta(hours=1)) == 2


def test_a_target_has_one_active_hold_until_released(migrated: Store) -> None:
    """Holding a held target keeps the first hold; release ends it; a second release, or one
    of a target never held, is refused by name; a new hold after release is a new row."""
    first, placed = migrated.place_hold("app-primary", "fenced", set_by="automation")
    assert placed
    again, placed_again = migrated.place_hold("app-primary", "other reason", set_by="alice")
    assert (again.id, again.reason, placed_again) == (first.id, "fenced", False)
    assert list(migrated.active_holds()) == ["app-primary"]

    released = migrated.release_hold("app-primary", released_by="bob")
    assert released.released_by == "bob"
    assert released.released_at is not None
    assert migrated.active_holds() == {}
    with pytest.raises(UnknownNameError, match="'app-primary' is not held"):
        migrated.release_hold("app-primary", released_by="bob")
    with pytest.raises(UnknownNameError, match="'never' is not held"):
        migrated.release_hold("never", released_by="bob")
    second, placed = migrated.place_hold("app-primary", "fenced again", set_by="automation")
    assert placed
    assert second.id != first.id


def test_one_active_hold_per_target_holds_without_the_store_api(migrated: Store) -> None:
    """The partial unique index refuses a second active hold written behind the API's back."""
    migrated.place_hold("app-primary", "fenced", set_by="automation")
    row = {"target": "app-primary", "reason": "x", "set_by": "y",
           "set_at": datetime.now(UTC)}
    with migrated.engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(store.holds.insert(), row)
