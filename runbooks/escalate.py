"""escalate: hand an incident, with its diagnosis, to the zone's escalation contacts.

Acts on nothing. The frame records the hand-off (the incident goes to ``escalated``, an
``escalate`` action names the contacts); this runbook adds an ``escalation`` timeline event
carrying the contacts, the diagnosis and, for a financial fault, every affected bet, round
and payment, which is what the notification channels (a later issue) will send. A financial
incident is planned by ``runbooks.financial``, so its reason lists the affected ids too.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from floorwatch.catalogue import RunbookName
from runbooks import financial
from runbooks.diagnose import diagnose
from runbooks.frame import Diagnosis, Plan, RunbookParams, RunContext, run_runbook


def escalation_reason(ctx: RunContext, diagnosis: Diagnosis) -> str:
    """Why the incident goes to people: who asked and why, then the diagnosis summary."""
    why = ctx.params.reason.strip() or f"{ctx.actor} asked for people to look"
    return f"{why}. Diagnosis: {diagnosis.summary}"


def handoff_data(ctx: RunContext, diagnosis: Diagnosis, reason: str) -> dict[str, Any]:
    """What the escalation event carries: contacts, reason, diagnosis, affected rows."""
    contacts = [{"name": c.name, "channel": str(c.channel), "address": c.address}
                for c in ctx.inventory.escalation(ctx.zone)]
    # the full evidence is in the diagnosis event already; this one is what people get
    data: dict[str, Any] = {"contacts": contacts, "reason": reason,
                            "diagnosis": diagnosis.summary}
    if financial.is_financial(ctx, diagnosis):
        data["affected"] = diagnosis.evidence.get("financial")
    return data


async def planner(ctx: RunContext, diagnosis: Diagnosis) -> Plan:
    """Escalate, with the financial planner's reason for money faults; record the hand-off
    (not on a dry run, which hands nothing over)."""
    if financial.is_financial(ctx, diagnosis):
        plan = await financial.planner(ctx, diagnosis)
    else:
        plan = Plan(escalate=escalation_reason(ctx, diagnosis))
    reason = plan.escalate or ""
    if not ctx.params.dry_run:
        data = handoff_data(ctx, diagnosis, reason)
        names = ", ".join(c["name"] for c in data["contacts"])
        ctx.timeline("escalation", f"handed to {names}: {reason}", data)
    return plan


@flow(name="escalate")
async def escalate(
    target: str,
    incident_id: int | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    code: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """Hand the target's incident, with its diagnosis, to the zone's escalation contacts."""
    params = RunbookParams(target=target, incident_id=incident_id, dry_run=dry_run, code=code,
                           requested_by=requested_by, reason=reason)
    return await run_runbook(RunbookName.ESCALATE, params, planner, diagnose)
