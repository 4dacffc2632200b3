"""fail_over_dns: point a DNS record at its backup set (or back at its primary set).

The target is a ``dns_record``. One step replaces the record's whole answer set with one
RFC 2136 update signed with the zone's TSIG key, then asks the authoritative server and
fails unless it now answers exactly the new set; its rollback restores the answer read at
plan time. The frame then re-runs the record's dns probe, which passes on the expected or
the backup set. ``to="primary"`` fails back, for a person starting it from the UI.

``switch_record_step`` is shared with fail_over_server, which moves a server's traffic
record the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from prefect import flow

from blocks import DnsZone
from floorwatch.catalogue import RunbookName, TargetKind
from floorwatch.errors import AdapterError, CommandFailed, FloorwatchError
from floorwatch.inventory import Target
from runbooks.diagnose import diagnose
from runbooks.frame import (
    DEFAULT_VERIFY_DEADLINE_S,
    Diagnosis,
    Plan,
    Planner,
    RunbookParams,
    RunContext,
    Step,
    run_runbook,
)
from tasks.dns import DEFAULT_TTL, DnsUpdater, same_answer

RecordSet = Literal["backup", "primary"]


def record_sets(target: Target) -> dict[RecordSet, list[str]]:
    """The record's primary (``expected``) and ``backup`` answer sets; FloorwatchError when
    the target is not a DNS record Floorwatch can update."""
    conn = target.connection
    if target.kind != TargetKind.DNS_RECORD:
        raise FloorwatchError(f"{target.name} is a {target.kind}, not a dns_record")
    if not conn.record or not conn.block:
        raise FloorwatchError(
            f"{target.name} names no record or no DNS zone block (connection.record, .block)"
        )
    return {"primary": list(conn.expected), "backup": list(conn.backup)}


async def zone_block(ctx: RunContext, target: Target) -> DnsZone:
    """The DNS zone block of ``target``: the one the frame loaded, else loaded now."""
    name = target.connection.block or ""
    block = ctx.credentials.get(name)
    if isinstance(block, DnsZone):
        return block
    return await DnsZone.aload(name)


def switch_record_step(
    updater: DnsUpdater, target: Target, values: list[str], previous: list[str], *,
    step_name: str, label: str, ttl: int = DEFAULT_TTL,
) -> Step:
    """Replace ``target``'s record by ``values`` and prove the authoritative server answers
    them; the rollback puts ``previous`` (the answer read at plan time) back."""
    record = target.connection.record or ""
    rdtype = target.connection.rdtype
    was = ", ".join(previous) or "(no records)"
    new = ", ".join(values)

    def check(wanted: list[str]) -> list[str]:
        answer = updater.query(record, rdtype)
        if not same_answer(rdtype, answer, wanted):
            raise CommandFailed(
                target.name, f"after the update {updater.server} answers {record} {rdtype} "
                f"{', '.join(answer) or '(no records)'}, not {', '.join(wanted)}",
            )
        return answer

    def act() -> str:
        updater.replace(record, rdtype, values, ttl)
        try:
            answer = check(values)
        except AdapterError as exc:
            # The update went through but is not proven: Prefect rolls back only steps that
            # completed, so this one undoes itself before it fails.
            if previous:
                try:
                    updater.replace(record, rdtype, previous, ttl)
                except AdapterError as undo:
                    raise CommandFailed(
                        target.name, f"{exc}; restoring {was} failed too: {undo}"
                    ) from exc
            raise
        return (f"{record} {rdtype} at {updater.server}: {was} -> {', '.join(answer)} "
                f"(authoritative answer checked)")

    def rollback() -> str:
        updater.replace(record, rdtype, previous, ttl)
        answer = check(previous)
        return f"{record} {rdtype} at {updater.server} restored to {', '.join(answer)}"

    return Step(
        name=step_name,
        summary=f"replace {record} {rdtype} {was} -> {new} ({label}) at {updater.server}",
        parameters={"target": target.name, "zone": updater.block.zone,
                    "server": updater.server, "record": record, "rdtype": rdtype,
                    "from": list(previous), "to": list(values), "ttl": ttl},
        act=act,
        # A record that had no answer is not emptied again: that would only take the
        # service off the air; the new set stays and people decide.
        rollback=rollback if previous else None,
        rollback_summary=(f"restore {record} {rdtype} to {was}" if previous
                          else f"none: {record} had no {rdtype} records before"),
    )


def planner(to: RecordSet) -> Planner:
    """Plan one switch of the target record to its ``to`` set."""

    async def plan(ctx: RunContext, diagnosis: Diagnosis) -> Plan:
        target = ctx.target
        sets = record_sets(target)
        wanted = sets[to]
        if not wanted:
            raise FloorwatchError(f"{target.name} has no {to} set to fail over to "
                                  f"(connection.{'backup' if to == 'backup' else 'expected'})")
        updater = DnsUpdater(await zone_block(ctx, target), name=target.name)
        record, rdtype = target.connection.record or "", target.connection.rdtype
        try:
            current = await asyncio.to_thread(updater.query, record, rdtype)
        except AdapterError as exc:
            return Plan(escalate=f"cannot read the current answer of {record}: {exc}")
        if same_answer(rdtype, current, wanted):
            return Plan(steps=[])  # already there: nothing to do
        return Plan(steps=[switch_record_step(
            updater, target, wanted, current, step_name="replace-record", label=f"{to} set",
        )])

    return plan


@flow(name="fail-over-dns")
async def fail_over_dns(
    target: str,
    to: RecordSet = "backup",
    incident_id: int | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    code: str = "",
    reason: str = "",
    verify_deadline_s: float = DEFAULT_VERIFY_DEADLINE_S,
) -> dict[str, Any]:
    """Point a DNS record at its backup set (or back at its primary set) and verify it."""
    params = RunbookParams(target=target, incident_id=incident_id, dry_run=dry_run, code=code,
                           requested_by=requested_by, reason=reason)
    return await run_runbook(RunbookName.FAIL_OVER_DNS, params, planner(to), diagnose,
                             verify_deadline_s=verify_deadline_s)
