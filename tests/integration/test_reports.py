"""Period reports from a real store: the loaders on SQLite and PostgreSQL, the
``floorwatch report`` path into a folder, and the flow's Prefect artifacts."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from floorwatch import store
from floorwatch.reliability import load_actions, load_incidents, load_results
from floorwatch.report import TABLES, run_report_cli
from floorwatch.store import ProbeResultRow, Store

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 2, tzinfo=UTC)
PERIOD = "2026-11-02"
INVENTORY = """\
version: 1
contacts: {ops: {channel: slack, address: '#ops'}}
zones:
  - name: core
    escalation: [ops]
    targets:
      - {name: api, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 1},
         probes: [{kind: tcp, interval: 60, timeout: 2}]}
      - {name: db, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 2},
         probes: [{kind: tcp, interval: 60, timeout: 2}], slo: {objective: 99.99}}
maintenance:
  - {name: db-upgrade, targets: [db], start: 2026-11-02T10:00:00, end: 2026-11-02T10:30:00,
     timezone: UTC}
"""


def _results() -> list[ProbeResultRow]:
    """api and db every minute from an hour before the day to its end; api fails 12:00-12:10,
    db 10:20-10:40 (half of it inside db's maintenance window)."""
    rows = []
    for target, (first, last) in (("api", (12 * 60, 12 * 60 + 10)),
                                  ("db", (10 * 60 + 20, 10 * 60 + 40))):
        for minute in range(-60, 1440):
            ok = not first <= minute < last
            rows.append(ProbeResultRow(
                target=target, zone="core", probe_kind="tcp", probe_id="tcp",
                ts=DAY + timedelta(minutes=minute), ok=ok, latency_ms=2.0,
                faults=() if ok else ("service_down",),
                error_message=None if ok else "refused",
            ))
    return rows


def _fill(s: Store) -> int:
    """The day's results, one api incident fixed automatically, and its runbook step."""
    s.insert_probe_results(_results())
    at = DAY + timedelta(hours=12)
    incident = s.open_incident(
        target="api", zone="core", fault_kind="service_down", severity="high",
        summary="api refuses connections", onset_at=at, detected_at=at + timedelta(minutes=2),
        automatic=True,
    )
    s.set_incident_state(incident.id, "acknowledged", message="on it",
                         at=at + timedelta(minutes=3))
    s.record_action(runbook="restart_service", step="restart", outcome="succeeded",
                    started_at=at + timedelta(minutes=4), finished_at=at + timedelta(minutes=5),
                    incident_id=incident.id, target="api", automatic=True)
    s.set_incident_state(incident.id, "resolved", message="verified",
                         at=at + timedelta(minutes=11), recovered_at=at + timedelta(minutes=10))
    return incident.id


@pytest.fixture
def report_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite store in tmp_path, named by FLOORWATCH_DATABASE_URL, holding the
    day's history; FLOORWATCH_INVENTORY points at the test inventory."""
    url = f"sqlite:///{tmp_path / 'floorwatch.db'}"
    monkeypatch.setenv("FLOORWATCH_DATABASE_URL", url)
    monkeypatch.setenv("FLOORWATCH_HOME", str(tmp_path))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY)
    monkeypatch.setenv("FLOORWATCH_INVENTORY", str(inventory))
    store.upgrade(url)
    with Store(url) as s:
        _fill(s)
    return url


def test_loaders_read_typed_frames_on_both_backends(store_url: str) -> None:
    """Results, incidents and actions come back as UTC frames with the documented columns,
    on SQLite and on PostgreSQL alike."""
    store.upgrade(store_url)
    with Store(store_url) as s:
        incident_id = _fill(s)
    results = load_results(store_url, DAY, DAY + timedelta(days=1))
    assert len(results) == 2 * 1500  # the hour before the day is read too
    assert str(results["ts"].dt.tz) == "UTC"
    assert results["ts"].min() == pd.Timestamp(DAY - timedelta(hours=1))
    assert results["ok"].dtype == bool
    assert int((~results["ok"]).sum()) == 30
    assert not results["excluded"].any()  # no inventory, no maintenance
    incidents = load_incidents(store_url, DAY, DAY + timedelta(days=1))
    [row] = incidents.to_dict("records")
    assert row["incident_id"] == incident_id
    assert row["recovered"] - row["onset"] == pd.Timedelta(minutes=10)
    assert pd.isna(row["remediation_started"])
    assert row["automatic"] is True or bool(row["automatic"])
    actions = load_actions(store_url, DAY, DAY + timedelta(days=1))
    assert list(actions["outcome"]) == ["succeeded"]
    assert load_incidents(store_url, DAY + timedelta(days=1), DAY + timedelta(days=2)).empty


def test_report_cli_writes_every_table_chart_and_page_with_the_right_numbers(
    report_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """``run_report_cli`` for a day writes CSV and Parquet of each table, two PNG charts and
    the HTML page; availability, MTTR and automation figures match the history."""
    out = tmp_path / "report"
    assert run_report_cli(PERIOD, out, report_store) == 0
    for name in TABLES:
        assert (out / f"{name}.csv").stat().st_size > 0
        assert (out / f"{name}.parquet").stat().st_size > 0
    for chart in ("availability_heatmap.png", "mttr_trend.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert 'src="availability_heatmap.png"' in page
    assert "99.3056 %" in page  # api: 10 minutes down of 1440

    availability = pd.read_parquet(out / "availability.parquet").set_index("target")
    assert availability.loc["api", "downtime_s"] == 600.0
    # Without an inventory nothing is maintenance: db's whole 20 minutes count down.
    assert availability.loc["db", "downtime_s"] == 1200.0
    assert availability.loc["api", "availability"] == pytest.approx(1 - 600 / 86_400)
    csv = pd.read_csv(out / "availability.csv").set_index("target")
    assert csv.loc["db", "downtime_s"] == 1200.0
    incidents = pd.read_parquet(out / "incidents.parquet").set_index("target")
    assert incidents.loc["api", "mttr_s"] == 600.0
    assert incidents.loc["api", "mttd_s"] == 120.0
    assert incidents.loc["api", "mtta_s"] == 60.0
    [automation] = pd.read_parquet(out / "automation.parquet").to_dict("records")
    assert (automation["automatic_share"], automation["runbook_success_rate"]) == (1.0, 1.0)
    printed = capsys.readouterr().out
    assert "Reliability report 2026-11-02" in printed
    assert "1 incident, MTTR 10.0 min, 100 % resolved automatically" in printed
    assert (out / "summary.txt").read_text().startswith("Reliability report 2026-11-02")


def test_report_cli_uses_the_inventory_for_maintenance_and_slos(
    report_store: str, tmp_path: Path,
) -> None:
    """With the inventory, db's 10 minutes inside its maintenance window are excluded and
    its 99.99 % SLO is overspent."""
    out = tmp_path / "with-inventory"
    assert run_report_cli(PERIOD, out, report_store, tmp_path / "inventory.yaml") == 0
    availability = pd.read_csv(out / "availability.csv").set_index("target")
    assert availability.loc["db", "downtime_s"] == 600.0
    assert availability.loc["db", "excluded_s"] == 1800.0
    slo = pd.read_csv(out / "slo.csv").set_index("target")
    assert slo.loc["db", "slo"] == pytest.approx(0.9999)
    assert slo.loc["db", "budget_remaining_s"] < 0
    assert "Error budget spent: db" in (out / "summary.txt").read_text()


def test_report_cli_refuses_a_bad_period_and_an_unmigrated_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit status 1 with the reason: a period that is not a date, a store with no tables."""
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert run_report_cli("2026-13", tmp_path / "a", empty) == 1
    assert "period '2026-13'" in capsys.readouterr().err
    assert run_report_cli(PERIOD, tmp_path / "b", empty) == 1
    error = capsys.readouterr().err
    assert "cannot read probe results from sqlite:///" in error
    assert "no such table" in error
    assert not (tmp_path / "b").exists()


async def test_flow_publishes_table_and_markdown_artifacts_and_posts_the_summary(
    prefect_client: Any, report_store: str, tmp_path: Path,
) -> None:
    """``build-period-report`` writes the files, publishes one table artifact per table and a
    markdown summary, and queues the chat summary when notifications are installed."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.reports import build_period_report

    out = tmp_path / "flow"
    result = await build_period_report(period=PERIOD, out_dir=str(out),
                                       inventory_path=str(tmp_path / "inventory.yaml"))
    assert result["period"] == PERIOD
    assert (out / "index.html").exists()
    assert "report-2026-11-02-availability" in result["artifacts"]

    artifacts = await prefect_client.read_artifacts(artifact_filter=ArtifactFilter(
        key=ArtifactFilterKey(any_=["report-2026-11-02-availability", "report-2026-11-02"])))
    by_key = {a.key: a for a in artifacts}
    rows = by_key["report-2026-11-02-availability"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    db = next(row for row in rows if row["target"] == "db")
    assert (db["downtime_s"], db["excluded_s"]) == (600.0, 1800.0)
    markdown = by_key["report-2026-11-02"].data
    assert "# Reliability report 2026-11-02" in markdown
    assert "| api | 99.3056 % |" in markdown

    if importlib.util.find_spec("tasks.notify") is None:
        assert result["posted"] is False
    else:
        assert result["posted"] is True
        with Store(report_store) as s:
            events = [row.event for row in s.pending_notifications(limit=1000)]
        assert "summary#report-2026-11-02" in events
