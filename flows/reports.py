"""The period report flow: daily, weekly and monthly reliability reports.

Loads the period's history from the store, writes the tables (CSV, Parquet), the charts and
the HTML page (floorwatch.report), publishes Prefect table and markdown artifacts, and posts
a short summary with a link to chat. Without ``period`` it reports the last complete day,
week or month (``granularity``), which is what the schedules in ``SCHEDULES`` run.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Final

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from floorwatch.inventory import load_inventory
from floorwatch.report import (
    Period,
    PeriodKind,
    PeriodReport,
    ReportInputs,
    last_complete_period,
    load_report_inputs,
    markdown_table,
    parse_period,
    write_period_report,
)

# Cron schedules (UTC) for the deployments: shortly after each period closes, so that the
# last sweep of the period is stored.
SCHEDULES: Final[dict[str, str]] = {"day": "15 0 * * *", "week": "30 0 * * 1",
                                    "month": "45 0 1 * *"}
ARTIFACT_ROWS: Final = 2000  # a table artifact shows at most this many rows; files hold all
NOTIFY_MODULE: Final = "tasks.notify"


def reports_dir() -> Path:
    """Where reports go by default: ``$FLOORWATCH_HOME/reports``."""
    return Path(os.environ.get("FLOORWATCH_HOME", ".floorwatch")) / "reports"


def artifact_key(period: Period, table: str | None = None) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return f"report-{period.slug}" + (f"-{table.replace('_', '-')}" if table else "")


@task(name="load-report-inputs", cache_policy=NO_CACHE)
def load_inputs(period: Period, inventory_path: str | None) -> ReportInputs:
    """The period's results, incidents and actions from the store."""
    inventory = load_inventory(inventory_path) if inventory_path else None
    return load_report_inputs(None, period, inventory)


@task(name="write-report-files", cache_policy=NO_CACHE)
def write_report_files(inputs: ReportInputs, period: Period, out_dir: str) -> PeriodReport:
    """Tables (CSV, Parquet), charts, HTML page and summary into ``out_dir``."""
    return write_period_report(inputs, period, Path(out_dir))


def _records(table: Any) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN as null, timestamps in ISO 8601."""
    rows: list[dict[str, Any]] = json.loads(
        table.head(ARTIFACT_ROWS).to_json(orient="records", date_format="iso"))
    return rows


@task(name="publish-report-artifacts", cache_policy=NO_CACHE)
async def publish_report_artifacts(report: PeriodReport) -> list[str]:
    """One table artifact per table, a markdown summary and a link to the HTML page."""
    period = report.period
    keys = []
    for name, table in report.tables.items():
        shown = f"first {ARTIFACT_ROWS} of {len(table)} rows; " if len(table) > ARTIFACT_ROWS \
            else ""
        key = artifact_key(period, name)
        await acreate_table_artifact(
            key=key, table=_records(table),
            description=f"{name} {period.label} ({shown}all rows in {name}.csv)")
        keys.append(key)
    availability = markdown_table(report.tables["availability"][
        ["target", "availability", "downtime_s", "excluded_s", "no_data_s", "request_ratio"]])
    files = "\n".join(f"- `{path}`" for path in report.files)
    markdown = (f"# Reliability report {period.label}\n\n"
                + report.summary.replace("\n", "  \n")
                + "\n\n## Availability\n\n" + availability
                + f"\n\n## Files\n\n{files}\n")
    await acreate_markdown_artifact(key=artifact_key(period), markdown=markdown,
                                    description=f"Reliability report {period.label}")
    await acreate_link_artifact(key=artifact_key(period, "page"), link=report.html.as_uri(),
                                link_text=f"report {period.label}",
                                description="The HTML report with its charts")
    return [*keys, artifact_key(period), artifact_key(period, "page")]


def report_link() -> str | None:
    """The flow run's page in the Prefect UI (its artifacts hold the report), when the UI's
    address is known: chat readers cannot open files on this machine."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run.id}" if base and flow_run.id \
        else None


def post_chat_summary(text: str, link: str | None, period: Period) -> bool:
    """Post the summary to chat when the notifications module is there; else log it.
    Returns whether it was posted."""
    if importlib.util.find_spec(NOTIFY_MODULE) is None:
        get_run_logger().info("no %s: the summary is not posted to chat\n%s", NOTIFY_MODULE, text)
        return False
    from tasks.notify import post_summary

    # The key makes a retried report post once.
    post_summary(text, link, title=f"Reliability report {period.label}",
                 key=artifact_key(period))
    return True


@task(name="post-report-summary", cache_policy=NO_CACHE)
def post_report_summary(report: PeriodReport) -> bool:
    """The chat summary with a link to the HTML page."""
    return post_chat_summary(report.summary, report_link(), report.period)


@flow(name="build-period-report", log_prints=True)
async def build_period_report(
    period: str | None = None,
    granularity: PeriodKind = "day",
    out_dir: str | None = None,
    inventory_path: str | None = None,
) -> dict[str, Any]:
    """Build the reliability report of ``period`` (YYYY-MM, YYYY-MM-DD, YYYY-Www), or of the
    last complete ``granularity`` period, into ``out_dir`` (default: the reports folder)."""
    chosen = parse_period(period) if period else last_complete_period(granularity)
    folder = out_dir or str(reports_dir() / chosen.slug)
    inputs = load_inputs(chosen, inventory_path)
    report = write_report_files(inputs, chosen, folder)
    keys = await publish_report_artifacts(report)
    posted = post_report_summary(report)
    print(report.summary)
    return {"period": chosen.label, "folder": str(report.folder), "html": str(report.html),
            "artifacts": keys, "posted": posted, "summary": report.summary}
