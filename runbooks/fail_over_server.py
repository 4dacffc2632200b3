"""fail_over_server: move a server's services and traffic to its standby, then fence it.

The target is a server whose connection names a ``standby`` server and a
``traffic_record`` (a dns_record target whose ``backup`` set holds the standby's
addresses). Three steps, undone newest first when a step or the verification fails:

1. start the server's services on the standby over SSH and check they are active;
   undo: stop the ones that were not running before (a warm standby stays warm);
2. point the traffic record at its backup set (signed RFC 2136 update, answer checked);
   undo: restore the answer read at plan time;
3. fence the primary: stop its services over SSH and hold it (``Store.place_hold``: no
   incident opens for it or what runs on it, and no runbook acts on it, until a person runs
   ``floorwatch hold release``); undo: release the hold, start the services it was running.

A step that fails halfway undoes its own part before it fails (Prefect rolls back only
the steps that completed).

Fencing a primary we cannot reach (connection refused, unreachable, login or host key
refused, no answer in time) is tolerated: the DNS move already took its traffic away, and
rolling back would send the traffic back to a server we cannot even log in to. The step
output says "fencing skipped" and the incident timeline gets a ``fence_skipped`` event, so
the report shows that a person must fence it by hand. A primary we *can* reach whose
services do not stop is a failure like any other (everything rolled back, the incident
escalated): two servers serving at once is worse than the outage.

Recovery is proven on the traffic record and the standby's service endpoints, through
``Plan.verify_targets``: the fenced primary's own probes fail on purpose.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import flow

from blocks import SshHost
from floorwatch.catalogue import RunbookName, TargetKind
from floorwatch.errors import (
    AdapterError,
    CommandFailed,
    ConnectError,
    FloorwatchError,
    ProbeTimeout,
)
from floorwatch.inventory import Inventory, Target
from runbooks.diagnose import diagnose
from runbooks.fail_over_dns import record_sets, switch_record_step, zone_block
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
from tasks.dns import DnsUpdater
from tasks.ssh import RemoteShell

COMMAND_TIMEOUT_S = 30.0
# Exit statuses of `<service_command> status NAME`, as systemctl's.
ACTIVE, NOT_ACTIVE = 0, 3


# -- the plan, from the inventory (pure) ---------------------------------------------------


def failover_parts(inventory: Inventory, primary: Target) -> tuple[Target, Target, list[str]]:
    """(standby server, traffic record, services to move) of ``primary``; FloorwatchError
    naming the missing piece when the inventory does not describe a failover."""
    conn = primary.connection
    if primary.kind != TargetKind.SERVER:
        raise FloorwatchError(f"{primary.name} is a {primary.kind}, not a server")
    if not conn.standby or not conn.traffic_record:
        raise FloorwatchError(
            f"{primary.name} names no standby or no traffic record "
            "(connection.standby, connection.traffic_record)"
        )
    if not conn.services:
        raise FloorwatchError(f"{primary.name} names no services to move (connection.services)")
    standby = inventory.target(conn.standby)
    traffic = inventory.target(conn.traffic_record)
    if standby.kind != TargetKind.SERVER or not standby.connection.block:
        raise FloorwatchError(
            f"standby {standby.name} of {primary.name} is not a server with an SSH block"
        )
    if not record_sets(traffic)["backup"]:
        raise FloorwatchError(
            f"traffic record {traffic.name} of {primary.name} has no backup set "
            "(the standby's addresses, connection.backup)"
        )
    missing = [s for s in conn.services
               if standby.connection.services and s not in standby.connection.services]
    if missing:
        raise FloorwatchError(
            f"standby {standby.name} does not run {', '.join(missing)} "
            f"(it runs: {', '.join(standby.connection.services)})"
        )
    return standby, traffic, list(conn.services)


def proof_targets(inventory: Inventory, standby: Target, traffic: Target,
                  services: Sequence[str]) -> list[str]:
    """Targets whose probes prove the failover: the traffic record and the endpoints of the
    moved services on the standby."""
    endpoints = [t.name for t in inventory.children(standby.name)
                 if t.connection.service in services]
    return [traffic.name, *endpoints]


# -- steps over SSH ------------------------------------------------------------------------


def service_command(host: SshHost, verb: str, services: Sequence[str]) -> str:
    """``<service_command> VERB NAME...`` with every name quoted."""
    return f"{host.service_command} {verb} {' '.join(shlex.quote(s) for s in services)}"


def _shell(host: SshHost, server: Target) -> RemoteShell:
    # The inventory says where the server is; the block how to log in and which key to trust.
    return RemoteShell(host, name=server.name, address=server.connection.host,
                       port=server.connection.port)


def _run(shell: RemoteShell, command: str) -> str:
    result = shell.run(command, COMMAND_TIMEOUT_S)
    if result.exit_code != 0:
        raise CommandFailed(shell.name, f"`{command}` exited {result.exit_code}: "
                            f"{(result.stderr or result.stdout).strip()[:300]}")
    return f"$ {command}\n{result.stdout}{result.stderr}"


def service_states(shell: RemoteShell, host: SshHost, services: Sequence[str]) -> dict[str, bool]:
    """Whether each service is active, by the exit status of its own ``status`` command
    (one per service: a combined one cannot say which is down), asked in parallel."""

    def ask(name: str) -> bool:
        command = service_command(host, "status", [name])
        result = shell.run(command, COMMAND_TIMEOUT_S)
        if result.exit_code not in (ACTIVE, NOT_ACTIVE):
            raise CommandFailed(shell.name, f"`{command}` exited {result.exit_code}: "
                                f"{(result.stderr or result.stdout).strip()[:300]}")
        return result.exit_code == ACTIVE

    # RemoteShell runs each command on its own channel, so one connection serves them all.
    with ThreadPoolExecutor(max_workers=max(len(services), 1)) as pool:
        return dict(zip(services, pool.map(ask, services), strict=True))


def _undo(shell: RemoteShell, command: str) -> str:
    """Best-effort undo inside a failing step: a note for its error, never a second error."""
    try:
        result = shell.run(command, COMMAND_TIMEOUT_S)
    except AdapterError as exc:
        return f"; undoing with `{command}` failed too: {exc}"
    if result.exit_code != 0:
        return f"; undoing with `{command}` exited {result.exit_code}"
    return f"; undone with `{command}`"


def _failed(exc: AdapterError, note: str) -> CommandFailed:
    """``exc`` with what its step did to undo itself."""
    return CommandFailed(exc.target, str(exc).removeprefix(f"{exc.target}: ") + note)


def start_standby_step(host: SshHost, standby: Target, services: list[str]) -> Step:
    """Start ``services`` on the standby and check they are active; the rollback stops only
    those that were not running before."""
    start = service_command(host, "start", services)
    started: list[str] = []

    def act() -> str:
        with _shell(host, standby) as shell:
            before = service_states(shell, host, services)
            started[:] = [s for s in services if not before[s]]
            try:
                output = _run(shell, start)
                down = [s for s, up in service_states(shell, host, services).items() if not up]
                if down:
                    raise CommandFailed(standby.name, f"{', '.join(down)} not active after "
                                        f"`{start}`")
            except AdapterError as exc:
                if not started:
                    raise
                raise _failed(exc, _undo(shell, service_command(host, "stop", started))) from exc
        return (f"{output}started {', '.join(started) or 'nothing (all were running)'}; "
                f"{', '.join(services)} active on {standby.name}")

    def rollback() -> str:
        if not started:
            return f"nothing to stop on {standby.name}: {', '.join(services)} ran before"
        with _shell(host, standby) as shell:
            return _run(shell, service_command(host, "stop", started))

    return Step(
        name="start-standby",
        summary=f"start {', '.join(services)} on {standby.name} over SSH and check they are "
                "active",
        parameters={"server": standby.name, "services": services, "command": start},
        act=act, rollback=rollback,
        rollback_summary=f"stop on {standby.name} the services this run started there",
    )


def fence_step(ctx: RunContext, host: SshHost, primary: Target, services: list[str],
               record: str) -> Step:
    """Stop ``services`` on the primary; an unreachable primary is recorded, not a failure.
    The rollback starts again those it was running."""
    stop = service_command(host, "stop", services)
    stopped: list[str] = []
    held: list[int] = []  # the hold this run placed, if any

    def hold() -> str:
        """Hold the primary: no incident opens for it or what runs on it, and no runbook
        (restart_service included) acts on it until a person releases it."""
        incident = f" for incident #{ctx.incident.id}" if ctx.incident else ""
        row, placed = ctx.store.place_hold(
            primary.name, f"fenced by fail_over_server{incident}; traffic moved with {record}",
            set_by=ctx.actor, incident_id=ctx.incident.id if ctx.incident else None,
        )
        if placed:
            held.append(row.id)
        note = (f"; {primary.name} held: release it with `floorwatch hold release "
                f"{primary.name}` once it is repaired and traffic may return")
        ctx.timeline("held", note.lstrip("; "), {"server": primary.name})
        return note

    def act() -> str:
        shell = _shell(host, primary)
        try:
            shell.connect()
        except (ConnectError, ProbeTimeout) as exc:
            shell.close()
            note = (f"fencing skipped: {exc}; {primary.name} gets no traffic since {record} "
                    "moved to the standby; fence it by hand")
            ctx.timeline("fence_skipped", note, {"server": primary.name})
            return note + hold()
        with shell:
            before = service_states(shell, host, services)
            stopped[:] = [s for s in services if before[s]]
            try:
                output = _run(shell, stop)
                up = [s for s, active in service_states(shell, host, services).items() if active]
                if up:
                    raise CommandFailed(primary.name, f"{', '.join(up)} still active after "
                                        f"`{stop}`")
            except AdapterError as exc:
                if not stopped:
                    raise
                raise _failed(exc, _undo(shell, service_command(host, "start", stopped))) from exc
        return f"{output}fenced {primary.name}: {', '.join(services)} stopped" + hold()

    def rollback() -> str:
        released = ""
        if held:
            ctx.store.release_hold(primary.name, released_by=ctx.actor)
            held.clear()
            released = f"released the hold on {primary.name}; "
        if not stopped:
            return (f"{released}nothing to start on {primary.name}: none of its services "
                    "was stopped")
        with _shell(host, primary) as shell:
            return released + _run(shell, service_command(host, "start", stopped))

    return Step(
        name="fence-primary",
        summary=f"fence {primary.name}: stop {', '.join(services)} over SSH "
                "(skipped, and recorded, when it cannot be reached)",
        parameters={"server": primary.name, "services": services, "command": stop},
        act=act, rollback=rollback,
        rollback_summary=f"start on {primary.name} the services this run stopped there",
    )


# -- the runbook ---------------------------------------------------------------------------


async def ssh_block(ctx: RunContext, server: Target) -> SshHost:
    """The SSH block of ``server``: the one the frame loaded, else loaded now."""
    name = server.connection.block
    if not name:
        raise FloorwatchError(f"{server.name} names no SSH block (connection.block)")
    block = ctx.credentials.get(name)
    return block if isinstance(block, SshHost) else await SshHost.aload(name)


def planner() -> Planner:
    """Plan: start on the standby, move the traffic record, fence the primary."""

    async def plan(ctx: RunContext, diagnosis: Diagnosis) -> Plan:
        primary = ctx.target
        standby, traffic, services = failover_parts(ctx.inventory, primary)
        primary_host = await ssh_block(ctx, primary)
        standby_host = await ssh_block(ctx, standby)
        updater = DnsUpdater(await zone_block(ctx, traffic), name=traffic.name)
        record, rdtype = traffic.connection.record or "", traffic.connection.rdtype
        try:
            current = await asyncio.to_thread(updater.query, record, rdtype)
        except AdapterError as exc:
            return Plan(escalate=f"cannot read the current answer of {record}: {exc}")
        move = switch_record_step(updater, traffic, record_sets(traffic)["backup"], current,
                                  step_name="move-traffic", label=f"to {standby.name}")
        return Plan(
            steps=[start_standby_step(standby_host, standby, services), move,
                   fence_step(ctx, primary_host, primary, services, record)],
            verify_targets=proof_targets(ctx.inventory, standby, traffic, services),
        )

    return plan


@flow(name="fail-over-server")
async def fail_over_server(
    target: str,
    incident_id: int | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    code: str = "",
    reason: str = "",
    verify_deadline_s: float = DEFAULT_VERIFY_DEADLINE_S,
) -> dict[str, Any]:
    """Move a server's services and traffic to its standby, fence it, verify the standby."""
    params = RunbookParams(target=target, incident_id=incident_id, dry_run=dry_run, code=code,
                           requested_by=requested_by, reason=reason)
    return await run_runbook(RunbookName.FAIL_OVER_SERVER, params, planner(), diagnose,
                             verify_deadline_s=verify_deadline_s)
