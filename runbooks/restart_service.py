"""restart_service: restart a named service on a server over SSH, then prove it answers.

The target is a server (name the service) or an endpoint whose connection names the
service behind it (``service: game-engine``), restarted on the server it depends on.
"""

from __future__ import annotations

import shlex
from typing import Any

from prefect import flow

from blocks import SshHost
from floorwatch.catalogue import RunbookName, TargetKind
from floorwatch.errors import CommandFailed, FloorwatchError
from floorwatch.inventory import Inventory, Target
from runbooks.diagnose import diagnose
from runbooks.frame import Diagnosis, Plan, RunbookParams, RunContext, Step, run_runbook
from tasks.ssh import RemoteShell

COMMAND_TIMEOUT_S = 30.0


def service_location(
    inventory: Inventory, target: Target, service: str | None
) -> tuple[Target, str]:
    """(server, service name) that a restart of ``target`` acts on."""
    if target.kind == TargetKind.SERVER:
        name = service or (target.connection.services[0] if target.connection.services else None)
        if not name:
            raise FloorwatchError(f"{target.name} is a server: name the service to restart")
        if target.connection.services and name not in target.connection.services:
            raise FloorwatchError(
                f"{target.name} runs no service {name!r} "
                f"(it runs: {', '.join(target.connection.services)})"
            )
        return target, name
    if target.connection.service is None:
        raise FloorwatchError(f"{target.name} names no service to restart (connection.service)")
    servers = [p for p in inventory.parents(target.name) if p.kind == TargetKind.SERVER]
    if not servers:
        raise FloorwatchError(f"{target.name} depends on no server to restart its service on")
    return servers[0], service or target.connection.service


def restart_step(host: SshHost, server: Target, service: str) -> Step:
    """One SSH command through the host's service manager, like `systemctl restart`."""
    command = f"{host.service_command} restart {shlex.quote(service)}"
    status = f"{host.service_command} status {shlex.quote(service)}"

    def act() -> str:
        # The inventory says where the server is; the block says how to log in.
        with RemoteShell(host, name=server.name, address=server.connection.host,
                         port=server.connection.port) as shell:
            result = shell.run(command, COMMAND_TIMEOUT_S)
            if result.exit_code != 0:
                raise CommandFailed(server.name, f"`{command}` exited {result.exit_code}: "
                                    f"{(result.stderr or result.stdout).strip()[:300]}")
            after = shell.run(status, COMMAND_TIMEOUT_S)
        return f"$ {command}\n{result.stdout}$ {status}\n{after.stdout}"

    return Step(name="restart-service",
                summary=f"restart {service} on {server.name} over SSH",
                parameters={"server": server.name, "service": service, "command": command},
                act=act)


def planner(service: str | None):  # type: ignore[no-untyped-def]
    async def plan(ctx: RunContext, diagnosis: Diagnosis) -> Plan:
        server, name = service_location(ctx.inventory, ctx.target, service)
        host = ctx.credentials.get(server.connection.block or "")
        if host is None:
            host = await SshHost.aload(server.connection.block)
        return Plan(steps=[restart_step(host, server, name)])

    return plan


@flow(name="restart-service")
async def restart_service(
    target: str,
    service: str | None = None,
    incident_id: int | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    code: str = "",
    reason: str = "",
    lock_timeout_s: float = 30.0,
    approval_timeout_s: int = 900,
) -> dict[str, Any]:
    """Restart a service on a server over SSH and verify the target answers again."""
    params = RunbookParams(target=target, incident_id=incident_id, dry_run=dry_run, code=code,
                           requested_by=requested_by, reason=reason,
                           lock_timeout_s=lock_timeout_s, approval_timeout_s=approval_timeout_s)
    return await run_runbook(RunbookName.RESTART_SERVICE, params, planner(service), diagnose)
