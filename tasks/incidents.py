"""Tasks that keep the store in step with the platform: write probe results (spooling them
to disk when the store is down, so none is lost), turn them into incidents, announce those
as Prefect events, and publish the platform status."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from floorwatch.detect import Decisions, DetectionConfig, OpenIncident, detect
from floorwatch.errors import StoreError
from floorwatch.inventory import Inventory
from floorwatch.results import ProbeResult, now_utc
from floorwatch.status import platform_status
from floorwatch.store import IncidentRow, Store
from tasks.notify import notify_quietly

OPENED = "floorwatch.incident.opened"
RESOLVED = "floorwatch.incident.resolved"
SUPPRESSED = "floorwatch.incident.suppressed"
# Detection needs each target's results over twice the flapping window (to see a flap and
# then a full stable window), capped so a 1 s probe cannot make the read unbounded.
HISTORY_PER_TARGET = 1500
STATUS_ARTIFACT = "platform-status"


def spool_dir() -> Path:
    return Path(os.environ.get("FLOORWATCH_HOME", ".floorwatch")) / "spool"


def target_resource(target: str) -> dict[str, str]:
    """The Prefect event resource of a target: what automations and triggers match on."""
    return {"prefect.resource.id": f"floorwatch.target.{target}", "prefect.resource.name": target}


# -- results ---------------------------------------------------------------------------
def _spool(results: Sequence[ProbeResult]) -> Path:
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"results-{now_utc():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.jsonl"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(r.model_dump_json() + "\n" for r in results))
    os.replace(tmp, path)
    return path


def _replay_spool(store: Store) -> int:
    """Insert spooled results, oldest file first; a file is removed only once stored."""
    replayed = 0
    for path in sorted(spool_dir().glob("results-*.jsonl")):
        rows = [ProbeResult.model_validate_json(line) for line in path.read_text().splitlines()]
        replayed += store.insert_probe_results(rows)
        path.unlink()
    return replayed


def write_results(store: Store, results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Store ``results`` in one bulk insert after any spooled ones; on a store outage spool
    them to disk instead and say so. Never loses a result."""
    try:
        replayed = _replay_spool(store)
        written = store.insert_probe_results(results)
    except StoreError as exc:
        path = _spool(results)
        return {"written": 0, "spooled": len(results), "spool": str(path), "error": str(exc)}
    return {"written": written, "replayed": replayed, "spooled": 0}


# -- detection -------------------------------------------------------------------------
@dataclass
class DetectionOutcome:
    opened: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    suppressed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _as_open(row: IncidentRow) -> OpenIncident:
    return OpenIncident(
        id=row.id, target=row.target, fault_kind=row.fault_kind, opened_at=row.detected_at,
        parent_incident_id=row.parent_incident_id,
    )


def _evidence(results: Sequence[ProbeResult]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", exclude={"zone"}) for r in results[-5:]]


def remediation_labels(inventory: Inventory | None, zone: str, fault_kind: str) -> dict[str, str]:
    """Event resource labels naming the runbook the inventory maps to the fault and its
    policy: what the runbook deployments' triggers match on."""
    from runbooks.registry import FAST_PATH, FAST_PATH_POLICY

    rule = inventory.remediation_for(zone, fault_kind) if inventory is not None else None
    if rule is None:
        return {"floorwatch.runbook": "none", "floorwatch.policy": "manual"}
    policy = str(rule.policy)
    if rule.runbook in FAST_PATH and policy == "automatic":
        policy = FAST_PATH_POLICY
    return {"floorwatch.runbook": str(rule.runbook), "floorwatch.policy": policy}


def apply_decisions(
    store: Store, decisions: Decisions, now: datetime, emit: bool = True,
    inventory: Inventory | None = None,
) -> DetectionOutcome:
    """Write the decisions to the store and announce them. Parents first, so a child can
    be linked to an incident opened in the same pass."""
    outcome = DetectionOutcome()
    opened_ids: dict[tuple[str, str], int] = {}
    for decision in decisions.opens:  # parents come first
        parent_id = decision.parent_incident_id
        if parent_id is None and decision.suppressed_by is not None:
            parent_id = opened_ids.get(decision.suppressed_by)
        try:
            row = store.open_incident(
                target=decision.target, zone=decision.zone, fault_kind=decision.fault_kind,
                severity=decision.severity, summary=decision.summary,
                onset_at=decision.onset_at, detected_at=decision.detected_at,
                parent_incident_id=parent_id,
            )
        except StoreError as exc:
            # Another sweep of the same target (another probe kind) opened it first.
            outcome.skipped.append(str(exc))
            continue
        opened_ids[(decision.target, decision.fault_kind)] = row.id
        store.add_event(row.id, "evidence", "probe results that opened the incident",
                        data={"results": _evidence(decision.evidence)})
        labels = remediation_labels(inventory, row.zone, row.fault_kind)
        payload = {
            "incident_id": row.id, "target": row.target, "zone": row.zone,
            "fault_kind": row.fault_kind, "severity": row.severity, "summary": row.summary,
            "onset_at": row.onset_at.isoformat(), "detected_at": row.detected_at.isoformat(),
            "parent_incident_id": parent_id, "runbook": labels["floorwatch.runbook"],
            "policy": labels["floorwatch.policy"],
        }
        if decision.suppressed_by is not None:
            outcome.suppressed.append(payload)
            event = SUPPRESSED
        else:
            outcome.opened.append(payload)
            event = OPENED
        if emit:
            emit_event(event=event, resource=target_resource(row.target) | labels,
                       payload=payload)
        if inventory is not None and decision.suppressed_by is None:
            notify_quietly(store, inventory, row, "opened", row.summary,
                           {"runbook": payload["runbook"], "policy": payload["policy"]})
    for resolution in decisions.resolves:
        row = store.set_incident_state(
            resolution.incident_id, "resolved", at=now, recovered_at=resolution.recovered_at,
            message=f"recovered: {len(resolution.evidence)} passing probe results",
        )
        store.add_event(row.id, "evidence", "probe results that resolved the incident",
                        data={"results": _evidence(resolution.evidence)})
        payload = {
            "incident_id": row.id, "target": row.target, "zone": row.zone,
            "fault_kind": row.fault_kind, "recovered_at": resolution.recovered_at.isoformat(),
        }
        outcome.resolved.append(payload)
        if inventory is not None:
            notify_quietly(store, inventory, row, "resolved", row.summary + ": recovered")
        if emit:
            emit_event(event=RESOLVED, resource=target_resource(row.target), payload=payload)
    return outcome


@task(name="detect-incidents", cache_policy=NO_CACHE)
def detect_incidents(inventory: Inventory, targets: Sequence[str]) -> dict[str, Any]:
    """Read the targets' recent history, decide, write incidents and emit their events."""
    now = now_utc()
    with Store() as store:
        config = DetectionConfig()
        history = store.history(
            targets, per_target=HISTORY_PER_TARGET, since=now - 2 * config.flap_window
        )
        unresolved = [_as_open(r) for r in store.unresolved_incidents()]
        decisions = detect(inventory, history, unresolved, now, config,
                           on_hold=store.active_holds())
        outcome = apply_decisions(store, decisions, now, inventory=inventory)
    logger = get_run_logger()
    for payload in outcome.opened:
        logger.warning("incident #%s opened: %s", payload["incident_id"], payload["summary"])
    for payload in outcome.resolved:
        logger.info("incident #%s resolved: %s %s", payload["incident_id"], payload["target"],
                    payload["fault_kind"])
    return {
        "opened": outcome.opened, "resolved": outcome.resolved,
        "suppressed": outcome.suppressed, "skipped": outcome.skipped,
        "states": dict(decisions.states), "excluded": len(decisions.excluded),
    }


@task(name="publish-platform-status", cache_policy=NO_CACHE)
async def publish_platform_status(inventory: Inventory) -> list[dict[str, Any]]:
    """The `platform-status` table artifact: per zone, up / down / degraded / open incidents."""
    now = now_utc()
    with Store() as store:
        latest = store.latest_results(since=now - timedelta(hours=1))
        unresolved = store.unresolved_incidents()
    rows = [
        {
            "zone": z.zone, "targets": z.targets, "up": z.up, "down": z.down,
            "degraded": z.degraded, "maintenance": z.maintenance, "unknown": z.unknown,
            "open incidents": ", ".join(z.open_incidents) or "-",
        }
        for z in platform_status(inventory, latest, unresolved, now)
    ]
    await acreate_table_artifact(
        key=STATUS_ARTIFACT, table=rows,
        description=f"Platform status at {now:%Y-%m-%d %H:%M:%S} UTC",
    )
    return rows

