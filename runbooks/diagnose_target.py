"""diagnose_target: collect the evidence on a target and report it; act on nothing.

Runnable by hand from the UI on any target, and what automation runs for faults that need
a look before anyone acts (``api_integration_error``, ``infrastructure_overload``,
``flapping``). The plan is empty and unverified, so the outcome is ``diagnosed``; a
financial incident is handed to people instead, with the affected bets and payments
(``runbooks.financial``). Besides the frame's report, the run publishes the evidence as its
own markdown artifact (``diagnosis-<target>``) and returns it under ``evidence``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from floorwatch.catalogue import RunbookName
from runbooks import escalate, financial
from runbooks.diagnose import diagnose, render_evidence
from runbooks.frame import Diagnosis, Plan, RunbookParams, RunContext, run_runbook


@dataclass
class DiagnosisOnly:
    """The planner of a diagnosis-only run; keeps the diagnosis for the evidence report."""

    diagnosis: Diagnosis | None = None

    async def plan(self, ctx: RunContext, diagnosis: Diagnosis) -> Plan:
        self.diagnosis = diagnosis
        if financial.is_financial(ctx, diagnosis):
            return await escalate.planner(ctx, diagnosis)
        return Plan(steps=[], verify=False)


async def publish_evidence(report: dict[str, Any], diagnosis: Diagnosis | None) -> dict[str, Any]:
    """The evidence as a markdown artifact beside the report; the report with it added."""
    if diagnosis is None:  # the target was busy: nothing was diagnosed
        return report
    markdown = (f"# Diagnosis of {report['target']}\n\n{diagnosis.summary}\n\n"
                f"{render_evidence(diagnosis.evidence)}")
    await acreate_markdown_artifact(key=f"diagnosis-{report['target']}".lower(),
                                    markdown=markdown, description=diagnosis.summary[:500])
    return {**report, "evidence": diagnosis.evidence}


@flow(name="diagnose-target")
async def diagnose_target(
    target: str,
    incident_id: int | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    code: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """Diagnose a target (service states, journal, console, DNS answers...) and report."""
    params = RunbookParams(target=target, incident_id=incident_id, dry_run=dry_run, code=code,
                           requested_by=requested_by, reason=reason)
    planner = DiagnosisOnly()
    report = await run_runbook(RunbookName.DIAGNOSE_TARGET, params, planner.plan, diagnose)
    return await publish_evidence(report, planner.diagnosis)
