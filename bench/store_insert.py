"""Bulk insert of probe results through ``Store.insert_probe_results`` (one executemany).

Inserts 100,000 results into a fresh SQLite file in a temporary folder and, when
FLOORWATCH_DATABASE_URL is set, into that database too (migrated first; the benchmark's rows
are deleted afterwards). The baseline, in the same run, is the standard library's sqlite3
``executemany`` of the same rows, converted the same way, into the same schema.

    .venv/bin/python bench/store_insert.py [--rows 100000]

Prints one line per backend, then a last line of JSON:
{"rows": ..., "seconds": ..., "rows_per_s": ..., "baseline_sqlite3_s": ...,
 "backends": {"sqlite": {...}, "postgresql": {...}}}   (top-level figures are SQLite's)
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import make_url

from floorwatch import store
from floorwatch.store import ProbeResultRow, Store


def make_rows(count: int, zone: str) -> list[ProbeResultRow]:
    """``count`` results over 2,000 targets, one in ten failing, as a sweep would produce."""
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        ProbeResultRow(
            target=f"terminal-{i % 2000:04d}",
            zone=zone,
            probe_kind="tcp",
            ts=start + timedelta(milliseconds=i),
            ok=i % 10 != 0,
            latency_ms=float(i % 300) / 3,
            values={"port": 443, "attempt": 1},
            error_class=None if i % 10 else "ConnectError",
            error_message=None if i % 10 else "connection refused",
            faults=() if i % 10 else ("service_down",),
        )
        for i in range(count)
    ]


def time_store(url: str, rows: list[ProbeResultRow]) -> dict[str, Any]:
    """Migrate ``url`` and time one bulk insert of ``rows`` through the Store."""
    store.upgrade(url)
    with Store(url) as s:
        began = time.perf_counter()
        inserted = s.insert_probe_results(rows)
        seconds = time.perf_counter() - began
    if inserted != len(rows):
        raise SystemExit(f"inserted {inserted} rows, expected {len(rows)}")
    return {
        "url": store.mask_url(url),
        "seconds": round(seconds, 4),
        "rows_per_s": round(len(rows) / seconds),
    }


def time_raw_sqlite3(path: Path, rows: list[ProbeResultRow]) -> float:
    """Seconds for sqlite3's executemany of ``rows`` into a migrated file, same pragmas and
    conversions (UTC text timestamps, JSON text) as the Store, one commit."""
    store.upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={store.SQLITE_BUSY_TIMEOUT_MS}")
        sql = (
            'INSERT INTO probe_results (target, zone, probe_kind, ts, ok, latency_ms, "values",'
            " error_class, error_message, faults, probe_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        began = time.perf_counter()
        conn.executemany(
            sql,
            [
                (
                    r.target,
                    r.zone,
                    r.probe_kind,
                    r.ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
                    1 if r.ok else 0,
                    r.latency_ms,
                    json.dumps(r.values),
                    r.error_class,
                    r.error_message,
                    json.dumps(list(r.faults)),
                    r.probe_id,
                )
                for r in rows
            ],
        )
        conn.commit()
        return time.perf_counter() - began
    finally:
        conn.close()


def remove_bench_rows(url: str, zone: str) -> None:
    """Delete this run's rows from a database we do not own."""
    engine = store.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(store.probe_results).where(store.probe_results.c.zone == zone))
    finally:
        engine.dispose()


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    zone = f"bench-{uuid.uuid4().hex[:8]}"
    rows = make_rows(args.rows, zone)
    backends: dict[str, dict[str, Any]] = {}

    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        baseline = time_raw_sqlite3(Path(tmp) / "baseline.db", rows)
        print(f"sqlite3 baseline  {args.rows} rows in {baseline:.3f} s")
        backends["sqlite"] = time_store(f"sqlite:///{Path(tmp) / 'store.db'}", rows)
        backends["sqlite"]["vs_baseline"] = round(backends["sqlite"]["seconds"] / baseline, 2)

    env_url = os.environ.get(store.DATABASE_URL_ENV, "").strip()
    if env_url:
        backend = make_url(env_url).get_backend_name()
        key = backend if backend not in backends else f"{backend}_env"
        try:
            backends[key] = time_store(env_url, rows)
        finally:
            remove_bench_rows(env_url, zone)

    for name, figures in backends.items():
        print(
            f"{name:<17} {args.rows} rows in {figures['seconds']:.3f} s "
            f"= {figures['rows_per_s']:,} rows/s  ({figures['url']})"
        )
    sqlite_figures = backends["sqlite"]
    print(
        json.dumps(
            {
                "rows": args.rows,
                "seconds": sqlite_figures["seconds"],
                "rows_per_s": sqlite_figures["rows_per_s"],
                "baseline_sqlite3_s": round(baseline, 4),
                "backends": backends,
            }
        )
    )


if __name__ == "__main__":
    main()
