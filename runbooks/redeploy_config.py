"""redeploy_config: deliver a terminal's configuration over its console, then prove it runs it.

The configuration is the file the inventory names (``connection.config_file``). Before acting,
the plan checks that the file hashes to what the terminal probe expects
(``probe.expect.config_hash``): delivering anything else could never pass verification, so
such a run is escalated instead. The step asks CONFIG-HASH (kept in the report as the
"before"), sends ``CONFIG-PUSH <base64>`` and requires the hash the terminal then reports to
equal the hash of the file; the frame's re-probe proves it afterwards.

No rollback: the console reports only the hash of the running configuration, never its
content, so the previous configuration cannot be read back to restore it; and the previous
one is the stale configuration this runbook replaces. A failed push is escalated instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from floorwatch.catalogue import RunbookName, TargetKind
from floorwatch.errors import CommandFailed, FloorwatchError, ProbeTimeout, ProtocolError
from floorwatch.inventory import Target
from floorwatch.protocols import console
from runbooks.diagnose import diagnose
from runbooks.frame import Diagnosis, Plan, RunbookParams, RunContext, Step, run_runbook
from runbooks.restart_terminal import COMMAND_TIMEOUT_S, console_command, expected_config_hash
from tasks.serial import line_for

CONFIG_HASH_REQUEST = console.encode_request(console.CONFIG_HASH)
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
WIRE_MARGIN = 2.0  # the line may run at half its nominal speed before we give up


def push_timeout(request_bytes: int, baud: int) -> float:
    """Seconds a CONFIG-PUSH of ``request_bytes`` may take at ``baud`` (9600 baud: ~1 KB/s)."""
    return COMMAND_TIMEOUT_S + WIRE_MARGIN * request_bytes * BITS_PER_BYTE / baud


def config_problem(path: Path, config: str, expected_hash: str | None) -> str | None:
    """Why delivering ``config`` cannot fix the terminal; None when it can."""
    if not config.strip():
        return f"configuration file {path} is empty"
    if expected_hash is not None and console.config_hash(config) != expected_hash:
        return (f"configuration file {path} hashes to {console.config_hash(config)}, but the "
                f"terminal probe expects {expected_hash}: the inventory and the file disagree")
    return None


def push_step(target: Target, path: Path, config: str, request: bytes) -> Step:
    """Read the running hash, push ``config`` with CONFIG-PUSH, check the reported hash."""
    line = line_for(target)
    wanted = console.config_hash(config)
    timeout = push_timeout(len(request), line.baud)

    def act() -> str:
        try:
            before = console_command(line, CONFIG_HASH_REQUEST, COMMAND_TIMEOUT_S)
            fields = console_command(line, request, timeout)
        except ProbeTimeout as exc:
            raise ProbeTimeout(target.name, f"console unreachable, configuration not "
                               f"delivered: {exc}") from exc
        reported = fields.get("config_hash")
        if reported is None:
            raise ProtocolError(target.name, f"CONFIG-PUSH reply lacks config_hash: {fields}")
        if reported != wanted:
            raise CommandFailed(target.name, f"after CONFIG-PUSH the terminal reports "
                                f"configuration hash {reported}, expected {wanted}")
        return (f"configuration hash before: {before.get('config_hash', 'not reported')}; "
                f"CONFIG-PUSH of {path} ({len(config.encode())} bytes) -> "
                f"config_hash={reported} (matches the file)")

    return Step(
        name="push-config",
        summary=f"deliver {path.name} to {target.name} with CONFIG-PUSH over its console",
        parameters={"terminal": target.name, "device": line.device,
                    "config_file": str(path), "config_bytes": len(config.encode()),
                    "config_hash": wanted, "expected_config_hash": expected_config_hash(target),
                    "command": f"{console.CONFIG_PUSH} <base64 of {path.name}>",
                    "timeout_s": round(timeout, 1)},
        act=act,
    )


def redeploy_plan(target: Target) -> Plan:
    """Push the inventory's configuration file, or escalate when that cannot help."""
    if target.kind != TargetKind.TERMINAL:
        raise FloorwatchError(f"{target.name} is a {target.kind}: only terminals take a "
                              "configuration")
    path = target.connection.config_file
    if path is None:
        return Plan(escalate=f"{target.name} names no configuration to deliver "
                    "(connection.config_file in the inventory)")
    try:
        config = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Plan(escalate=f"cannot read configuration file {path}: {exc}")
    problem = config_problem(path, config, expected_config_hash(target))
    if problem is not None:
        return Plan(escalate=problem)
    try:
        request = console.encode_config_push(config)
    except ProtocolError as exc:  # not ASCII-safe or longer than a console line
        return Plan(escalate=f"configuration file {path} cannot be sent over the console: "
                    f"{exc}")
    return Plan(steps=[push_step(target, path, config, request)])


async def plan(ctx: RunContext, diagnosis: Diagnosis) -> Plan:
    """The planner: the same plan whatever the diagnosis (a person may redeploy anyway)."""
    return redeploy_plan(ctx.target)


@flow(name="redeploy-config")
async def redeploy_config(
    target: str,
    incident_id: int | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    code: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """Deliver a terminal's configuration over its console and verify it runs it.

    Args:
        target: Terminal from the inventory, e.g. hall-1-t01.
        incident_id: The incident this run answers, if any.
        dry_run: Produce the full plan and act on nothing.
        requested_by: Who starts this run (automation for triggered runs).
        reason: Why, in a few words.
    """
    params = RunbookParams(target=target, incident_id=incident_id, dry_run=dry_run, code=code,
                           requested_by=requested_by, reason=reason)
    return await run_runbook(RunbookName.REDEPLOY_CONFIG, params, plan, diagnose)
