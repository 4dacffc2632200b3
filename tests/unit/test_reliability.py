"""Reliability analytics on hand-built histories whose answers are known."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from floorwatch.inventory import parse_inventory
from floorwatch.reliability import (
    automation_stats,
    availability,
    incident_stats,
    maintenance_intervals,
    mark_maintenance,
    period_edges,
    runbook_stats,
    slo_report,
)
from floorwatch.report import inputs_for, last_complete_period, parse_period, write_period_report

T0 = pd.Timestamp("2026-11-01", tz="UTC")
MINUTE = pd.Timedelta(minutes=1)


def minutes(target: str, count: int, *, start: pd.Timestamp = T0, down: tuple[range, ...] = (),
            excluded: tuple[range, ...] = (), every: pd.Timedelta = MINUTE,
            probe: str = "http") -> pd.DataFrame:
    """``count`` results of one probe every ``every`` from ``start``; the result numbers in
    ``down`` fail, those in ``excluded`` are in maintenance."""
    ok = np.ones(count, dtype=bool)
    maintenance = np.zeros(count, dtype=bool)
    for span in down:
        ok[span.start:span.stop] = False
    for span in excluded:
        maintenance[span.start:span.stop] = True
    return pd.DataFrame({
        "target": target, "probe_id": probe,
        "ts": pd.date_range(start, periods=count, freq=every),
        "ok": ok, "latency_ms": 10.0, "excluded": maintenance,
    })


# --------------------------------------------------------------------------- availability


def test_thirty_days_with_outages_of_10_and_20_minutes_give_99_9306_percent() -> None:
    """A month of minute probes with a 10- and a 20-minute outage is 99.9306 % available."""
    results = minutes("api", 30 * 1440, down=(range(600, 610), range(20_000, 20_020)))
    [row] = availability(results, T0, T0 + pd.Timedelta(days=30), None).to_dict("records")
    assert round(row["availability"] * 100, 4) == 99.9306
    assert row["downtime_s"] == 1800.0
    assert row["up_s"] == 30 * 86_400 - 1800
    assert (row["excluded_s"], row["no_data_s"], row["no_data"]) == (0.0, 0.0, False)
    assert row["requests"] == 43_200
    assert row["ok_requests"] == 43_170


def test_outage_across_midnight_is_split_between_the_two_days() -> None:
    """An outage from 23:50 to 00:20 is 10 minutes down on the first day, 20 on the second."""
    results = minutes("api", 2 * 1440, down=(range(1430, 1460),))
    days = availability(results, T0, T0 + pd.Timedelta(days=2), "1D")
    assert list(days["downtime_s"]) == [600.0, 1200.0]
    assert list(days["period_start"]) == [T0, T0 + pd.Timedelta(days=1)]
    assert days["availability"].tolist() == pytest.approx([1 - 600 / 86_400, 1 - 1200 / 86_400])


def test_maintenance_overlapping_an_outage_is_excluded_not_counted_down() -> None:
    """Of a 20-minute outage, the 10 minutes inside maintenance are excluded, not down."""
    results = minutes("db", 1440, down=(range(600, 620),), excluded=(range(610, 640),))
    [row] = availability(results, T0, T0 + pd.Timedelta(days=1), None).to_dict("records")
    assert row["downtime_s"] == 600.0
    assert row["excluded_s"] == 1800.0
    assert row["availability"] == pytest.approx((86_400 - 1800 - 600) / (86_400 - 1800))
    assert row["requests"] == 1440 - 30  # maintenance results are not requests either
    assert row["ok_requests"] == 1440 - 30 - 10


def test_period_without_data_is_nan_and_flagged_not_100_percent() -> None:
    """A day with no results has NaN availability and no_data set; the day with data does not."""
    results = minutes("printer", 1440)
    days = availability(results, T0, T0 + pd.Timedelta(days=2), "1D")
    first, second = days.to_dict("records")
    assert (first["availability"], first["no_data"]) == (1.0, False)
    assert bool(second["no_data"])
    assert math.isnan(second["availability"])
    assert math.isnan(second["request_ratio"])
    assert second["no_data_s"] == 86_400.0
    assert second["requests"] == 0


def test_target_named_but_without_results_gets_no_data_rows() -> None:
    """A target asked for in ``targets`` that never reported is reported as no data."""
    days = availability(minutes("a", 60), T0, T0 + pd.Timedelta(hours=1), None,
                        targets=["a", "ghost"])
    assert list(days["target"]) == ["a", "ghost"]
    assert list(days["no_data"]) == [False, True]


def test_result_holds_at_most_one_interval_then_the_gap_is_no_data() -> None:
    """Results stop after 10 minutes: the rest of the hour is no data, not up."""
    [row] = availability(minutes("a", 10), T0, T0 + pd.Timedelta(hours=1), None,
                         interval=60).to_dict("records")
    assert (row["up_s"], row["no_data_s"], row["availability"]) == (600.0, 3000.0, 1.0)


def test_last_result_before_start_holds_into_the_window() -> None:
    """A failing result 30 s before the window holds for its remaining 30 s."""
    early = minutes("a", 1, start=T0 - pd.Timedelta(seconds=30), down=(range(1),))
    later = minutes("a", 59, start=T0 + pd.Timedelta(seconds=30))
    [row] = availability(pd.concat([early, later]), T0, T0 + pd.Timedelta(hours=1), None,
                         interval=60).to_dict("records")
    assert row["downtime_s"] == 30.0
    assert row["requests"] == 59  # the early result is not a request of this window


def test_target_is_down_while_any_of_its_probes_fails() -> None:
    """An HTTP probe every 10 s fails for 2 minutes while the TCP probe every minute passes:
    the target is down for those 2 minutes, measured by time, not by result count."""
    http = minutes("gw", 360, every=pd.Timedelta(seconds=10), down=(range(60, 72),))
    tcp = minutes("gw", 60, probe="tcp")
    [row] = availability(pd.concat([tcp, http]), T0, T0 + pd.Timedelta(hours=1), None,
                         ).to_dict("records")
    assert row["downtime_s"] == 120.0
    assert row["up_s"] == 3600.0 - 120.0


def test_default_interval_is_the_median_spacing_of_each_probe() -> None:
    """Results every 5 minutes with one 30-minute gap: the gap minus one interval is no data."""
    times = [T0 + pd.Timedelta(minutes=m) for m in (0, 5, 10, 40, 45, 50, 55)]
    results = pd.DataFrame({"target": "a", "ts": times, "ok": True})
    [row] = availability(results, T0, T0 + pd.Timedelta(hours=1), None).to_dict("records")
    assert row["no_data_s"] == 25 * 60
    assert row["up_s"] == 35 * 60


def test_interval_mapping_caps_each_target_by_its_own_interval() -> None:
    """Per-target intervals: a's results hold 30 s, b's a full minute."""
    results = pd.concat([minutes("a", 10), minutes("b", 10)])
    table = availability(results, T0, T0 + pd.Timedelta(minutes=10), None,
                         interval={"a": 30, "b": 60})
    assert dict(zip(table["target"], table["up_s"], strict=True)) == {"a": 300.0, "b": 600.0}


def test_very_long_window_with_several_targets_is_measured_exactly() -> None:
    """A 200-year window leaves room for one target per stretch of the time axis; every
    target is still measured to the second."""
    start = pd.Timestamp("2000-01-01", tz="UTC")
    day = pd.Timedelta(days=1)
    results = pd.concat([
        minutes(name, 10, start=start, every=day, down=(range(3, 3 + failed),))
        for name, failed in (("a", 0), ("b", 1), ("c", 2))
    ])
    table = availability(results, start, pd.Timestamp("2200-01-01", tz="UTC"), None,
                         interval=86_400)
    assert list(table["downtime_s"]) == [0.0, 86_400.0, 172_800.0]
    assert list(table["up_s"] + table["downtime_s"]) == [864_000.0] * 3


def _brute_force(results: pd.DataFrame, start: pd.Timestamp, seconds: int, interval: int,
                 ) -> dict[str, tuple[int, int, int]]:
    """(up, down, excluded) seconds per target, evaluating the documented rules second by
    second: the reference for the vectorised code."""
    out = {}
    for target, rows in results.groupby("target"):
        state = np.zeros((seconds, 3), dtype=int)  # holding: any, failed, excluded
        for _, series in rows.groupby("probe_id"):
            series = series.sort_values("ts")
            stamps = [int((t - start).total_seconds()) for t in series["ts"]]
            for i, (t, ok, excl) in enumerate(
                    zip(stamps, series["ok"], series["excluded"], strict=True)):
                until = min(t + interval, stamps[i + 1] if i + 1 < len(stamps) else t + interval)
                for second in range(max(t, 0), min(until, seconds)):
                    state[second, 0] = 1
                    state[second, 1] |= not ok
                    state[second, 2] |= bool(excl)
        excluded = state[:, 2] == 1
        down = (state[:, 1] == 1) & ~excluded
        up = (state[:, 0] == 1) & ~excluded & ~down
        out[str(target)] = (int(up.sum()), int(down.sum()), int(excluded.sum()))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_multi_probe_histories_match_a_second_by_second_reference(seed: int) -> None:
    """Random results of two targets with two probes each (gaps, failures, maintenance)
    give exactly the second-by-second reference figures."""
    rng = np.random.default_rng(seed)
    frames = []
    for target in ("a", "b"):
        for probe in ("p", "q"):
            count = 150
            stamps = np.sort(rng.choice(np.arange(-60, 7200), count, replace=False))
            frames.append(pd.DataFrame({
                "target": target, "probe_id": probe,
                "ts": T0 + pd.to_timedelta(stamps, unit="s"),
                "ok": rng.random(count) > 0.2, "excluded": rng.random(count) < 0.1,
            }))
    results = pd.concat(frames).sample(frac=1, random_state=seed)  # any row order
    table = availability(results, T0, T0 + pd.Timedelta(hours=2), None, interval=90)
    expected = _brute_force(results, T0, 7200, 90)
    for row in table.to_dict("records"):
        up, down, excluded = expected[row["target"]]
        assert (row["up_s"], row["downtime_s"], row["excluded_s"]) == (up, down, excluded)


def test_period_edges_follow_calendar_frequencies() -> None:
    """Monthly edges start at the window's start and end at its end, whatever the frequency."""
    edges = period_edges(pd.Timestamp("2026-10-15", tz="UTC"),
                         pd.Timestamp("2026-12-10", tz="UTC"), "MS")
    assert [pd.Timestamp(e, tz="UTC").date().isoformat() for e in edges] == [
        "2026-10-15", "2026-11-01", "2026-12-01", "2026-12-10"]


def test_naive_timestamps_and_missing_columns_are_refused_by_name() -> None:
    """Naive ``ts`` and a frame without ``ok`` fail with errors naming the column."""
    naive = minutes("a", 5).assign(ts=lambda f: f["ts"].dt.tz_localize(None))
    with pytest.raises(ValueError, match=r"results\.ts holds naive timestamps"):
        availability(naive, T0, T0 + MINUTE * 5, None)
    with pytest.raises(ValueError, match=r"results lacks column.*ok"):
        availability(minutes("a", 5).drop(columns="ok"), T0, T0 + MINUTE * 5, None)
    with pytest.raises(ValueError, match=r"end .* is not after start"):
        availability(minutes("a", 5), T0, T0, None)


# --------------------------------------------------------------------------- maintenance


INVENTORY = parse_inventory(
    "version: 1\n"
    "contacts: {ops: {channel: slack, address: '#ops'}}\n"
    "zones:\n"
    "  - name: core\n"
    "    escalation: [ops]\n"
    "    targets:\n"
    "      - {name: db, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 1}}\n"
    "      - {name: web, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 2}}\n"
    "maintenance:\n"
    "  - {name: vacuum, targets: [db], weekly: {days: [sun], start: '02:30',\n"
    "     duration_minutes: 90}, timezone: Europe/Berlin}\n"
    "  - {name: move, zones: [core], start: 2026-10-27T10:00:00, end: 2026-10-27T11:00:00,\n"
    "     timezone: UTC}\n"
)


def test_maintenance_marks_agree_with_the_inventory_across_a_dst_change() -> None:
    """Rows marked in maintenance are exactly those ``Inventory.in_maintenance`` names, over
    three weeks spanning the end of summer time in Berlin."""
    start = datetime(2026, 10, 17, tzinfo=UTC)
    stamps = pd.date_range(start, periods=3 * 7 * 24 * 6, freq="10min")
    frame = pd.concat([pd.DataFrame({"target": name, "zone": "core", "ts": stamps})
                       for name in ("db", "web")], ignore_index=True)
    marked = mark_maintenance(frame, INVENTORY, start, start + timedelta(days=21))
    expected = [INVENTORY.in_maintenance(t, ts.to_pydatetime())
                for t, ts in zip(frame["target"], frame["ts"], strict=True)]
    assert marked.tolist() == expected
    assert 0 < sum(expected) < len(expected)


def test_weekly_window_openings_are_listed_in_utc() -> None:
    """The Sunday 02:30 Berlin window opens at 00:30 UTC in summer and 01:30 UTC in winter."""
    window = INVENTORY.maintenance[0]
    found = maintenance_intervals(window, datetime(2026, 10, 20, tzinfo=UTC),
                                  datetime(2026, 11, 3, tzinfo=UTC))
    assert [(a.isoformat(), (b - a).total_seconds()) for a, b in found] == [
        ("2026-10-25T00:30:00+00:00", 5400.0), ("2026-11-01T01:30:00+00:00", 5400.0)]


# --------------------------------------------------------------------------- incidents


def _at(minute: float | None) -> pd.Timestamp:
    return pd.NaT if minute is None else T0 + pd.Timedelta(minutes=minute)


def incidents_frame(rows: list[tuple[int, str, str, float, float, float | None, float | None,
                                     bool]]) -> pd.DataFrame:
    """(id, target, fault, onset, detected, acknowledged, recovered, automatic) in minutes."""
    frame = pd.DataFrame([{
        "incident_id": i, "target": t, "fault_kind": f, "onset": _at(o), "detected": _at(d),
        "acknowledged": _at(a), "remediation_started": _at(a), "recovered": _at(r),
        "automatic": auto,
    } for i, t, f, o, d, a, r, auto in rows])
    for column in ("onset", "detected", "acknowledged", "remediation_started", "recovered"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


INCIDENTS = incidents_frame([
    (1, "api", "service_down", 0, 1, 3, 10, True),
    (2, "api", "service_down", 100, 102, None, 130, True),
    (3, "api", "provider_outage", 500, 503, 504, None, False),
    (4, "db", "service_down", 0, 2, 6, 40, False),
])


def test_incident_stats_give_mean_median_and_p90_of_each_timing() -> None:
    """MTTD, MTTA, MTTR (onset to recovery) and MTBF per target, with p50 and p90."""
    stats = incident_stats(INCIDENTS).set_index("target")
    api = stats.loc["api"]
    assert (api["incidents"], api["recovered"]) == (3, 2)
    assert api["mttd_s"] == pytest.approx(120.0)  # 1, 2 and 3 minutes
    assert api["mttd_p90_s"] == pytest.approx(168.0)  # 2 + 0.8 x 1 minutes
    assert api["mtta_s"] == pytest.approx(90.0)  # 2 and 1 minutes; #2 never acknowledged
    assert api["mttr_s"] == pytest.approx(1200.0)  # 10 and 30 minutes; #3 still open
    assert api["mttr_p50_s"] == pytest.approx(1200.0)
    assert api["mttr_p90_s"] == pytest.approx(1680.0)
    # Between failures: 10 -> 100 (90 min) and 130 -> 500 (370 min).
    assert api["mtbf_s"] == pytest.approx(230 * 60)
    db = stats.loc["db"]
    assert (db["incidents"], db["mttr_s"], db["mtta_s"]) == (1, 2400.0, 240.0)
    assert math.isnan(db["mtbf_s"])


def test_incident_stats_group_by_any_column_or_overall() -> None:
    """``by=("fault_kind",)`` groups by fault; ``by=()`` gives one overall row, also when
    there are no incidents at all."""
    kinds = incident_stats(INCIDENTS, by=("fault_kind",)).set_index("fault_kind")
    assert dict(kinds["incidents"]) == {"provider_outage": 1, "service_down": 3}
    [overall] = incident_stats(INCIDENTS, by=()).to_dict("records")
    assert overall["incidents"] == 4
    assert overall["mttr_s"] == pytest.approx((600 + 1800 + 2400) / 3)
    [empty] = incident_stats(INCIDENTS.iloc[0:0], by=()).to_dict("records")
    assert empty["incidents"] == 0
    assert math.isnan(empty["mttr_s"])


def test_incident_detected_before_its_onset_is_refused_with_its_id() -> None:
    """A negative time to detect names the incident instead of skewing the mean."""
    bad = incidents_frame([(9, "api", "service_down", 10, 5, None, 20, True)])
    with pytest.raises(ValueError, match=r"time to detect.*incident.*9"):
        incident_stats(bad)


# --------------------------------------------------------------------------- SLOs


def test_slo_report_gives_budget_remaining_and_burn_rate() -> None:
    """99.9306 % against 99.9 %: 2592 s budget, 792 s left, burn rate 0.694; against 99.95 %
    the budget is overspent (burn rate 1.389)."""
    month = minutes("api", 30 * 1440, down=(range(600, 610), range(20_000, 20_020)))
    results = pd.concat([month, month.assign(target="pay")])
    report = slo_report(results, {"api": 99.9, "pay": 99.95, "silent": 99.0}, T0,
                        T0 + pd.Timedelta(days=30)).set_index("target")
    api, pay, silent = report.loc["api"], report.loc["pay"], report.loc["silent"]
    assert api["slo"] == pytest.approx(0.999)
    assert api["budget_s"] == pytest.approx(2592.0)
    assert api["budget_remaining_s"] == pytest.approx(792.0)
    assert api["budget_remaining"] == pytest.approx(792 / 2592)
    assert api["burn_rate"] == pytest.approx(1800 / 2_592_000 / 0.001)
    assert pay["budget_remaining_s"] == pytest.approx(1296.0 - 1800.0)
    assert pay["burn_rate"] == pytest.approx(1800 / 2_592_000 / 0.0005)
    assert bool(silent["no_data"])
    assert math.isnan(silent["burn_rate"])


def test_slo_outside_zero_to_hundred_percent_is_refused() -> None:
    """An objective of 100 % (no budget at all) is an error naming the target."""
    with pytest.raises(ValueError, match="SLO of api"):
        slo_report(minutes("api", 5), {"api": 100.0}, T0, T0 + MINUTE * 5)


# --------------------------------------------------------------------------- automation


ACTIONS = pd.DataFrame([
    {"incident_id": 1, "runbook": "restart_service", "outcome": "succeeded", "automatic": True},
    {"incident_id": 1, "runbook": "restart_service", "outcome": "succeeded", "automatic": True},
    {"incident_id": 2, "runbook": "restart_service", "outcome": "succeeded", "automatic": True},
    {"incident_id": 2, "runbook": "restart_service", "outcome": "failed", "automatic": True},
    {"incident_id": 3, "runbook": "fail_over_dns", "outcome": "planned", "automatic": False},
    {"incident_id": 4, "runbook": "fail_over_dns", "outcome": "rolled_back", "automatic": False},
    {"incident_id": 4, "runbook": "escalate", "outcome": "skipped", "automatic": False},
])


def test_automation_stats_give_share_success_rate_and_reopens() -> None:
    """2 of 3 recovered incidents fixed automatically; 1 of 3 runbook runs that acted
    succeeded (a dry run and a skipped step are not runs); #1 fixed at minute 10 came back
    as #2 at minute 100 (not within the hour), #2 did not come back."""
    [row] = automation_stats(INCIDENTS, ACTIONS).to_dict("records")
    assert (row["incidents"], row["recovered"], row["resolved_automatically"]) == (4, 3, 2)
    assert row["automatic_share"] == pytest.approx(2 / 3)
    assert (row["runbook_runs"], row["runbook_succeeded"]) == (3, 1)
    assert row["runbook_success_rate"] == pytest.approx(1 / 3)
    assert (row["reopened"], row["reopen_rate"]) == (0, 0.0)


def test_new_incident_within_an_hour_of_an_automatic_fix_counts_as_reopened() -> None:
    """Same target and fault 45 minutes after an automatic recovery: reopened; a different
    fault kind at the same time is not."""
    frame = incidents_frame([
        (1, "api", "service_down", 0, 1, 2, 10, True),
        (2, "api", "service_down", 55, 56, 57, 70, False),
        (3, "api", "provider_outage", 20, 21, 22, 30, True),
    ])
    [row] = automation_stats(frame, ACTIONS.iloc[0:0]).to_dict("records")
    assert (row["resolved_automatically"], row["reopened"]) == (2, 1)
    assert row["reopen_rate"] == pytest.approx(0.5)
    assert math.isnan(row["runbook_success_rate"])


def test_runbook_stats_per_runbook_and_unknown_outcomes_refused() -> None:
    """Success rate per runbook; an outcome the store does not know is an error."""
    stats = runbook_stats(ACTIONS).set_index("runbook")
    assert dict(stats["runs"]) == {"fail_over_dns": 1, "restart_service": 2}
    assert stats.loc["restart_service", "success_rate"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"unknown value.*exploded"):
        runbook_stats(ACTIONS.assign(outcome="exploded"))


# --------------------------------------------------------------------------- periods


@pytest.mark.parametrize(("text", "kind", "start", "end"), [
    ("2026-11", "month", "2026-11-01", "2026-12-01"),
    ("2026-12", "month", "2026-12-01", "2027-01-01"),
    ("2026-11-05", "day", "2026-11-05", "2026-11-06"),
    ("2026-W47", "week", "2026-11-16", "2026-11-23"),
    ("2020-w53", "week", "2020-12-28", "2021-01-04"),
])
def test_periods_parse_to_utc_bounds(text: str, kind: str, start: str, end: str) -> None:
    """Months, days and ISO weeks become [start, end) in UTC."""
    period = parse_period(text)
    assert period.kind == kind
    assert (period.start.date().isoformat(), period.end.date().isoformat()) == (start, end)
    assert period.start.tzinfo is UTC


@pytest.mark.parametrize("text", ["2026-13", "2026-11-31", "2026-W54", "Nov 2026", "2026"])
def test_bad_periods_are_refused_with_the_formats(text: str) -> None:
    """A malformed or impossible period names itself."""
    with pytest.raises(ValueError, match=text):
        parse_period(text)


def test_last_complete_period_is_the_one_before_now() -> None:
    """On Wednesday 2026-11-18: yesterday, last ISO week (W46) and October."""
    now = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
    assert [last_complete_period(k, now).label for k in ("day", "week", "month")] == [
        "2026-11-17", "2026-W46", "2026-10"]


def test_report_of_an_empty_history_says_no_data_and_still_writes_every_file(
    tmp_path: Path,
) -> None:
    """No results, incidents or actions: every table, chart and the page are written, and
    the summary says there was no data rather than showing 100 %."""
    empty_results = pd.DataFrame({"target": pd.Series([], dtype="str"),
                                  "ts": pd.to_datetime([], utc=True),
                                  "ok": pd.Series([], dtype=bool)})
    inputs = inputs_for(empty_results, INCIDENTS.iloc[0:0], ACTIONS.iloc[0:0])
    report = write_period_report(inputs, parse_period("2026-11-05"), tmp_path)
    assert {p.name for p in report.files} >= {"availability.parquet", "mttr_trend.csv",
                                              "availability_heatmap.png", "index.html"}
    assert all(p.stat().st_size > 0 for p in report.files)
    assert report.summary.splitlines()[1:] == ["No probe data.", "No incidents."]
    [automation] = report.tables["automation"].to_dict("records")
    assert automation["incidents"] == 0
