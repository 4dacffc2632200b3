"""The runbook frame every runbook runs in.

    lock the target ─> check the budget ─> diagnose ─> plan ─> policy ─> act ─> verify ─> report
       (busy: stop)     (spent: escalate)                      │            │         │
                                          automatic: act ──────┘            │   fails: roll back
                                          approval: pause for a person      │          and escalate
                                          manual: only when a person starts it

A runbook module supplies a ``planner``: from the run context and the diagnosis it returns a
``Plan`` of ``Step``s (each with what it does, its parameters, an action and, where one
exists, a rollback) or asks to escalate. The frame does everything else the same way for
every runbook, so a person reading any report finds the same sections.

Steps run as Prefect tasks inside one Prefect transaction with verification: when a step or
the verification fails, Prefect calls the ``on_rollback`` hooks of the steps that completed,
newest first (DNS records restored, failover undone), and the incident is escalated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.input import RunInput
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from floorwatch.audit import AuditLog, sinks_from_env
from floorwatch.catalogue import FINANCIAL_FAULTS, Policy, RunbookName
from floorwatch.errors import AdapterError, FloorwatchError, VerificationFailed
from floorwatch.inventory import Inventory, Probe, Target
from floorwatch.results import ProbeResult, now_utc
from floorwatch.roster import Roster
from floorwatch.security import APPROVE, REJECT, required_role
from floorwatch.store import HoldRow, IncidentRow, Store
from tasks.inventory import cached_inventory
from tasks.notify import notify_timeline, secret_values
from tasks.probes import ProbeContext, run_probe

AUTOMATION = "automation"
NOT_ACTIONS = frozenset({"diagnose", "escalate"})
LOCK_PREFIX = "floorwatch-target-"
REPAIR_LOCK_PREFIX = "floorwatch-repair-"
# Runbooks that only look and tell: they never take repair locks (see ``lock_limits``).
LOOKING_ONLY: frozenset[RunbookName] = frozenset(
    {RunbookName.DIAGNOSE_TARGET, RunbookName.ESCALATE}
)
DEFAULT_LOCK_TIMEOUT_S = 30.0
DEFAULT_APPROVAL_TIMEOUT_S = 900
DEFAULT_VERIFY_DEADLINE_S = 60.0


def default_inventory_path() -> str:
    """The inventory the main job serves (``FLOORWATCH_INVENTORY``), else the example."""
    return os.environ.get("FLOORWATCH_INVENTORY", "inventory.example.yaml")


class RunbookParams(BaseModel):
    """What a person fills in on the Prefect UI form (and what automation passes)."""

    target: str = Field(description="Target name from the inventory, e.g. app-primary")
    incident_id: int | None = Field(
        default=None, description="The incident this run answers, if any"
    )
    dry_run: bool = Field(
        default=False, description="Produce the full plan and act on nothing"
    )
    requested_by: str = Field(
        default="", description="Your name on the roster (automation for triggered runs)"
    )
    reason: str = Field(default="", description="Why, in a few words")
    code: str = Field(
        default="", description="Your one-time code from your authenticator app (people only)"
    )
    lock_timeout_s: float = Field(
        default=DEFAULT_LOCK_TIMEOUT_S, gt=0,
        description="How long to wait for another runbook on the same target",
    )
    approval_timeout_s: int = Field(
        default=DEFAULT_APPROVAL_TIMEOUT_S, gt=0,
        description="How long to wait for a person's approval before escalating",
    )


class ApprovalInput(RunInput):
    """A person's decision on a planned remediation."""

    approve: bool = False
    approver: str = ""
    code: str = ""  # the approver's one-time code
    reason: str = ""


class Outcome(StrEnum):
    RESOLVED = "resolved"            # acted and verified
    VERIFIED = "verified"            # nothing to do: the target already passes
    ESCALATED = "escalated"          # handed to people (budget, policy, failure, rejection)
    TARGET_BUSY = "target_busy"      # another runbook holds the target
    DRY_RUN = "dry_run"              # plan only
    DIAGNOSED = "diagnosed"          # a diagnosis-only run
    REFUSED = "refused"              # the person asking may not (code, role, unknown)


@dataclass
class Step:
    """One action: what it does, with which parameters, and how to undo it."""

    name: str
    summary: str
    parameters: dict[str, Any]
    act: Callable[[], str]
    rollback: Callable[[], str] | None = None
    rollback_summary: str = ""


@dataclass
class Diagnosis:
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    details: str = ""  # markdown shown under the summary in the report


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    escalate: str | None = None  # act on nothing; hand to people with this reason
    verify: bool = True
    # Targets whose probes prove recovery, when the run's own target cannot: after a server
    # failover the fenced primary stays down; the traffic record and the standby prove it.
    verify_targets: list[str] | None = None


@dataclass
class RunContext:
    """Everything a planner may use about this run."""

    runbook: RunbookName
    params: RunbookParams
    inventory: Inventory
    target: Target
    zone: str
    incident: IncidentRow | None
    store: Store
    flow_run_id: str | None
    automatic: bool
    credentials: dict[str, Any] = field(default_factory=dict)
    audit: AuditLog | None = None

    def timeline(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        if self.incident is not None:
            event_id = self.store.add_event(self.incident.id, kind, message, actor=self.actor,
                                            data=data)
            notify_timeline(self.store, self.inventory, self.incident, kind, message, data,
                            event_id, secret_values(self.credentials.values()))

    @property
    def actor(self) -> str:
        return AUTOMATION if self.automatic else self.params.requested_by

    def record(self, step: str, outcome: str, started: datetime, output: str = "",
               parameters: dict[str, Any] | None = None,
               evidence: dict[str, Any] | None = None) -> None:
        self.store.record_action(
            runbook=str(self.runbook), step=step, outcome=outcome,  # type: ignore[arg-type]
            started_at=started, finished_at=now_utc(),
            incident_id=self.incident.id if self.incident else None,
            flow_run_id=self.flow_run_id, parameters=parameters or {}, output=output[:20000],
            evidence=evidence or {}, target=self.target.name,
            # Only actions on the platform spend the budget; looking and escalating do not.
            automatic=self.automatic and outcome != "planned" and step not in NOT_ACTIONS,
        )
        if self.audit is not None:
            self.audit.record(
                actor=self.actor, action=f"runbook.{step}", subject=self.target.name,
                details={"runbook": str(self.runbook), "outcome": outcome,
                         "incident_id": self.incident.id if self.incident else None,
                         "flow_run_id": self.flow_run_id, "parameters": parameters or {}},
            )


Planner = Callable[[RunContext, Diagnosis], Awaitable[Plan]]
Diagnoser = Callable[[RunContext], Awaitable[Diagnosis]]


@dataclass
class Report:
    runbook: str
    target: str
    outcome: Outcome
    incident_id: int | None
    reason: str = ""
    diagnosis: Diagnosis | None = None
    plan: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    before: list[dict[str, Any]] = field(default_factory=list)
    after: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook, "target": self.target, "outcome": str(self.outcome),
            "incident_id": self.incident_id, "reason": self.reason,
            "diagnosis": self.diagnosis.summary if self.diagnosis else None,
            "plan": self.plan, "steps": self.steps, "times": self.times,
        }


# -- holds ---------------------------------------------------------------------------------
def hold_over(ctx: RunContext) -> HoldRow | None:
    """The active hold on the run's target or on a target it depends on (the server a
    service runs on), nearest first; None when nothing in its way is held."""
    holds = ctx.store.active_holds()
    for name in dependency_chain(ctx.inventory, ctx.target) if holds else ():
        if name in holds:
            return holds[name]
    return None


# -- the lock ----------------------------------------------------------------------------
def dependency_chain(inventory: Inventory, target: Target) -> list[str]:
    """``target``, then everything it depends on, directly or not, nearest first."""
    names: list[str] = []
    todo = [target.name]
    while todo:
        name = todo.pop(0)
        if name not in names:
            names.append(name)
            todo.extend(parent.name for parent in inventory.parents(name))
    return names


def lock_limits(runbook: RunbookName, inventory: Inventory, target: Target) -> list[str]:
    """The global concurrency limits a runbook on ``target`` takes, all at once.

    Every runbook takes its target's lock: one runbook per target. One that acts on the
    platform also takes the repair lock of the target and of everything it depends on, so
    a restart of a service and one of its server never overlap, while a diagnosis of the
    server (looking only) does not hold up the repair of a service running on it.
    """
    limits = [f"{LOCK_PREFIX}{target.name}"]
    if runbook not in LOOKING_ONLY:
        limits += [f"{REPAIR_LOCK_PREFIX}{name}" for name in dependency_chain(inventory, target)]
    return limits


async def ensure_target_lock(limit_name: str) -> str:
    """The global concurrency limit (1 slot) ``limit_name``; created on first use."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(limit_name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another runbook was first
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=limit_name, limit=1)
                )
    return limit_name


# -- verification --------------------------------------------------------------------------
def _probes_to_verify(targets: Sequence[Target]) -> list[tuple[Target, Probe]]:
    return [(t, p) for t in targets for p in t.probes]


async def probe_target(
    ctx: RunContext, targets: Sequence[Target] | None = None
) -> list[ProbeResult]:
    """Every probe of the target (or of ``targets``), once, each in its own zone."""
    chosen = list(targets) if targets is not None else [ctx.target]
    zones = {t.name: (ctx.zone if t.name == ctx.target.name
                      else ctx.inventory.zone_of(t.name).name) for t in chosen}
    async with contextlib.AsyncExitStack() as stack:
        contexts: dict[str, ProbeContext] = {}
        for zone in dict.fromkeys(zones.values()):
            contexts[zone] = await stack.enter_async_context(
                ProbeContext(zone=zone, credentials=ctx.credentials))
        return list(await asyncio.gather(
            *(run_probe(t, p, contexts[zones[t.name]]) for t, p in _probes_to_verify(chosen))
        ))


async def verify_recovery(
    ctx: RunContext, deadline_s: float = DEFAULT_VERIFY_DEADLINE_S,
    targets: Sequence[Target] | None = None,
) -> list[ProbeResult]:
    """Re-run the target's (or ``targets``') probes until all pass ``successes_to_resolve``
    times in a row; raise ``VerificationFailed`` with the last evidence when the deadline
    passes."""
    chosen = list(targets) if targets is not None else [ctx.target]
    probes = [p for _, p in _probes_to_verify(chosen)]
    needed = max((p.successes_to_resolve for p in probes), default=2)
    interval = min((p.interval for p in probes), default=5.0)
    # Verification repeats the probe a few tenths of a second apart: the recovery is proven
    # by consecutive passes, and a failover is promised within a second or two (measured:
    # a 1 s pause made a DNS failover's verification alone take over a second).
    pause = min(0.3, interval / 4)
    streak: list[ProbeResult] = []
    last: list[ProbeResult] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        last = await probe_target(ctx, chosen)
        if all(r.ok for r in last):
            streak.extend(last)
            if len(streak) >= needed * len(last):
                return streak
        else:
            streak = []
        await asyncio.sleep(pause)
    observed = "; ".join(
        f"{'' if r.target == ctx.target.name else r.target + ' '}{r.probe_id}: "
        f"{r.error_message or 'ok'}" for r in last)
    raise VerificationFailed("verify", observed or "no probe result")


async def resolve_verify_targets(ctx: RunContext, plan: Plan) -> list[Target] | None:
    """The targets ``plan.verify_targets`` names, their blocks loaded into the run's
    credentials; checked before anything is done, so a wrong name acts on nothing."""
    if plan.verify_targets is None:
        return None
    if not plan.verify_targets:
        raise FloorwatchError(f"{ctx.runbook}: the plan names an empty list of verify targets")
    targets = [ctx.inventory.target(name) for name in plan.verify_targets]
    for target in targets:
        if target.connection.block and target.connection.block not in ctx.credentials:
            ctx.credentials.update(await load_target_credentials(target))
    return targets


# -- the frame -------------------------------------------------------------------------------
async def run_runbook(
    runbook: RunbookName,
    params: RunbookParams,
    planner: Planner,
    diagnose: Diagnoser,
    *,
    inventory_path: str | None = None,
    verify_deadline_s: float = DEFAULT_VERIFY_DEADLINE_S,
) -> dict[str, Any]:
    """Run one runbook on one target, the same way for every runbook; returns the report."""
    logger = get_run_logger()
    inventory = cached_inventory(inventory_path or default_inventory_path())
    target = inventory.target(params.target)  # an unknown name fails here, clearly
    zone = inventory.zone_of(target.name).name
    run = get_run_context()
    flow_run_id = str(run.flow_run.id) if getattr(run, "flow_run", None) else None

    with Store() as store:
        incident = store.get_incident(params.incident_id) if params.incident_id else None
        if incident is not None and incident.target != target.name:
            raise FloorwatchError(
                f"incident #{incident.id} is about {incident.target}, not {target.name}"
            )
        audit = AuditLog(store, sinks_from_env())
        ctx = RunContext(
            runbook=runbook, params=params, inventory=inventory, target=target, zone=zone,
            incident=incident, store=store, flow_run_id=flow_run_id,
            automatic=params.requested_by == AUTOMATION,
            credentials=await load_target_credentials(target), audit=audit,
        )
        report = Report(runbook=str(runbook), target=target.name, outcome=Outcome.ESCALATED,
                        incident_id=incident.id if incident else None)
        refusal = authorize_request(ctx, run)
        if refusal is not None:
            report.outcome = Outcome.REFUSED
            report.reason = refusal
            ctx.timeline("refused", refusal)
            if incident is None:  # no incident thread to tell: tell the team directly
                from tasks.notify import post_summary

                with contextlib.suppress(FloorwatchError):
                    post_summary(refusal, title="Runbook refused", store=store,
                                 inventory=inventory, key=f"refused-{flow_run_id}")
            get_run_logger().warning(refusal)
            await publish_report(ctx, report)
            audit.close()
            return report.as_dict()
        from prefect.concurrency.asyncio import concurrency

        locks = [await ensure_target_lock(name) for name in lock_limits(runbook, inventory, target)]
        wait = params.lock_timeout_s
        try:
            async with concurrency(locks, occupy=1, timeout_seconds=wait, strict=True):
                await _locked(ctx, report, planner, diagnose, params.approval_timeout_s,
                              verify_deadline_s)
        except TimeoutError:
            report.outcome = Outcome.TARGET_BUSY
            also = [n for n in dependency_chain(inventory, target)[1:]
                    if runbook not in LOOKING_ONLY]
            report.reason = (f"{target.name} is busy: another runbook holds it"
                             + (f" or repairs {', '.join(also)}" if also else "")
                             + f" (waited {wait:g} s); nothing done")
            ctx.timeline("target_busy", report.reason)
            logger.warning(report.reason)
        await publish_report(ctx, report)
        audit.close()
    return report.as_dict()


def authorize_request(ctx: RunContext, run: Any) -> str | None:
    """None when the requester may run this runbook; else the refusal (already audited).

    A person needs their one-time code and the runbook's least role (``floorwatch.security``).
    ``automation`` needs no code, but only automation may say so: a run started from a
    deployment claims it only when a Prefect automation created it; in-process calls (the
    sweep's fast path, tests) are code already trusted on this machine.
    """
    assert ctx.audit is not None
    what = f"{ctx.runbook} on {ctx.target.name}"
    if ctx.automatic:
        flow_run = getattr(run, "flow_run", None)
        created_by = getattr(flow_run, "created_by", None)
        if getattr(flow_run, "deployment_id", None) and getattr(created_by, "type", None) != \
                "AUTOMATION":
            refusal = (f"refused: {what} claims to be automation but was started by hand; "
                       "people start runbooks with their own name and one-time code")
            ctx.audit.record(actor="unknown", action="runbook.refused", subject=ctx.target.name,
                             details={"runbook": str(ctx.runbook), "reason": refusal})
            return refusal
        return None
    roster = Roster(ctx.store, ctx.audit)
    decision = roster.authenticate(ctx.params.requested_by, ctx.params.code,
                                   required_role(str(ctx.runbook)), what=what)
    return None if decision.allowed else f"refused: {decision.reason}"


async def _locked(
    ctx: RunContext, report: Report, planner: Planner, diagnose: Diagnoser,
    approval_timeout_s: int, verify_deadline_s: float,
) -> None:
    logger = get_run_logger()
    started = now_utc()
    if ctx.incident is not None:
        # Another runbook may have fixed it while this one waited for the lock.
        ctx.incident = ctx.store.get_incident(ctx.incident.id)
        if ctx.incident.state == "resolved":
            report.outcome = Outcome.VERIFIED
            report.reason = f"incident #{ctx.incident.id} was already resolved; nothing done"
            return
    ctx.timeline("runbook_started", f"{ctx.runbook} started by {ctx.actor}",
                 {"flow_run_id": ctx.flow_run_id, "dry_run": ctx.params.dry_run})

    # Budget: automation may act only so often on one target before people must look.
    budget = ctx.target.budget
    if ctx.automatic and not ctx.params.dry_run:
        spent = ctx.store.count_automatic_actions(
            ctx.target.name, since=started - timedelta(seconds=budget.window)
        )
        if spent >= budget.max_actions:
            await escalate(ctx, report, f"remediation budget spent: {spent} automatic actions "
                           f"in the last {budget.window} s (limit {budget.max_actions})")
            return

    diagnosis = await diagnose(ctx)
    report.diagnosis = diagnosis
    # The diagnosis probes the target now; its results are the "before" evidence.
    before = diagnosis.evidence.get("probes_now")
    report.before = before if isinstance(before, list) else [
        r.model_dump(mode="json") for r in await probe_target(ctx)
    ]
    ctx.record("diagnose", "succeeded", started, output=diagnosis.summary,
               evidence=diagnosis.evidence)
    ctx.timeline("diagnosis", diagnosis.summary, {"evidence": diagnosis.evidence})

    try:
        plan = await planner(ctx, diagnosis)
    except FloorwatchError as exc:  # e.g. a target this runbook cannot act on
        await escalate(ctx, report, f"{ctx.runbook} cannot act on {ctx.target.name}: {exc}")
        return
    if plan.steps and ctx.incident is not None and ctx.incident.fault_kind in FINANCIAL_FAULTS:
        # Money is never moved by a machine, whoever started the run.
        plan = Plan(escalate=f"{ctx.incident.fault_kind} is a financial fault: "
                    "people decide, automation only diagnoses")
    hold = hold_over(ctx) if plan.steps else None
    if hold is not None:
        # A held target (a fenced primary) is out of automation's and runbooks' hands alike.
        plan = Plan(escalate=f"{hold.target} is held since {hold.set_at:%Y-%m-%d %H:%M:%S} UTC"
                    f" by {hold.set_by} ({hold.reason}); nothing is done on "
                    f"{ctx.target.name} until a person runs `floorwatch hold release "
                    f"{hold.target}`")
    report.plan = [{"step": s.name, "summary": s.summary, "parameters": s.parameters,
                    "rollback": s.rollback_summary or None} for s in plan.steps]
    verify_targets = await resolve_verify_targets(ctx, plan)
    if ctx.params.dry_run:
        for step in plan.steps:
            ctx.record(step.name, "planned", now_utc(), output=step.summary,
                       parameters=step.parameters)
        report.outcome = Outcome.DRY_RUN
        report.reason = ("dry run: the plan above was not carried out"
                         if not plan.escalate else f"dry run: would escalate: {plan.escalate}")
        ctx.timeline("dry_run", report.reason, {"plan": report.plan})
        return
    if plan.escalate:
        await escalate(ctx, report, plan.escalate)
        return
    if not plan.steps:
        report.outcome = Outcome.DIAGNOSED if not plan.verify else Outcome.VERIFIED
        report.reason = diagnosis.summary
        return

    # Policy: automation follows the inventory; a person starting the run is the decision.
    if ctx.automatic:
        rule = (ctx.inventory.remediation_for(ctx.zone, ctx.incident.fault_kind)
                if ctx.incident else None)
        policy = rule.policy if rule else Policy.MANUAL
        if policy == Policy.MANUAL:
            await escalate(ctx, report, "policy is manual: a person must start this runbook")
            return
        if policy == Policy.APPROVAL:
            decision = await ask_approval(ctx, diagnosis, report, approval_timeout_s)
            if decision is None:
                await escalate(ctx, report, f"no approval within {approval_timeout_s} s")
                return
            assert ctx.audit is not None
            verdict = Roster(ctx.store, ctx.audit).authenticate(
                decision.approver, decision.code,
                required_role(APPROVE if decision.approve else REJECT, str(ctx.runbook)),
                what=f"{'approve' if decision.approve else 'reject'} {ctx.runbook} on "
                     f"{ctx.target.name}",
            )
            if not verdict.allowed:
                await escalate(ctx, report, f"approval refused: {verdict.reason}")
                return
            if not decision.approve:
                await escalate(ctx, report, f"rejected by {decision.approver or 'someone'}: "
                               f"{decision.reason or 'no reason given'}")
                return
            ctx.timeline("approved", f"approved by {decision.approver}: {decision.reason}")

    if ctx.incident is not None:
        ctx.incident = ctx.store.set_incident_state(
            ctx.incident.id, "remediating", actor=ctx.actor,
            message=f"{ctx.runbook}: {len(plan.steps)} step(s)")
    try:
        with transaction():
            for step in plan.steps:
                report.steps.append(_run_step(ctx, step))
            if plan.verify:
                evidence = await verify_recovery(ctx, verify_deadline_s, verify_targets)
                report.after = [r.model_dump(mode="json") for r in evidence]
    except (AdapterError, VerificationFailed) as exc:
        logger.error("%s failed on %s: %s; rolled back", ctx.runbook, ctx.target.name, exc)
        undoable = [s.name for s in plan.steps if s.rollback is not None]
        ctx.timeline("failed", f"{exc}; " + (
            f"rolled back what could be undone ({', '.join(undoable)})" if undoable
            else "no step could be undone"))
        await escalate(ctx, report, f"{exc}")
        return
    recovered = min((datetime.fromisoformat(r["ts"]) for r in report.after), default=now_utc())
    report.outcome = Outcome.RESOLVED
    report.reason = "recovery verified by the probes that watch the target"
    if ctx.incident is not None and ctx.store.get_incident(ctx.incident.id).state != "resolved":
        ctx.incident = ctx.store.set_incident_state(
            ctx.incident.id, "resolved", actor=ctx.actor, recovered_at=recovered,
            message=f"{ctx.runbook}: recovery verified")
    report.times = _times(ctx.incident, recovered)


def _run_step(ctx: RunContext, step: Step) -> dict[str, Any]:
    """Run one step as a Prefect task whose rollback hook undoes it."""
    started = now_utc()

    def act() -> str:
        return step.act()

    step_task = task(act, name=f"step-{step.name}", cache_policy=NO_CACHE)
    if step.rollback is not None:
        undo = step.rollback

        def rollback(_txn: object) -> None:
            began = now_utc()
            try:
                output = undo()
            except AdapterError as exc:
                ctx.record(f"{step.name}:rollback", "failed", began, output=str(exc))
                ctx.timeline("rollback_failed", f"{step.rollback_summary}: {exc}")
                return
            ctx.record(f"{step.name}:rollback", "rolled_back", began, output=output,
                       parameters=step.parameters)
            ctx.timeline("rolled_back", step.rollback_summary or f"undid {step.name}")

        step_task.on_rollback(rollback)
    try:
        output = step_task()
    except AdapterError as exc:
        ctx.record(step.name, "failed", started, output=str(exc), parameters=step.parameters)
        ctx.timeline("step_failed", f"{step.summary}: {exc}")
        raise
    ctx.record(step.name, "succeeded", started, output=output, parameters=step.parameters)
    ctx.timeline("step", step.summary, {"output": output[:2000]})
    return {"step": step.name, "summary": step.summary, "output": output,
            "seconds": round((now_utc() - started).total_seconds(), 3)}


async def ask_approval(
    ctx: RunContext, diagnosis: Diagnosis, report: Report, timeout_s: int
) -> ApprovalInput | None:
    """Pause the flow run with a form showing the diagnosis and the plan; None on timeout."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import apause_flow_run

    plan = "\n".join(f"{i}. {p['summary']}" for i, p in enumerate(report.plan, 1))
    description = (
        f"## Approve {ctx.runbook} on {ctx.target.name}?\n\n"
        f"**Diagnosis:** {diagnosis.summary}\n\n**Planned actions:**\n\n{plan}\n\n"
        "Approve to act, or reject with a reason (the incident is then escalated)."
    )
    ctx.timeline("approval_requested", f"waiting up to {timeout_s} s for approval",
                 {"plan": report.plan, "flow_run_id": ctx.flow_run_id})
    try:
        return await apause_flow_run(
            wait_for_input=ApprovalInput.with_initial_data(description=description),
            timeout=timeout_s, poll_interval=1,
        )
    except FlowPauseTimeout:
        return None


async def escalate(ctx: RunContext, report: Report, reason: str) -> None:
    """Hand the incident, with its diagnosis, to the zone's escalation contacts."""
    contacts = [c.name for c in ctx.inventory.escalation(ctx.zone)]
    report.outcome = Outcome.ESCALATED
    report.reason = reason
    ctx.record("escalate", "succeeded", now_utc(), output=reason,
               parameters={"contacts": contacts})
    if ctx.incident is not None and ctx.incident.state != "escalated":
        ctx.incident = ctx.store.set_incident_state(
            ctx.incident.id, "escalated", actor=ctx.actor,
            message=f"escalated to {', '.join(contacts)}: {reason}")
    get_run_logger().warning("%s on %s escalated to %s: %s", ctx.runbook, ctx.target.name,
                             ", ".join(contacts), reason)


def _times(incident: IncidentRow | None, recovered: datetime) -> dict[str, str]:
    if incident is None:
        return {"verified_recovery": recovered.isoformat()}
    onset = incident.onset_at
    times = {"onset": onset.isoformat(), "detected": incident.detected_at.isoformat(),
             "verified_recovery": recovered.isoformat(),
             "time_to_detect_s": f"{(incident.detected_at - onset).total_seconds():.1f}",
             "time_to_recover_s": f"{(recovered - onset).total_seconds():.1f}"}
    if incident.remediation_started_at:
        times["remediation_started"] = incident.remediation_started_at.isoformat()
    return times


async def load_target_credentials(target: Target) -> dict[str, Any]:
    """The block the target's connection names (SSH host or DNS zone), loaded once."""
    from blocks import DnsZone, SshHost

    name = target.connection.block
    if not name:
        return {}
    block_type = SshHost if target.kind == "server" else DnsZone
    return {name: await block_type.aload(name)}


async def publish_report(ctx: RunContext, report: Report) -> None:
    """The run's markdown report as a Prefect artifact (and in the incident timeline)."""
    lines = [
        f"# {report.runbook} on {report.target}: {report.outcome}",
        "",
        f"- incident: {('#' + str(report.incident_id)) if report.incident_id else 'none'}",
        f"- started by: {ctx.actor}",
        f"- reason: {report.reason}",
    ]
    if report.diagnosis:
        lines += ["", "## Diagnosis", "", report.diagnosis.summary]
        if report.diagnosis.details:
            lines += ["", report.diagnosis.details]
    if report.plan:
        lines += ["", "## Plan", "", "| step | action | rollback |", "|---|---|---|"]
        lines += [f"| {p['step']} | {p['summary']} | {p['rollback'] or '-'} |"
                  for p in report.plan]
    if report.steps:
        lines += ["", "## Actions", "", "| step | seconds | output |", "|---|---|---|"]
        lines += [f"| {s['step']} | {s['seconds']} | {_cell(s['output'])} |"
                  for s in report.steps]
    for title, results in (("Evidence before", report.before), ("Evidence after",
                                                                 report.after)):
        if results:
            lines += ["", f"## {title}", "", "| probe | ok | latency ms | detail |",
                      "|---|---|---|---|"]
            lines += [f"| {r['probe_id']} | {r['ok']} | {_ms(r['latency_ms'])} | "
                      f"{_cell(r['error_message'] or ', '.join(r['faults']) or 'healthy')} |"
                      for r in results]
    if report.times:
        lines += ["", "## Times", ""] + [f"- {k}: {v}" for k, v in report.times.items()]
    markdown = "\n".join(lines) + "\n"
    key = f"runbook-{report.target}".lower()
    await acreate_markdown_artifact(key=key, markdown=markdown,
                                    description=f"{report.runbook}: {report.outcome}")
    ctx.timeline("report", f"{report.runbook}: {report.outcome}", report.as_dict())


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")[:200]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
