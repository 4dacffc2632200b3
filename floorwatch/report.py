"""Period reliability reports: the tables of one day, ISO week or month, written to a folder
as CSV and Parquet, with an HTML page and its PNG charts, plus a short summary for chat.

    period      "2026-11" (month), "2026-11-05" (day), "2026-W47" (ISO week), all in UTC
    tables      availability, availability_daily, slo, incidents, incidents_by_kind,
                mttr_trend, automation, runbooks   (see floorwatch.reliability)
    files       <table>.csv, <table>.parquet, availability_heatmap.png, mttr_trend.png,
                index.html, summary.txt

``run_report_cli`` is what ``floorwatch report --period 2026-11 --out DIR`` runs; the
scheduled flow (flows/reports.py) calls ``load_report_inputs`` and ``write_period_report``.
Pure: no Prefect; matplotlib is imported only when charts are drawn.
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas ships no type information

from floorwatch.errors import FloorwatchError
from floorwatch.inventory import Inventory, Slo, load_inventory
from floorwatch.reliability import (
    DEFAULT_LOOKBACK,
    automation_stats,
    availability,
    incident_stats,
    load_actions,
    load_incidents,
    load_results,
    runbook_stats,
    slo_report,
)

PeriodKind = Literal["day", "week", "month"]
PERIOD_KINDS: Final = ("day", "week", "month")
DEFAULT_SLO: Final = Slo().objective  # the inventory's default objective, in percent
TABLES: Final = ("availability", "availability_daily", "slo", "incidents", "incidents_by_kind",
                 "mttr_trend", "automation", "runbooks")
HEATMAP: Final = "availability_heatmap.png"
MTTR_CHART: Final = "mttr_trend.png"
SUMMARY_NAMES: Final = 10  # targets named per line of the chat summary, then "and N more"
HEATMAP_FLOOR_PCT: Final = 99.0  # the heatmap's colour scale: at or below this is full red
# Columns shown as percentages (fractions in the tables themselves).
PERCENT_COLUMNS: Final = frozenset({
    "availability", "request_ratio", "slo", "achieved", "budget_remaining", "automatic_share",
    "runbook_success_rate", "reopen_rate", "success_rate",
})

_MONTH = re.compile(r"(\d{4})-(\d{2})")
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_WEEK = re.compile(r"(\d{4})-[Ww](\d{2})")


# --------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    """A report period [start, end) in UTC."""

    label: str
    kind: PeriodKind
    start: datetime
    end: datetime

    @property
    def slug(self) -> str:
        """The label as Prefect artifact keys and file names take it (``2026-w47``)."""
        return self.label.lower()


def parse_period(text: str) -> Period:
    """``YYYY-MM`` (a month), ``YYYY-MM-DD`` (a day) or ``YYYY-Www`` (an ISO week), in UTC."""
    value = text.strip()
    try:
        if match := _DAY.fullmatch(value):
            day = date(int(match[1]), int(match[2]), int(match[3]))
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return Period(day.isoformat(), "day", start, start + timedelta(days=1))
        if match := _WEEK.fullmatch(value):
            monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
            start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
            label = f"{match[1]}-W{int(match[2]):02d}"
            return Period(label, "week", start, start + timedelta(days=7))
        if match := _MONTH.fullmatch(value):
            year, month = int(match[1]), int(match[2])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            return Period(f"{year:04d}-{month:02d}", "month", start, end)
    except ValueError as exc:
        raise ValueError(f"period {text!r} is not a real date: {exc}") from exc
    raise ValueError(
        f"period {text!r} is not YYYY-MM (month), YYYY-MM-DD (day) or YYYY-Www (ISO week)"
    )


def last_complete_period(kind: str, now: datetime | None = None) -> Period:
    """The newest ``kind`` period (day, week, month) that ended at or before ``now``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    today = moment.date()
    if kind == "day":
        return parse_period((today - timedelta(days=1)).isoformat())
    if kind == "week":
        year, week, _ = (today - timedelta(days=7)).isocalendar()
        return parse_period(f"{year}-W{week:02d}")
    if kind == "month":
        last_month = today.replace(day=1) - timedelta(days=1)
        return parse_period(f"{last_month.year:04d}-{last_month.month:02d}")
    raise ValueError(f"period kind {kind!r} is not one of {', '.join(PERIOD_KINDS)}")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ReportInputs:
    """What a report is computed from: the histories and the per-target settings."""

    results: Any
    incidents: Any
    actions: Any
    slos: Mapping[str, float]  # target -> objective in percent
    intervals: Mapping[str, float] | None = None  # target -> probe interval (s); None: inferred
    targets: list[str] | None = None  # rows to report; None: every target with results


def inputs_for(
    results: Any, incidents: Any, actions: Any, inventory: Inventory | None = None,
) -> ReportInputs:
    """Report inputs from frames: SLOs, intervals and targets from ``inventory`` when given
    (plus targets found in the history only), else the default SLO for every target seen."""
    if "target" not in getattr(results, "columns", ()):
        raise ValueError("results lacks column target")
    seen = [str(t) for t in pd.unique(results["target"].astype(str))]
    if inventory is None:
        return ReportInputs(results, incidents, actions, dict.fromkeys(seen, DEFAULT_SLO))
    known = inventory.targets()
    # A target removed from the inventory still has history: report it, not drop it.
    targets = [t.name for t in known] + [t for t in seen if t not in {k.name for k in known}]
    slos = {t: DEFAULT_SLO for t in targets} | {t.name: t.slo.objective for t in known}
    # A target's results hold for its slowest probe's interval; its faster probes refresh
    # more often anyway.
    intervals = {t.name: max(p.interval for p in t.probes) for t in known if t.probes}
    return ReportInputs(results, incidents, actions, slos, intervals, targets)


def load_report_inputs(
    store_url: str | None, period: Period, inventory: Inventory | None = None,
) -> ReportInputs:
    """Read the period's results, incidents and actions from the store."""
    lookback = DEFAULT_LOOKBACK
    if inventory is not None:
        longest = max((p.interval for t in inventory.targets() for p in t.probes), default=0.0)
        lookback = max(lookback, timedelta(seconds=longest))
    results = load_results(store_url, period.start, period.end, inventory=inventory,
                           lookback=lookback)
    incidents = load_incidents(store_url, period.start, period.end)
    actions = load_actions(store_url, period.start, period.end)
    return inputs_for(results, incidents, actions, inventory)


# --------------------------------------------------------------------------- tables


def build_tables(inputs: ReportInputs, period: Period) -> dict[str, Any]:
    """Every table of the report, by name (see ``TABLES``)."""
    window = (inputs.results, period.start, period.end)
    targets = inputs.targets
    tables: dict[str, Any] = {
        "availability": availability(*window, None, interval=inputs.intervals, targets=targets),
        "availability_daily": availability(*window, "1D", interval=inputs.intervals,
                                           targets=targets),
        "slo": slo_report(inputs.results, inputs.slos, period.start, period.end,
                          interval=inputs.intervals),
        "incidents": incident_stats(inputs.incidents, by=("target",)),
        "incidents_by_kind": incident_stats(inputs.incidents, by=("fault_kind",)),
        "mttr_trend": _mttr_trend(inputs.incidents, period),
        "automation": automation_stats(inputs.incidents, inputs.actions),
        "runbooks": runbook_stats(inputs.actions),
    }
    return tables


def _mttr_trend(incidents: Any, period: Period) -> Any:
    """Incident stats per day of onset, every day of the period present (0 incidents)."""
    days = pd.date_range(period.start, period.end, freq="1D", inclusive="left").as_unit("ns")
    by_day = incidents.assign(
        day=pd.to_datetime(incidents["onset"], utc=True).dt.floor("1D").dt.as_unit("ns"))
    stats = incident_stats(by_day, by=("day",)).set_index("day").reindex(days)
    stats.index.name = "day"
    stats[["incidents", "recovered"]] = stats[["incidents", "recovered"]].fillna(0).astype(
        np.int64)
    return stats.reset_index()


def overall_availability(table: Any) -> float:
    """Time-weighted availability over every target of an availability table (NaN when
    nothing was measured)."""
    measured = float(table["up_s"].sum() + table["downtime_s"].sum())
    return float(table["up_s"].sum()) / measured if measured > 0 else float("nan")


def summary_text(tables: Mapping[str, Any], period: Period, link: str | None = None) -> str:
    """A few lines for chat: availability, incidents, MTTR, automation, budgets spent."""
    avail = tables["availability"]
    measured = avail[~avail["no_data"]]
    lines = [f"Reliability report {period.label} "
             f"({period.start:%Y-%m-%d} – {period.end:%Y-%m-%d} UTC)"]
    overall = overall_availability(avail)
    if measured.empty:
        lines.append(f"No probe data for any of {len(avail)} targets." if len(avail)
                     else "No probe data.")
    else:
        worst = measured.sort_values("availability").iloc[0]
        lines.append(f"Availability {_pct(overall)} over {len(measured)} targets "
                     f"(lowest: {worst['target']} {_pct(worst['availability'])}).")
    no_data = list(avail.loc[avail["no_data"], "target"])
    if no_data and not measured.empty:
        more = f" and {len(no_data) - SUMMARY_NAMES} more" if len(no_data) > SUMMARY_NAMES else ""
        lines.append(f"No data: {', '.join(no_data[:SUMMARY_NAMES])}{more}.")
    automation = tables["automation"]
    count = int(automation["incidents"].sum()) if len(automation) else 0
    if count:
        trend = tables["mttr_trend"]
        mttr = _weighted(trend, "mttr_s", "recovered")
        share = automation["automatic_share"].iloc[0]
        lines.append(f"{count} incident{'s' if count != 1 else ''}, MTTR {_duration(mttr)}"
                     + (f", {_pct(share, 0)} resolved automatically" if share == share else "")
                     + ".")
    else:
        lines.append("No incidents.")
    slo = tables["slo"]
    spent = slo[slo["budget_remaining_s"] < 0].sort_values("burn_rate", ascending=False)
    if not spent.empty:
        more = f" and {len(spent) - SUMMARY_NAMES} more" if len(spent) > SUMMARY_NAMES else ""
        lines.append("Error budget spent: " + ", ".join(
            f"{row.target} (burn rate {row.burn_rate:.2f})"
            for row in spent.head(SUMMARY_NAMES).itertuples()) + more + ".")
    if link:
        lines.append(link)
    return "\n".join(lines)


def _weighted(frame: Any, column: str, weight: str) -> float:
    """The mean of per-group means, weighted by their counts: the overall mean."""
    known = frame[frame[column].notna() & (frame[weight] > 0)]
    total = float(known[weight].sum())
    return float((known[column] * known[weight]).sum()) / total if total else float("nan")


def _pct(fraction: float, digits: int = 2) -> str:
    return "no data" if fraction != fraction else f"{fraction * 100:.{digits}f} %"


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class PeriodReport:
    """A written report: its tables, files, HTML page and chat summary."""

    period: Period
    tables: dict[str, Any]
    folder: Path
    html: Path
    summary: str
    files: list[Path] = field(default_factory=list)


def write_period_report(inputs: ReportInputs, period: Period, out: Path) -> PeriodReport:
    """Compute the tables and write them (CSV, Parquet), the charts, the HTML page and the
    summary into ``out`` (created)."""
    tables = build_tables(inputs, period)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        table.to_parquet(out / f"{name}.parquet", index=False)
        files += [out / f"{name}.csv", out / f"{name}.parquet"]
    draw_heatmap(tables["availability_daily"], out / HEATMAP, period)
    draw_mttr_trend(tables["mttr_trend"], out / MTTR_CHART, period)
    files += [out / HEATMAP, out / MTTR_CHART]
    page = out / "index.html"
    summary = summary_text(tables, period)
    page.write_text(render_html(tables, period, summary), encoding="utf-8")
    (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    files += [page, out / "summary.txt"]
    return PeriodReport(period, tables, out, page, summary, files)


def draw_heatmap(daily: Any, path: Path, period: Period) -> None:
    """Availability per target (rows) and day (columns); grey where there was no data."""
    from matplotlib.figure import Figure

    grid = daily.pivot(index="target", columns="period_start", values="availability") * 100
    grid = grid.reindex(pd.unique(daily["target"]))
    rows, cols = grid.shape
    figure = Figure(figsize=(max(6.0, 0.32 * cols + 3.0), max(2.5, 0.28 * rows + 1.6)))
    axes = figure.add_subplot()
    axes.set_title(f"Availability per component and day — {period.label}")
    if not rows:
        axes.text(0.5, 0.5, "no targets with probe data", transform=axes.transAxes,
                  ha="center", va="center", color="grey")
        axes.set_axis_off()
        figure.savefig(path, dpi=110)
        return
    from matplotlib import colormaps

    cmap = colormaps["RdYlGn"].with_extremes(bad="#d9d9d9")
    image = axes.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=np.float64)), cmap=cmap,
                        vmin=HEATMAP_FLOOR_PCT, vmax=100.0, aspect="auto",
                        interpolation="nearest")
    axes.set_yticks(range(rows), [str(t) for t in grid.index], fontsize=7)
    days = [pd.Timestamp(c) for c in grid.columns]
    step = max(1, cols // 16)
    axes.set_xticks(range(0, cols, step), [f"{d:%d}" for d in days[::step]], fontsize=7)
    axes.set_xlabel(f"day ({period.label}, UTC)")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    colorbar.set_label(f"% (≤ {HEATMAP_FLOOR_PCT:g} red, grey: no data)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def draw_mttr_trend(trend: Any, path: Path, period: Period) -> None:
    """Mean and p90 MTTR per day of onset, in minutes; gaps where nothing recovered."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 3.2))
    axes = figure.add_subplot()
    # One slot per day of the period, so quiet days show as gaps, not as a shorter month.
    days = list(pd.to_datetime(trend["day"], utc=True))
    slots = np.arange(len(days), dtype=np.float64)
    axes.plot(slots, trend["mttr_s"].to_numpy(dtype=np.float64) / 60, marker="o", label="mean")
    axes.plot(slots, trend["mttr_p90_s"].to_numpy(dtype=np.float64) / 60, marker=".",
              linestyle="--", label="p90")
    if not trend["mttr_s"].notna().any():
        axes.text(0.5, 0.5, "no recovered incidents", transform=axes.transAxes,
                  ha="center", va="center", color="grey")
    step = max(1, len(days) // 12)
    axes.set_xticks(slots[::step], [f"{d:%m-%d}" for d in days[::step]], fontsize=8)
    axes.set_xlim(-0.5, max(len(days) - 0.5, 0.5))
    axes.set_ylim(bottom=0)
    axes.set_ylabel("MTTR (min)")
    axes.set_title(f"MTTR per day of onset (onset → verified recovery) — {period.label}")
    axes.legend(loc="upper left", fontsize=8, bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def display_table(table: Any) -> Any:
    """A copy for people: fractions as percentages, seconds rounded, timestamps in ISO."""
    shown = table.copy()
    for column in shown.columns:
        values = shown[column]
        if column in PERCENT_COLUMNS:
            shown[column] = [_pct(v, 4 if column == "availability" else 2) for v in values]
        elif column.endswith("_s") and pd.api.types.is_float_dtype(values.dtype):
            shown[column] = values.round(1)
        elif isinstance(values.dtype, pd.DatetimeTZDtype):
            shown[column] = values.dt.strftime("%Y-%m-%d %H:%M")
    return shown


def markdown_table(table: Any) -> str:
    """A table as GitHub markdown, for Prefect artifacts (formatted as ``display_table``)."""
    shown = display_table(table).astype(object).where(table.notna(), "–")

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render_html(tables: Mapping[str, Any], period: Period, summary: str) -> str:
    """The report page: summary, both charts, then every table but the daily one."""
    # The daily table is the heatmap; its numbers are in availability_daily.csv.
    sections = "\n".join(
        f"<h2>{html.escape(name.replace('_', ' '))}</h2>\n"
        + display_table(table).to_html(index=False, na_rep="–", border=0, classes="t")
        for name, table in tables.items() if name != "availability_daily"
    )
    lines = "<br>".join(html.escape(line) for line in summary.splitlines())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Floorwatch reliability report {html.escape(period.label)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table.t {{ border-collapse: collapse; font-size: 13px; margin-bottom: 1.5em; }}
table.t th, table.t td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
table.t td:first-child, table.t th:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Reliability report {html.escape(period.label)}</h1>
<p>{lines}</p>
<p>Definitions: availability = up / (up + down) time, maintenance and no-data time excluded;
MTTR from onset to verified recovery (docs/reliability.md).</p>
<img src="{HEATMAP}" alt="availability per component and day">
<img src="{MTTR_CHART}" alt="MTTR trend">
{sections}
</body></html>
"""


# --------------------------------------------------------------------------- the command


def run_report_cli(
    period: str, out: Path, store_url: str | None, inventory_path: Path | None = None,
) -> int:
    """``floorwatch report``: build the ``period`` report from the store into ``out``.
    Prints the summary and the files; returns 0, or 1 with the reason on stderr."""
    try:
        chosen = parse_period(period)
        inventory = load_inventory(inventory_path) if inventory_path is not None else None
        inputs = load_report_inputs(store_url, chosen, inventory)
        report = write_period_report(inputs, chosen, Path(out))
    except (FloorwatchError, ValueError, OSError) as exc:
        print(f"floorwatch report: {exc}", file=sys.stderr)
        return 1
    print(report.summary)
    print(f"wrote {len(report.files)} files to {report.folder}")
    return 0
