"""Reliability analytics as pandas DataFrames: availability, incident timings (MTTD, MTTA,
MTTR, MTBF), SLO error budgets and automation figures.

Every function takes plain DataFrames, so it works on the store (``load_results``,
``load_incidents``, ``load_actions``) and on any exported history alike. Definitions and
formulas are in ``docs/reliability.md``; in short:

- a result holds from its ``ts`` until the next result of the same probe, at most one probe
  interval; a target is *down* while any of its holding results failed, *up* while all its
  holding results passed, *excluded* while a holding result is in maintenance, and has *no
  data* while none holds;
- availability = up time / (up time + down time); excluded and no-data time count neither way;
- MTTR runs from onset to verified recovery.

Times are computed in integer nanoseconds and reported in seconds (float). Inputs must carry
UTC-aware timestamps; naive ones are refused, since their zone would be a guess.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no type information

from floorwatch.errors import StoreError
from floorwatch.inventory import Inventory, MaintenanceWindow

NS: Final = 1_000_000_000
NAT: Final = np.iinfo(np.int64).min  # pandas' integer form of NaT

RESULT_COLUMNS: Final = ("target", "ts", "ok")
INCIDENT_COLUMNS: Final = (
    "incident_id", "target", "fault_kind", "onset", "detected", "acknowledged",
    "remediation_started", "recovered", "automatic",
)
ACTION_COLUMNS: Final = ("incident_id", "runbook", "outcome", "automatic")
# Outcomes that say a runbook acted; planned (dry runs) and skipped steps did not.
DECISIVE_OUTCOMES: Final = ("succeeded", "failed", "rolled_back")
FAILED_OUTCOMES: Final = ("failed", "rolled_back")
KNOWN_OUTCOMES: Final = ("planned", "succeeded", "failed", "skipped", "rolled_back")
# Results this long before a report's start are read so that their hold reaches into it.
DEFAULT_LOOKBACK: Final = timedelta(hours=1)
REOPEN_WINDOW: Final = timedelta(hours=1)

AVAILABILITY_COLUMNS: Final = (
    "target", "period_start", "period_end", "period_s", "up_s", "downtime_s", "excluded_s",
    "no_data_s", "availability", "requests", "ok_requests", "request_ratio",
    "latency_mean_ms", "no_data",
)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
Interval = float | Mapping[str, float] | None


# --------------------------------------------------------------------------- validation


def _instant(value: Any, name: str) -> int:
    """An aware instant as integer UTC nanoseconds."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {value!r} is not a timestamp") from exc
    if stamp is pd.NaT:
        raise ValueError(f"{name}: missing timestamp")
    if stamp.tzinfo is None:
        raise ValueError(f"{name}: naive timestamp {stamp.isoformat()}; give a UTC-aware one")
    return int(stamp.tz_convert(UTC).value)


def _require(frame: Any, columns: Iterable[str], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, not {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        present = ", ".join(map(str, frame.columns))
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; it has {present}")


def _times(series: Any, name: str, *, allow_missing: bool = False) -> IntArray:
    """A timestamp column as UTC nanoseconds (NAT where missing, when allowed)."""
    values = series
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(values.dtype):
            raise ValueError(f"{name} holds naive timestamps; give UTC-aware ones")
        try:
            values = pd.to_datetime(values)
        except (TypeError, ValueError) as exc:
            try:  # mixed offsets parse only when told to convert them to UTC
                values = pd.to_datetime(values, utc=True)
            except (TypeError, ValueError):
                raise ValueError(f"{name} holds values that are not timestamps: {exc}") from exc
        if len(values) and not isinstance(values.dtype, pd.DatetimeTZDtype):
            raise ValueError(f"{name} holds naive timestamps; give UTC-aware ones")
    if not len(values):
        return np.empty(0, dtype=np.int64)
    out: IntArray = pd.DatetimeIndex(values).tz_convert(UTC).as_unit("ns").asi8
    if not allow_missing and (out == NAT).any():
        raise ValueError(f"{name} has {int((out == NAT).sum())} missing timestamp(s)")
    return out


def _bools(series: Any, name: str) -> BoolArray:
    if series.isna().any():
        raise ValueError(f"{name} has {int(series.isna().sum())} missing value(s)")
    if pd.api.types.is_bool_dtype(series.dtype):
        return np.asarray(series.to_numpy(dtype=bool), dtype=np.bool_)
    if pd.api.types.is_integer_dtype(series.dtype) and series.isin([0, 1]).all():
        return np.asarray(series.to_numpy(dtype=np.int64) == 1, dtype=np.bool_)
    raise ValueError(f"{name} must be boolean, got {series.dtype}")


def _codes(series: Any) -> tuple[IntArray, Any]:
    """Integer codes and the distinct values they index (categoricals reuse their codes)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy(dtype=np.int64)
        used = np.bincount(codes[codes >= 0], minlength=len(series.cat.categories)) > 0
        if used.all() and (codes >= 0).all():
            return codes, series.cat.categories
        remap = np.cumsum(used) - 1
        return np.where(codes >= 0, remap[np.maximum(codes, 0)], -1), series.cat.categories[used]
    codes, uniques = pd.factorize(series, sort=False)
    return np.asarray(codes, dtype=np.int64), uniques


# --------------------------------------------------------------------------- availability


def period_edges(start: Any, end: Any, freq: str | None = "1D") -> IntArray:
    """The period boundaries in UTC nanoseconds: ``start``, then every ``freq`` step
    (a pandas frequency: ``"1D"``, ``"1h"``, ``"W-MON"``, ``"MS"``), then ``end``;
    ``freq=None`` gives the single period [start, end)."""
    t0, t1 = _instant(start, "start"), _instant(end, "end")
    if t1 <= t0:
        raise ValueError(f"end {pd.Timestamp(t1, tz=UTC)} is not after start "
                         f"{pd.Timestamp(t0, tz=UTC)}")
    if freq is None:
        return np.array([t0, t1], dtype=np.int64)
    try:
        steps = pd.date_range(pd.Timestamp(t0, tz=UTC), pd.Timestamp(t1, tz=UTC), freq=freq,
                              inclusive="both")
    except ValueError as exc:
        raise ValueError(f"freq {freq!r} is not a pandas frequency: {exc}") from exc
    inner = steps.as_unit("ns").asi8
    inner = inner[(inner > t0) & (inner < t1)]
    return np.concatenate(([t0], inner, [t1])).astype(np.int64)


@dataclass(frozen=True)
class _Results:
    """Validated results as arrays, sorted by (target, probe, ts)."""

    target: IntArray
    names: list[str]
    series: IntArray
    ts: IntArray
    ok: BoolArray
    excluded: BoolArray
    latency: FloatArray


def _result_arrays(results: Any, targets: Sequence[str] | None) -> _Results:
    _require(results, RESULT_COLUMNS, "results")
    ts = _times(results["ts"], "results.ts")
    ok = _bools(results["ok"], "results.ok")
    excluded = (
        _bools(results["excluded"], "results.excluded")
        if "excluded" in results.columns
        else np.zeros(len(results), dtype=np.bool_)
    )
    if "latency_ms" in results.columns:
        latency = pd.to_numeric(results["latency_ms"], errors="raise").to_numpy(
            dtype=np.float64, na_value=np.nan)
    else:
        latency = np.full(len(results), np.nan)
    if results["target"].isna().any():
        raise ValueError(f"results.target has {int(results['target'].isna().sum())} missing "
                         "value(s)")
    codes, uniques = _codes(results["target"])
    names = [str(u) for u in uniques]
    if targets is not None:
        wanted = list(dict.fromkeys(str(t) for t in targets))
        position = {name: i for i, name in enumerate(wanted)}
        lookup = np.array([position.get(name, -1) for name in names], dtype=np.int64)
        codes = lookup[codes] if len(names) else codes
        names = wanted
    if "probe_id" in results.columns:
        probe, _ = _codes(results["probe_id"])
        probe += 1  # a missing probe_id (-1) is a probe of its own
    else:
        probe = np.zeros(len(results), dtype=np.int64)
    keep = codes >= 0
    if not keep.all():
        codes, probe, ts, ok = codes[keep], probe[keep], ts[keep], ok[keep]
        excluded, latency = excluded[keep], latency[keep]
    series = codes * (int(probe.max()) + 1 if len(probe) else 1)
    series += probe
    # Sorted by (series, ts) already (the store's order)? Byte masks only: no 80 MB diffs.
    if len(ts) > 1 and not (
        (series[1:] >= series[:-1]).all()
        and ((ts[1:] >= ts[:-1]) | (series[1:] != series[:-1])).all()
    ):
        order = np.lexsort((ts, series))
        codes, series, ts, ok = codes[order], series[order], ts[order], ok[order]
        excluded, latency = excluded[order], latency[order]
    return _Results(codes, names, series, ts, ok, excluded, latency)


def _hold_caps(data: _Results, interval: Interval) -> IntArray:
    """Per result, the longest time it may hold: the probe interval of its series."""
    if isinstance(interval, numbers.Real) and not isinstance(interval, bool):
        if not float(interval) > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        return np.full(len(data.ts), round(float(interval) * NS), dtype=np.int64)
    caps = np.full(len(data.ts), -1, dtype=np.int64)
    if isinstance(interval, Mapping):
        per_target = np.full(len(data.names), -1, dtype=np.int64)
        for i, name in enumerate(data.names):
            if name in interval:
                seconds = float(interval[name])
                if not seconds > 0:
                    raise ValueError(f"interval of {name} must be > 0 seconds, got {seconds}")
                per_target[i] = round(seconds * NS)
        caps = per_target[data.target] if len(data.ts) else caps
    elif interval is not None:
        raise TypeError(f"interval must be seconds, a mapping target -> seconds or None, "
                        f"not {type(interval).__name__}")
    todo = caps < 0
    if todo.any():
        caps[todo] = _median_spacing(data)[todo]
    return caps


def _median_spacing(data: _Results) -> IntArray:
    """Per result, the median spacing of its series; one-result series take the median of
    every series' spacing (documented as the fallback)."""
    same = data.series[1:] == data.series[:-1]
    gaps = pd.Series(np.diff(data.ts)[same])
    by_series = gaps.groupby(data.series[1:][same]).median()
    if by_series.empty:
        raise ValueError(
            "cannot infer a probe interval: no probe has two results; pass interval="
        )
    fallback = round(float(by_series.median()))
    medians = by_series.reindex(pd.unique(data.series)).fillna(fallback).round()
    lookup = pd.Series(medians.to_numpy(dtype=np.int64), index=medians.index)
    spacing: IntArray = lookup.reindex(data.series).to_numpy(dtype=np.int64)
    if (spacing <= 0).any():
        bad = data.names[int(data.target[np.argmax(spacing <= 0)])]
        raise ValueError(f"cannot infer the probe interval of {bad}: its results share "
                         "timestamps; pass interval=")
    return spacing


def _union_by_period(key_start: IntArray, key_end: IntArray, key_edges: IntArray) -> IntArray:
    """F(x) at each of ``key_edges``: the length of the union of intervals before x.

    Intervals are sorted by start on one axis (each target on its own stretch of it). Each
    keeps only its part after the running maximum of the ends before it, so the parts are
    disjoint and in order, and F is a cumulative sum read at the edges: no interval is ever
    split at a period boundary, and 10 million intervals take a few passes."""
    if not len(key_start):
        return np.zeros(len(key_edges), dtype=np.int64)
    reach = np.maximum.accumulate(key_end)
    part_start = key_start.copy()
    np.maximum(part_start[1:], reach[:-1], out=part_start[1:])
    length = np.subtract(key_end, part_start, out=reach)  # reach is not needed any more
    np.maximum(length, 0, out=length)
    before = np.cumsum(length)
    before -= length  # the union's length before each part
    j = np.searchsorted(part_start, key_edges, side="right") - 1
    at = np.maximum(j, 0)
    inside = np.minimum(np.maximum(key_edges - part_start[at], 0), length[at])
    measure: IntArray = np.where(j >= 0, before[at] + inside, 0)
    return measure


def availability(
    results: Any,
    start: Any,
    end: Any,
    freq: str | None = "1D",
    *,
    interval: Interval = None,
    targets: Sequence[str] | None = None,
) -> Any:
    """Time-weighted availability per target and period of [``start``, ``end``).

    ``interval`` caps how long a result holds: seconds for every probe, a mapping target ->
    seconds (targets not named, and ``None``, use the median spacing of each probe's results).
    ``targets`` selects the rows reported (targets without data get no-data rows); by default
    every target in ``results``. Results before ``start`` count only for their hold into it.

    Columns: target, period_start, period_end, period_s, up_s, downtime_s, excluded_s,
    no_data_s, availability (up / (up + down), NaN without data), requests and ok_requests
    (non-excluded results with ``ts`` in the period), request_ratio (ok / requests),
    latency_mean_ms, no_data (True when nothing was measured: availability is NaN, not 1).
    """
    edges = period_edges(start, end, freq)
    t0, t1 = int(edges[0]), int(edges[-1])
    data = _result_arrays(results, targets)
    n_targets, n_bins = len(data.names), len(edges) - 1

    # Each result holds from its ts to the next result of its probe, at most its cap; clipped
    # to the window, a result outside it holds for zero time (cheaper than dropping it).
    caps = _hold_caps(data, interval) if len(data.ts) else np.empty(0, dtype=np.int64)
    span = t1 - t0
    rel_s = data.ts - t0
    np.clip(rel_s, 0, span, out=rel_s)
    rel_e = np.add(data.ts, caps, out=caps)
    if len(rel_e) > 1:
        np.minimum(rel_e[:-1], data.ts[1:], out=rel_e[:-1],
                   where=data.series[1:] == data.series[:-1])
    rel_e -= t0
    np.clip(rel_e, 0, span, out=rel_e)

    # Each target gets its own stretch of one int64 axis (target x (span + 1) + offset), so
    # one sort and one running maximum serve every target; targets go in chunks that fit.
    stride = span + 1
    per_chunk = int(np.iinfo(np.int64).max // stride)
    if per_chunk < 1:
        raise ValueError("the report window is longer than 292 years")
    size = n_targets * n_bins
    covered = np.zeros(size, dtype=np.int64)
    excluded = np.zeros(size, dtype=np.int64)
    down_or_excluded = np.zeros(size, dtype=np.int64)
    rel_edges = edges - t0
    bounds = np.searchsorted(data.target, np.arange(0, n_targets + per_chunk, per_chunk))
    for chunk, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        first = chunk * per_chunk
        last = min(first + per_chunk, n_targets)
        base = (data.target[lo:hi] - first) * stride
        k_s = base + rel_s[lo:hi]
        k_e = np.add(base, rel_e[lo:hi], out=base)
        # One byte per result: 1 failed, 2 excluded (one gather instead of two when sorting).
        flags = (~data.ok[lo:hi]).view(np.uint8) | (data.excluded[lo:hi].view(np.uint8) << 1)
        if len(k_s) > 1 and not (k_s[1:] >= k_s[:-1]).all():
            # Several probes per target: their series interleave. Timsort merges the sorted
            # runs in about linear time.
            order = np.argsort(k_s, kind="stable")
            k_s, k_e, flags = k_s[order], k_e[order], flags[order]
        c_excl = (flags & 2).astype(np.bool_)
        key_edges = (
            (np.arange(last - first, dtype=np.int64) * stride)[:, None] + rel_edges[None, :]
        ).ravel()
        bad = flags.astype(np.bool_)
        cells = slice(first * n_bins, last * n_bins)
        for total, mask in ((covered, None), (excluded, c_excl), (down_or_excluded, bad)):
            starts, ends = (k_s, k_e) if mask is None else (k_s[mask], k_e[mask])
            measure = _union_by_period(starts, ends, key_edges).reshape(last - first, -1)
            total[cells] = np.diff(measure, axis=1).ravel()
    down = down_or_excluded - excluded
    up = covered - down_or_excluded

    # Request-based figures: the results themselves, in the period, outside maintenance.
    inside = (data.ts >= t0) & (data.ts < t1) & ~data.excluded
    cell = data.target[inside] * n_bins + np.searchsorted(edges, data.ts[inside], "right") - 1
    requests = np.bincount(cell, minlength=size)
    ok_requests = np.bincount(cell[data.ok[inside]], minlength=size)
    latency = data.latency[inside]
    has_latency = ~np.isnan(latency)
    if not has_latency.all():
        cell, latency = cell[has_latency], latency[has_latency]
    latency_n = np.bincount(cell, minlength=size)
    latency_sum = np.bincount(cell, weights=latency, minlength=size)

    period_ns = np.tile(np.diff(edges), n_targets).astype(np.float64)
    measured = up + down
    with np.errstate(invalid="ignore", divide="ignore"):
        frame = pd.DataFrame({
            "target": pd.Series(np.repeat(np.array(data.names, dtype=object), n_bins),
                                dtype="str"),
            "period_start": pd.to_datetime(np.tile(edges[:-1], n_targets), utc=True),
            "period_end": pd.to_datetime(np.tile(edges[1:], n_targets), utc=True),
            "period_s": period_ns / NS,
            "up_s": up / NS,
            "downtime_s": down / NS,
            "excluded_s": excluded / NS,
            "no_data_s": (period_ns - covered) / NS,
            "availability": np.where(measured > 0, up / measured, np.nan),
            "requests": requests.astype(np.int64),
            "ok_requests": ok_requests.astype(np.int64),
            "request_ratio": np.where(requests > 0, ok_requests / requests, np.nan),
            "latency_mean_ms": np.where(latency_n > 0, latency_sum / latency_n, np.nan),
            "no_data": measured <= 0,
        })
    return frame


# --------------------------------------------------------------------------- incidents


def _incident_durations(incidents: Any) -> Any:
    """The incidents with ttd_s, tta_s, ttr_s and tbf_s columns (seconds, NaN when unknown)."""
    _require(incidents, INCIDENT_COLUMNS, "incidents")
    onset = _times(incidents["onset"], "incidents.onset")
    detected = _times(incidents["detected"], "incidents.detected")
    acked = _times(incidents["acknowledged"], "incidents.acknowledged", allow_missing=True)
    recovered = _times(incidents["recovered"], "incidents.recovered", allow_missing=True)
    ids = incidents["incident_id"].to_numpy()

    def span(later: IntArray, earlier: IntArray, what: str) -> FloatArray:
        known = (later != NAT) & (earlier != NAT)
        delta = np.where(known, later - earlier, 0)
        negative = known & (delta < 0)
        if negative.any():
            shown = ", ".join(str(i) for i in ids[negative][:5])
            raise ValueError(f"{what} is negative for incident(s) {shown}: "
                             "a timestamp comes before the one it follows")
        return np.where(known, delta / NS, np.nan)

    out = incidents.copy()
    out["ttd_s"] = span(detected, onset, "time to detect (detected - onset)")
    out["tta_s"] = span(acked, detected, "time to acknowledge (acknowledged - detected)")
    out["ttr_s"] = span(recovered, onset, "time to recover (recovered - onset)")
    # Time between failures: from a recovery to the target's next onset (uptime), per target.
    codes, _ = _codes(incidents["target"].astype(str))
    order = np.lexsort((onset, codes))
    tbf = np.full(len(onset), np.nan)
    if len(order) > 1:
        o_codes, o_onset, o_rec = codes[order], onset[order], recovered[order]
        valid = (o_codes[1:] == o_codes[:-1]) & (o_rec[:-1] != NAT)
        # An incident starting before the previous one recovered overlaps it: no uptime.
        gap = np.where(valid, np.maximum(o_onset[1:] - o_rec[:-1], 0) / NS, np.nan)
        tbf[order[1:]] = gap
    out["tbf_s"] = tbf
    return out


def _group(frame: Any, by: Sequence[str]) -> tuple[Any, list[str]]:
    keys = list(by)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ValueError(f"cannot group by {', '.join(missing)}: no such column")
    if not keys:
        frame = frame.assign(_all="all")
        keys = ["_all"]
    return frame.groupby(keys, dropna=False, sort=True), keys


def _overall(stats: Any, keys: list[str], counts: Sequence[str]) -> Any:
    """Aggregated ``stats`` as columns; without grouping keys always exactly one row, zero
    counts when there was nothing to count (not an empty table)."""
    if keys == ["_all"]:
        stats = stats.reindex(["all"])
        stats.index.name = "_all"
    stats[list(counts)] = stats[list(counts)].fillna(0).astype(np.int64)
    stats = stats.reset_index()
    return stats.drop(columns="_all") if keys == ["_all"] else stats


def incident_stats(incidents: Any, by: Sequence[str] = ("target",)) -> Any:
    """Incident counts and timings per group of ``by`` (``()`` for one overall row).

    Columns: the ``by`` keys, incidents, recovered, then for each of MTTD (detected - onset),
    MTTA (acknowledged - detected), MTTR (recovered - onset: onset to verified recovery) and
    MTBF (a recovery to the same target's next onset) the mean, p50 and p90 in seconds:
    ``mttd_s``, ``mttd_p50_s``, ``mttd_p90_s``... NaN where no incident has the timestamps.
    """
    timed = _incident_durations(incidents)
    grouped, keys = _group(timed, by)
    aggregations: dict[str, tuple[str, Any]] = {
        "incidents": ("incident_id", "size"),
        "recovered": ("ttr_s", "count"),
    }
    for metric, column in (("mttd", "ttd_s"), ("mtta", "tta_s"), ("mttr", "ttr_s"),
                           ("mtbf", "tbf_s")):
        aggregations[f"{metric}_s"] = (column, "mean")
        aggregations[f"{metric}_p50_s"] = (column, "median")
        aggregations[f"{metric}_p90_s"] = (column, lambda s: s.quantile(0.9))
    stats = _overall(grouped.agg(**aggregations), keys, ("incidents", "recovered"))
    return stats


# --------------------------------------------------------------------------- SLOs


def slo_report(
    results: Any, slos: Mapping[str, float], start: Any, end: Any, *, interval: Interval = None,
) -> Any:
    """Error budgets over [``start``, ``end``) for the targets of ``slos`` (target ->
    objective in percent, as in the inventory: 99.9).

    Columns: target, slo and achieved (fractions), measured_s, downtime_s, budget_s
    ((1 - slo) x measured time), budget_remaining_s (negative when overspent),
    budget_remaining (fraction of the budget left), burn_rate ((1 - achieved) / (1 - slo):
    1 spends the budget exactly), no_data.
    """
    objectives = {}
    for target, objective in slos.items():
        if not 0 < float(objective) < 100:
            raise ValueError(f"SLO of {target} must be a percentage in (0, 100), got {objective}")
        objectives[str(target)] = float(objective) / 100
    avail = availability(results, start, end, None, interval=interval, targets=list(objectives))
    slo = avail["target"].map(objectives).to_numpy(dtype=np.float64)
    measured = (avail["up_s"] + avail["downtime_s"]).to_numpy(dtype=np.float64)
    achieved = avail["availability"].to_numpy(dtype=np.float64)
    budget = (1 - slo) * measured
    remaining = budget - avail["downtime_s"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "target": avail["target"],
            "slo": slo,
            "achieved": achieved,
            "measured_s": measured,
            "downtime_s": avail["downtime_s"],
            "budget_s": budget,
            "budget_remaining_s": np.where(measured > 0, remaining, np.nan),
            "budget_remaining": np.where(budget > 0, remaining / budget, np.nan),
            "burn_rate": (1 - achieved) / (1 - slo),
            "no_data": avail["no_data"],
        })


# --------------------------------------------------------------------------- automation


def runbook_runs(actions: Any) -> Any:
    """One row per runbook run (incident_id, runbook) that acted: automatic (any automatic
    step), succeeded (no step failed or was rolled back). Planned (dry-run) and skipped steps
    do not make a run."""
    _require(actions, ACTION_COLUMNS, "actions")
    unknown = sorted(set(actions["outcome"].astype(str)) - set(KNOWN_OUTCOMES))
    if unknown:
        raise ValueError(f"actions.outcome has unknown value(s) {unknown}; "
                         f"one of {KNOWN_OUTCOMES}")
    acted = actions[actions["outcome"].isin(DECISIVE_OUTCOMES)].assign(
        _failed=lambda f: f["outcome"].isin(FAILED_OUTCOMES),
        _automatic=lambda f: _bools(f["automatic"], "actions.automatic"),
    )
    runs = acted.groupby(["incident_id", "runbook"], dropna=False, sort=True).agg(
        automatic=("_automatic", "any"), failed=("_failed", "any")
    ).reset_index()
    runs["succeeded"] = ~runs["failed"]
    return runs.drop(columns="failed")


def runbook_stats(actions: Any) -> Any:
    """Per runbook: runs, succeeded, success_rate, automatic_runs (see ``runbook_runs``)."""
    runs = runbook_runs(actions)
    stats = runs.groupby("runbook", sort=True).agg(
        runs=("succeeded", "size"), succeeded=("succeeded", "sum"),
        automatic_runs=("automatic", "sum"),
    ).reset_index()
    stats["success_rate"] = stats["succeeded"] / stats["runs"]
    return stats[["runbook", "runs", "succeeded", "success_rate", "automatic_runs"]]


def automation_stats(
    incidents: Any, actions: Any, *, by: Sequence[str] = (),
    reopen_within: timedelta = REOPEN_WINDOW,
) -> Any:
    """How well automation fixes things, per group of ``by`` (``()``: one overall row).

    Columns: the ``by`` keys, incidents, recovered, resolved_automatically (recovered and
    ``automatic``), automatic_share (of the recovered), runbook_runs and runbook_succeeded
    (runs of these incidents, see ``runbook_runs``), runbook_success_rate, reopened (automatic
    fixes followed by a new incident of the same target and fault kind within
    ``reopen_within`` of recovery), reopen_rate (of the automatic fixes).
    """
    timed = _incident_durations(incidents)
    recovered = timed["ttr_s"].notna().to_numpy()
    automatic = _bools(timed["automatic"], "incidents.automatic")
    fixed = recovered & automatic
    onset = _times(timed["onset"], "incidents.onset")
    recovered_at = _times(timed["recovered"], "incidents.recovered", allow_missing=True)
    # The next incident of the same (target, fault kind) after each one, by onset.
    key, _ = _codes(timed["target"].astype(str) + "\x00" + timed["fault_kind"].astype(str))
    order = np.lexsort((onset, key))
    reopened = np.zeros(len(onset), dtype=np.bool_)
    if len(order) > 1:
        same = key[order][1:] == key[order][:-1]
        gap = onset[order][1:] - recovered_at[order][:-1]
        hit = same & fixed[order][:-1] & (gap >= 0)
        hit &= gap <= int(reopen_within.total_seconds() * NS)
        reopened[order[:-1]] = hit
    timed = timed.assign(_recovered=recovered, _fixed=fixed, _reopened=reopened)

    runs = runbook_runs(actions)
    runs = runs[runs["incident_id"].isin(set(timed["incident_id"]))]
    per_incident = runs.groupby("incident_id").agg(
        _runs=("succeeded", "size"), _runs_ok=("succeeded", "sum"))
    timed = timed.join(per_incident, on="incident_id")
    timed[["_runs", "_runs_ok"]] = timed[["_runs", "_runs_ok"]].fillna(0).astype(np.int64)

    grouped, keys = _group(timed, by)
    stats = grouped.agg(
        incidents=("incident_id", "size"),
        recovered=("_recovered", "sum"),
        resolved_automatically=("_fixed", "sum"),
        runbook_runs=("_runs", "sum"),
        runbook_succeeded=("_runs_ok", "sum"),
        reopened=("_reopened", "sum"),
    )
    counts = ("incidents", "recovered", "resolved_automatically", "runbook_runs",
              "runbook_succeeded", "reopened")
    stats = _overall(stats, keys, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats["automatic_share"] = np.where(
            stats["recovered"] > 0, stats["resolved_automatically"] / stats["recovered"], np.nan)
        stats["runbook_success_rate"] = np.where(
            stats["runbook_runs"] > 0, stats["runbook_succeeded"] / stats["runbook_runs"], np.nan)
        stats["reopen_rate"] = np.where(
            stats["resolved_automatically"] > 0,
            stats["reopened"] / stats["resolved_automatically"], np.nan)
    order_cols = [*list(by), "incidents", "recovered", "resolved_automatically",
                  "automatic_share", "runbook_runs", "runbook_succeeded", "runbook_success_rate",
                  "reopened", "reopen_rate"]
    return stats[order_cols]


# --------------------------------------------------------------------------- maintenance


def maintenance_intervals(
    window: MaintenanceWindow, start: datetime, end: datetime,
) -> list[tuple[datetime, datetime]]:
    """The openings of ``window`` that overlap [``start``, ``end``), as UTC intervals.
    Weekly openings sit on the local calendar (03:00 stays 03:00 across DST) and last their
    duration in elapsed time, as ``MaintenanceWindow.active_at`` has it."""
    tz = window.tz
    if window.weekly is None:
        if window.start is None or window.end is None:
            return []
        opens = window.start if window.start.tzinfo else window.start.replace(tzinfo=tz)
        closes = window.end if window.end.tzinfo else window.end.replace(tzinfo=tz)
        opens, closes = opens.astimezone(UTC), closes.astimezone(UTC)
        return [(opens, closes)] if opens < end and closes > start else []
    weekly = window.weekly
    days = {day.number for day in weekly.days}
    duration = timedelta(minutes=weekly.duration_minutes)
    found = []
    # A window lasts at most a week: one opening up to 8 days before start may reach into it.
    day = start.astimezone(tz).date() - timedelta(days=8)
    last = end.astimezone(tz).date()
    while day <= last:
        if day.weekday() in days:
            opens = datetime.combine(day, weekly.start, tzinfo=tz).astimezone(UTC)
            if opens < end and opens + duration > start:
                found.append((opens, opens + duration))
        day += timedelta(days=1)
    return found


def mark_maintenance(
    results: Any, inventory: Inventory, start: datetime, end: datetime,
) -> BoolArray:
    """Per row of ``results`` (target, zone, ts), whether it falls in one of the inventory's
    maintenance windows that names its target or zone."""
    _require(results, ("target", "zone", "ts"), "results")
    marked = np.zeros(len(results), dtype=np.bool_)
    if not inventory.maintenance or not len(results):
        return marked
    ts = _times(results["ts"], "results.ts")
    openings = [(w, maintenance_intervals(w, start, end)) for w in inventory.maintenance]
    groups = results.groupby(["target", "zone"], sort=False).indices
    for (target, zone), rows in groups.items():
        spans = sorted(
            (_instant(a, "opening"), _instant(b, "closing"))
            for window, found in openings if window.covers(str(target), str(zone))
            for a, b in found
        )
        if not spans:
            continue
        merged: list[list[int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        starts = np.array([m[0] for m in merged], dtype=np.int64)
        ends = np.array([m[1] for m in merged], dtype=np.int64)
        row_ts = ts[rows]
        at = np.searchsorted(starts, row_ts, side="right") - 1
        marked[rows] = (at >= 0) & (row_ts < ends[np.maximum(at, 0)])
    return marked


# --------------------------------------------------------------------------- the store


def _aware(value: Any, name: str) -> datetime:
    stamp: datetime = pd.Timestamp(_instant(value, name), tz=UTC).to_pydatetime()
    return stamp


def _read(store_url: str | None, query: Any, doing: str) -> list[Any]:
    """Rows of ``query``; a store that cannot answer is a ``StoreError`` naming ``doing``."""
    from sqlalchemy.exc import DBAPIError

    from floorwatch.store import database_url, make_engine, mask_url

    url = database_url(store_url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(query).all())
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise StoreError(f"cannot read {doing} from {mask_url(url)}: {reason}") from exc
    finally:
        engine.dispose()


def _frame(rows: list[Any], columns: Sequence[str], times: Sequence[str]) -> Any:
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(columns))
    for column in times:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def load_results(
    store_url: str | None,
    start: Any,
    end: Any,
    *,
    inventory: Inventory | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> Any:
    """Probe results with ``ts`` in [``start`` - ``lookback``, ``end``) from the store
    (``None``: the configured one), sorted by target, probe and time; the results before
    ``start`` let their hold reach into it.

    Columns: target, zone, probe_id, ts, ok, latency_ms, excluded (in one of the
    ``inventory``'s maintenance windows; False for every row without an inventory).
    """
    from sqlalchemy import select

    from floorwatch.store import probe_results as t

    begin, finish = _aware(start, "start") - lookback, _aware(end, "end")
    columns = ("target", "zone", "probe_id", "ts", "ok", "latency_ms")
    query = (
        select(*(t.c[c] for c in columns))
        .where(t.c.ts >= begin, t.c.ts < finish)
        .order_by(t.c.target, t.c.probe_id, t.c.ts, t.c.id)
    )
    frame = _frame(_read(store_url, query, "probe results"), columns, ("ts",))
    frame["ok"] = frame["ok"].astype(bool)
    frame["latency_ms"] = frame["latency_ms"].astype(np.float64)
    frame["excluded"] = (
        mark_maintenance(frame, inventory, begin, finish) if inventory is not None
        else np.zeros(len(frame), dtype=np.bool_)
    )
    return frame


INCIDENT_STORE_COLUMNS: Final = {
    "incident_id": "id", "target": "target", "zone": "zone", "fault_kind": "fault_kind",
    "severity": "severity", "state": "state", "onset": "onset_at", "detected": "detected_at",
    "acknowledged": "acknowledged_at", "remediation_started": "remediation_started_at",
    "recovered": "recovered_at", "automatic": "automatic",
}
INCIDENT_TIMES: Final = ("onset", "detected", "acknowledged", "remediation_started",
                         "recovered")


def load_incidents(store_url: str | None, start: Any, end: Any) -> Any:
    """Incidents whose onset is in [``start``, ``end``), oldest first. Columns:
    incident_id, target, zone, fault_kind, severity, state, onset, detected, acknowledged,
    remediation_started, recovered (NaT when not yet), automatic."""
    from sqlalchemy import select

    from floorwatch.store import incidents as t

    query = (
        select(*(t.c[c].label(name) for name, c in INCIDENT_STORE_COLUMNS.items()))
        .where(t.c.onset_at >= _aware(start, "start"), t.c.onset_at < _aware(end, "end"))
        .order_by(t.c.onset_at, t.c.id)
    )
    rows = _read(store_url, query, "incidents")
    frame = _frame(rows, list(INCIDENT_STORE_COLUMNS), INCIDENT_TIMES)
    frame["automatic"] = frame["automatic"].astype(bool)
    frame["incident_id"] = frame["incident_id"].astype(np.int64)
    return frame


def load_actions(store_url: str | None, start: Any, end: Any) -> Any:
    """Actions of the incidents whose onset is in [``start``, ``end``), in order. Columns:
    action_id, incident_id, runbook, step, outcome, automatic, target, started_at,
    finished_at."""
    from sqlalchemy import select

    from floorwatch.store import actions as a
    from floorwatch.store import incidents as i

    names = ("action_id", "incident_id", "runbook", "step", "outcome", "automatic", "target",
             "started_at", "finished_at")
    query = (
        select(a.c.id, a.c.incident_id, a.c.runbook, a.c.step, a.c.outcome, a.c.automatic,
               a.c.target, a.c.started_at, a.c.finished_at)
        .join(i, i.c.id == a.c.incident_id)
        .where(i.c.onset_at >= _aware(start, "start"), i.c.onset_at < _aware(end, "end"))
        .order_by(a.c.id)
    )
    frame = _frame(_read(store_url, query, "actions"), names, ("started_at", "finished_at"))
    frame["automatic"] = frame["automatic"].astype(bool)
    return frame
