"""Reliability analytics at scale: ``availability`` and ``incident_stats`` against DuckDB.

Builds a synthetic month in memory (numpy, vectorised): 10,000,000 probe results of 125
targets with two probes each (every 60 s, the second probe 30 s after the first, up to 2 s
of jitter, random outages and a weekly one-hour maintenance window per target) and 100,000
incidents. Then computes per target and day the availability figures with
``floorwatch.reliability`` and the same figures with DuckDB SQL (the reference, written from
the definitions in docs/reliability.md, not from the pandas code), asserts they agree within
1e-9 (relative and absolute), and prints the timings.

    .venv/bin/python bench/analytics.py [--rows 10000000] [--incidents 100000] [--seed 7]

The last line is JSON: {"rows", "incidents", "pandas_s", "duckdb_s", "ratio", ...}, where
the times cover availability plus incident stats and ratio = pandas_s / duckdb_s.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from floorwatch.reliability import NS, availability, incident_stats

INTERVAL_S = 60
PROBES = 2
START = pd.Timestamp("2026-11-01", tz="UTC")
DAY_NS = 86_400 * NS
FAULTS = np.array(["service_down", "provider_outage", "api_integration_error",
                   "terminal_offline", "dns_failure"])


def make_results(rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """``rows`` results (125 targets x 2 probes) and the number of whole days they span."""
    rng = np.random.default_rng(seed)
    targets = 125
    series = targets * PROBES
    per_series = rows // series
    n = per_series * series
    step = np.arange(per_series, dtype=np.int64)
    # Row order: target, probe, time (as the store returns it); int32 codes keep memory low.
    series_of = np.repeat(np.arange(series, dtype=np.int32), per_series)
    target_code = (series_of // PROBES).astype(np.int32)
    probe = (series_of % PROBES).astype(np.int8)
    jitter = rng.integers(0, 2_000, n, dtype=np.int64) * 1_000_000  # ms, as ns
    ts = (START.value + np.tile(step, series) * INTERVAL_S * NS
          + probe.astype(np.int64) * (INTERVAL_S // 2) * NS + jitter)
    # Outages: about 30 per series, 1 to 60 results long; each is a +1/-1 pair in a
    # difference array, so the whole mask is one cumulative sum.
    outages = 30 * series
    first = rng.integers(0, per_series, outages) + rng.integers(0, series, outages) * per_series
    length = rng.integers(1, 61, outages)
    stop = np.minimum(first + length, (first // per_series + 1) * per_series)
    delta = np.zeros(n + 1, dtype=np.int32)
    np.add.at(delta, first, 1)
    np.add.at(delta, stop, -1)
    ok = np.cumsum(delta[:-1]) == 0
    # Maintenance: 03:00-04:00 UTC on one weekday per target.
    seconds = (ts - START.value) // NS
    weekday = (seconds // 86_400 + START.day_of_week) % 7
    excluded = (weekday == target_code % 7) & ((seconds % 86_400) // 3600 == 3)
    names = pd.Index([f"target-{i:03d}" for i in range(targets)], dtype="str")
    frame = pd.DataFrame({
        "target": pd.Categorical.from_codes(target_code, categories=names),
        "probe_id": pd.Categorical.from_codes(probe, categories=["http", "tcp"]),
        "ts": pd.DatetimeIndex(ts, tz="UTC"),
        "ok": ok,
        "latency_ms": rng.exponential(40.0, n),
        "excluded": excluded,
    })
    days = int((per_series * INTERVAL_S * NS) // DAY_NS)
    return frame, days


def make_incidents(count: int, days: int, seed: int) -> pd.DataFrame:
    """``count`` incidents over the month: exponential detection, acknowledgement and
    recovery times, some never acknowledged or not yet recovered."""
    rng = np.random.default_rng(seed + 1)
    onset = START.value + np.sort(rng.integers(0, days * DAY_NS, count))
    detected = onset + (rng.exponential(60, count) * NS).astype(np.int64)
    acknowledged = detected + (rng.exponential(300, count) * NS).astype(np.int64)
    recovered = onset + (rng.exponential(900, count) * NS).astype(np.int64)
    nat = np.iinfo(np.int64).min
    acknowledged[rng.random(count) < 0.1] = nat
    recovered[rng.random(count) < 0.02] = nat

    def stamps(values: np.ndarray) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True))

    return pd.DataFrame({
        "incident_id": np.arange(1, count + 1),
        "target": pd.Categorical.from_codes(
            rng.integers(0, 125, count), categories=[f"target-{i:03d}" for i in range(125)]),
        "fault_kind": FAULTS[rng.integers(0, len(FAULTS), count)],
        "onset": stamps(onset),
        "detected": stamps(detected),
        "acknowledged": stamps(acknowledged),
        "remediation_started": stamps(acknowledged),
        "recovered": stamps(recovered),
        "automatic": rng.random(count) < 0.7,
    })


AVAILABILITY_SQL = """
WITH held AS (
    SELECT tg, ts, ok, excluded, latency,
           LEAST(ts + $cap, COALESCE(LEAD(ts) OVER (PARTITION BY tg, pr ORDER BY ts),
                                     ts + $cap)) AS hold_end
    FROM results
),
seg AS (
    SELECT tg, GREATEST(ts, $t0) AS s, LEAST(hold_end, $t1) AS e, ok, excluded
    FROM held WHERE LEAST(hold_end, $t1) > GREATEST(ts, $t0)
),
-- Union length of a set of intervals: each keeps the part after the running maximum of the
-- ends before it (ordered by start), so the parts are disjoint.
sets AS (
    SELECT tg, s, e, 'covered' AS kind FROM seg
    UNION ALL SELECT tg, s, e, 'excluded' FROM seg WHERE excluded
    UNION ALL SELECT tg, s, e, 'bad' FROM seg WHERE excluded OR NOT ok
),
parts AS (
    SELECT tg, kind, e,
           GREATEST(s, COALESCE(MAX(e) OVER (PARTITION BY kind, tg ORDER BY s, e
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), s)) AS s
    FROM sets
),
-- A part is at most one hold long (< a day), so it touches at most two days.
pieces AS (
    SELECT tg, kind, (s - $t0) // $day AS b,
           LEAST(e, $t0 + ((s - $t0) // $day + 1) * $day) - s AS ns
    FROM parts WHERE e > s
    UNION ALL
    SELECT tg, kind, (s - $t0) // $day + 1,
           e - ($t0 + ((s - $t0) // $day + 1) * $day)
    FROM parts WHERE e > $t0 + ((s - $t0) // $day + 1) * $day AND e > s
),
measured AS (
    SELECT tg, b,
           SUM(ns) FILTER (WHERE kind = 'covered') AS covered,
           COALESCE(SUM(ns) FILTER (WHERE kind = 'excluded'), 0) AS excl,
           COALESCE(SUM(ns) FILTER (WHERE kind = 'bad'), 0) AS bad
    FROM pieces GROUP BY tg, b
),
requests AS (
    SELECT tg, (ts - $t0) // $day AS b, COUNT(*) AS n, SUM(ok::BIGINT) AS n_ok,
           AVG(latency) AS latency
    FROM results WHERE ts >= $t0 AND ts < $t1 AND NOT excluded GROUP BY tg, b
)
SELECT m.tg, m.b,
       (m.covered - m.bad) / 1e9 AS up_s,
       (m.bad - m.excl) / 1e9 AS downtime_s,
       m.excl / 1e9 AS excluded_s,
       CASE WHEN m.covered > m.excl
            THEN (m.covered - m.bad)::DOUBLE / (m.covered - m.excl) END AS availability,
       r.n AS requests, r.n_ok::DOUBLE / r.n AS request_ratio, r.latency AS latency_mean_ms
FROM measured m LEFT JOIN requests r USING (tg, b)
ORDER BY m.tg, m.b
"""

INCIDENTS_SQL = """
WITH timed AS (
    SELECT target,
           (detected - onset) / 1e9 AS ttd,
           (acknowledged - detected) / 1e9 AS tta,
           (recovered - onset) / 1e9 AS ttr,
           -- GREATEST skips NULLs: keep an unknown previous recovery unknown.
           CASE WHEN LAG(recovered) OVER w IS NOT NULL
                THEN GREATEST(onset - LAG(recovered) OVER w, 0) / 1e9 END AS tbf
    FROM incidents
    WINDOW w AS (PARTITION BY target ORDER BY onset, incident_id)
)
SELECT target, COUNT(*) AS incidents, COUNT(ttr) AS recovered,
       AVG(ttd) AS mttd_s, MEDIAN(ttd) AS mttd_p50_s, QUANTILE_CONT(ttd, 0.9) AS mttd_p90_s,
       AVG(tta) AS mtta_s, MEDIAN(tta) AS mtta_p50_s, QUANTILE_CONT(tta, 0.9) AS mtta_p90_s,
       AVG(ttr) AS mttr_s, MEDIAN(ttr) AS mttr_p50_s, QUANTILE_CONT(ttr, 0.9) AS mttr_p90_s,
       AVG(tbf) AS mtbf_s, MEDIAN(tbf) AS mtbf_p50_s, QUANTILE_CONT(tbf, 0.9) AS mtbf_p90_s
FROM timed GROUP BY target ORDER BY target
"""


def ns_view(frame: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Timestamp columns as int64 nanoseconds (NaT is int64's minimum)."""
    return {c: pd.DatetimeIndex(frame[c]).as_unit("ns").asi8 for c in columns}


def duckdb_figures(results: pd.DataFrame, incidents: pd.DataFrame, days: int,
                   con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference figures, from int64 nanosecond views of the same frames."""
    view = pd.DataFrame({
        "tg": results["target"].cat.codes.to_numpy(), "pr": results["probe_id"].cat.codes,
        "ts": pd.DatetimeIndex(results["ts"]).as_unit("ns").asi8, "ok": results["ok"],
        "excluded": results["excluded"], "latency": results["latency_ms"],
    })
    con.register("results", view)
    params = {"cap": INTERVAL_S * NS, "t0": START.value, "t1": START.value + days * DAY_NS,
              "day": DAY_NS}
    avail = con.execute(AVAILABILITY_SQL, params).df()

    inc = pd.DataFrame({"incident_id": incidents["incident_id"],
                        "target": incidents["target"].astype(str)})
    for column, values in ns_view(
            incidents, ["onset", "detected", "acknowledged", "recovered"]).items():
        inc[column] = pd.Series(values, dtype="Int64").mask(values == np.iinfo(np.int64).min)
    con.register("incidents", inc)
    stats = con.execute(INCIDENTS_SQL).df()
    return avail, stats


def compare(name: str, ours: pd.Series, ref: pd.Series) -> float:
    """Largest difference; raises when any pair differs beyond 1e-9 (NaN must match NaN)."""
    a, b = ours.to_numpy(dtype=np.float64), ref.to_numpy(dtype=np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        raise AssertionError(f"{name}: NaN in different places")
    diff = np.abs(a - b)[~np.isnan(a)]
    worst = float(diff.max()) if len(diff) else 0.0
    if not np.allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True):
        raise AssertionError(f"{name}: pandas and DuckDB differ by up to {worst}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    began = time.perf_counter()
    results, days = make_results(args.rows, args.seed)
    incidents = make_incidents(args.incidents, days, args.seed)
    end = START + pd.Timedelta(days=days)
    print(f"generated {len(results):,} results over {days} days and {len(incidents):,} "
          f"incidents in {time.perf_counter() - began:.1f} s")

    began = time.perf_counter()
    ours = availability(results, START, end, "1D", interval=INTERVAL_S)
    avail_s = time.perf_counter() - began
    began = time.perf_counter()
    our_stats = incident_stats(incidents)
    stats_s = time.perf_counter() - began
    pandas_s = avail_s + stats_s
    print(f"pandas: availability {avail_s:.2f} s, incident stats {stats_s:.2f} s")

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    began = time.perf_counter()
    ref_avail, ref_stats = duckdb_figures(results, incidents, days, con)
    duckdb_s = time.perf_counter() - began
    con.close()
    print(f"duckdb: {duckdb_s:.2f} s")

    if len(ref_avail) != len(ours):
        raise AssertionError(f"{len(ours)} pandas rows, {len(ref_avail)} DuckDB rows")
    worst: dict[str, float] = {}
    for column in ("up_s", "downtime_s", "excluded_s", "availability", "requests",
                   "request_ratio", "latency_mean_ms"):
        worst[column] = compare(column, ours[column], ref_avail[column])
    if list(our_stats["target"].astype(str)) != list(ref_stats["target"]):
        raise AssertionError("incident stats: different targets")
    for column in ref_stats.columns[1:]:
        worst[column] = compare(column, our_stats[column], ref_stats[column])
    print(f"agree within 1e-9: largest difference {max(worst.values()):.3g}")

    figures: dict[str, Any] = {
        "rows": len(results), "incidents": len(incidents),
        "pandas_s": round(pandas_s, 3), "duckdb_s": round(duckdb_s, 3),
        "ratio": round(pandas_s / duckdb_s, 3),
        "availability_s": round(avail_s, 3), "incident_stats_s": round(stats_s, 3),
        "max_abs_diff": max(worst.values()), "duckdb": duckdb.__version__,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
