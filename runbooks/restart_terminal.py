"""restart_terminal: restart a hall device over its serial line, then prove it is back.

What "restart" means depends on the device:

- terminal: ``REBOOT`` on the line console, then wait (up to ``boot_timeout_s``) until STATUS
  answers again with state playing or idle, a heartbeat that advances and the configuration
  hash the probe expects. A terminal that cannot hear the REBOOT (offline, line cut) fails
  the step, and the incident goes to the hall's people.
- bill acceptor: ccTalk ``reset device`` (header 1), then a re-check (simple poll and the
  buffered bill events) whose findings go into the report. A reset clears a firmware alarm
  but not a bill stuck in the transport: the re-probe then still fails and the incident is
  escalated, which is the right outcome (only a person can open the validator). After a
  reset the validator's host (the terminal) re-enables bill acceptance itself.
- printer: nothing is sent. ESC/POS has no real-time reset: ``ESC @`` (initialize) only
  clears the print buffer and the print modes (and would discard a cash-out ticket being
  printed), ``DLE ENQ`` recovers only from recoverable errors such as an autocutter error and
  may reprint or drop a ticket. Paper end, an open cover or an offline printer need a
  person, so a failing printer is escalated with what its status bytes say.

Neither action can be undone, so the steps carry no rollback; verification is the frame's
re-probe of the target.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from floorwatch.catalogue import RunbookName, TargetKind
from floorwatch.errors import CommandFailed, FloorwatchError, ProbeTimeout, ProtocolError
from floorwatch.inventory import Target, TerminalProbe
from floorwatch.protocols import cctalk, console
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
from tasks.serial import CctalkDevice, SerialLine, line_for

COMMAND_TIMEOUT_S = 2.0  # a console or validator answers a command in milliseconds
STATUS_TIMEOUT_S = 1.0  # one STATUS while waiting for a boot; silence is retried
# The heartbeat counts whole seconds: samples this far apart must differ on a live terminal.
SAMPLE_GAP_S = 1.1
BOOT_POLL_S = 0.5  # STATUS interval while the console is silent or booting
DEFAULT_BOOT_TIMEOUT_S = 120.0  # a real terminal boots in one to two minutes
RESET_SETTLE_S = 5.0  # a validator answers polls again within a second or two of a reset
POLL_TIMEOUT_S = 0.5

REBOOT_REQUEST = console.encode_request(console.REBOOT)
STATUS_REQUEST = console.encode_request(console.STATUS)


# -- blocking serial exchanges (steps are sync and run in the flow's thread) ------------------
def console_command(line: SerialLine, request: bytes, timeout: float) -> dict[str, str]:
    """Send one console request line; the reply's fields (ERR -> CommandFailed)."""
    buf = bytearray()

    def read_line(chunk: bytes) -> bytes | None:
        buf.extend(chunk)
        end = buf.find(b"\n")
        if end >= 0:
            return bytes(buf[: end + 1])
        if len(buf) > console.MAX_LINE:
            raise ProtocolError(line.target, f"console reply longer than {console.MAX_LINE} bytes")
        return None

    reply = line.exchange_blocking(request, read_line, timeout)
    return console.parse_reply(reply, line.target)


def terminal_status(line: SerialLine, timeout: float) -> console.TerminalStatus:
    """STATUS, typed."""
    return console.parse_status(console_command(line, STATUS_REQUEST, timeout), line.target)


def cctalk_command(device: CctalkDevice, header: int, timeout: float) -> cctalk.Frame:
    """Send one ccTalk request without data; the device's ACK reply (else ProtocolError)."""
    target = device.line.target
    request = cctalk.encode_frame(device.address, device.host_address, header)
    frames = cctalk.FrameReader(target)
    frames.expect_echo(request)  # a real one-wire bus echoes the request back

    def read_frame(chunk: bytes) -> cctalk.Frame | None:
        found = frames.feed(chunk)
        return found[0] if found else None

    reply = device.line.exchange_blocking(request, read_frame, timeout)
    if reply.src != device.address or reply.dest != device.host_address:
        raise ProtocolError(target, f"ccTalk reply from address {reply.src} to {reply.dest}, "
                            f"expected from {device.address} to {device.host_address}")
    if not reply.is_ack:
        raise ProtocolError(target, f"ccTalk device answered header {reply.header} "
                            f"(5 NAK, 6 BUSY) to header {header}, expected ACK")
    return reply


# -- terminals --------------------------------------------------------------------------------
def expected_config_hash(target: Target) -> str | None:
    """The configuration hash the target's terminal probe expects, if it names one."""
    for probe in target.probes:
        if isinstance(probe, TerminalProbe) and probe.expect.config_hash is not None:
            return probe.expect.config_hash
    return None


def boot_progress(
    previous: console.TerminalStatus | None,
    current: console.TerminalStatus,
    expected_hash: str | None,
) -> str | None:
    """What a rebooted terminal still lacks to count as back online; None once it is.

    ``previous`` is an earlier STATUS at least ``SAMPLE_GAP_S`` before ``current``.
    """
    if current.state == "booting":
        return "the end of booting (state=booting)"
    # Uptime going back means it restarted between the samples: start comparing afresh.
    if previous is None or previous.state == "booting" or current.uptime_s < previous.uptime_s:
        return "a second STATUS to see the heartbeat advance"
    if current.heartbeat <= previous.heartbeat:
        return f"the heartbeat to advance (stuck at {current.heartbeat})"
    if expected_hash is not None and current.config_hash != expected_hash:
        return (f"configuration hash {expected_hash} (it reports {current.config_hash}; "
                "redeploy-config delivers the configuration)")
    return None


def wait_until_back(
    line: SerialLine, expected_hash: str | None, timeout_s: float
) -> tuple[console.TerminalStatus, float]:
    """Ask STATUS every ``SAMPLE_GAP_S`` until ``boot_progress`` says the terminal is back;
    (its status, seconds waited). ProbeTimeout naming what was missing at the deadline."""
    started = time.monotonic()
    deadline = started + timeout_s
    previous: console.TerminalStatus | None = None
    missing = "an answer to STATUS"
    while (left := deadline - time.monotonic()) > 0:
        try:
            current = terminal_status(line, min(STATUS_TIMEOUT_S, left))
        except (ProbeTimeout, ProtocolError, CommandFailed) as exc:
            # Silent or half-up while it boots: keep asking until the deadline.
            previous, missing = None, f"an answer to STATUS (last: {exc})"
        else:
            progress = boot_progress(previous, current, expected_hash)
            if progress is None:
                return current, time.monotonic() - started
            previous = None if current.state == "booting" else current
            missing = progress
        # Once it is up, the next sample must be far enough apart to see the heartbeat move.
        pause = BOOT_POLL_S if previous is None else SAMPLE_GAP_S
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    raise ProbeTimeout(line.target,
                       f"not back within {timeout_s:g} s of REBOOT: still waiting for {missing}")


def reboot_step(target: Target, boot_timeout_s: float) -> Step:
    """REBOOT over the console, then wait until the terminal is back online."""
    line = line_for(target)
    expected = expected_config_hash(target)

    def act() -> str:
        try:
            fields = console_command(line, REBOOT_REQUEST, COMMAND_TIMEOUT_S)
        except ProbeTimeout as exc:
            raise ProbeTimeout(target.name, f"REBOOT not answered within "
                               f"{COMMAND_TIMEOUT_S:g} s: the console is unreachable (terminal "
                               "off or its line cut); a person must look at it") from exc
        if fields.get("reboot") != "accepted":
            raise CommandFailed(target.name, f"REBOOT answered {fields}, not reboot=accepted")
        status, waited = wait_until_back(line, expected, boot_timeout_s)
        return (f"REBOOT accepted; back online after {waited:.1f} s: state={status.state} "
                f"heartbeat={status.heartbeat} uptime_s={status.uptime_s} "
                f"config_hash={status.config_hash}")

    return Step(
        name="reboot-terminal",
        summary=f"reboot {target.name} over its serial console and wait until it is back",
        parameters={"terminal": target.name, "device": line.device, "command": console.REBOOT,
                    "boot_timeout_s": boot_timeout_s, "expected_config_hash": expected},
        act=act,
    )


# -- bill acceptors -----------------------------------------------------------------------------
def describe_events(events: cctalk.BillEventBuffer) -> str:
    """The buffered bill events after a reset, in words (newest first)."""
    recent = events.new_events()
    if not recent:
        return "no event since the reset"
    words = "; ".join(f"{e.description} ({e.kind})" for e in recent)
    latest = events.latest
    if latest is not None and (latest.is_jam or latest.kind == "fatal"):
        words += f" - still reports {latest.description}: a reset does not clear it"
    return f"{len(recent)} event(s) since the reset: {words}"


def reset_step(target: Target) -> Step:
    """ccTalk reset device, then simple poll and read buffered bill events."""
    device = CctalkDevice.for_target(target)

    def act() -> str:
        try:
            cctalk_command(device, cctalk.HEADER_RESET_DEVICE, COMMAND_TIMEOUT_S)
        except ProbeTimeout as exc:
            raise ProbeTimeout(target.name, f"reset device not answered within "
                               f"{COMMAND_TIMEOUT_S:g} s: the validator is unreachable") from exc
        settle = time.monotonic() + RESET_SETTLE_S
        while True:  # a validator restarting after the reset may stay silent briefly
            try:
                cctalk_command(device, cctalk.HEADER_SIMPLE_POLL, POLL_TIMEOUT_S)
                break
            except (ProbeTimeout, ProtocolError) as exc:
                if time.monotonic() >= settle:
                    raise ProbeTimeout(target.name, f"reset acknowledged, but no answer to a "
                                       f"simple poll within {RESET_SETTLE_S:g} s: {exc}") from exc
        reply = cctalk_command(device, cctalk.HEADER_READ_BUFFERED_BILL_EVENTS, COMMAND_TIMEOUT_S)
        events = cctalk.decode_bill_events(reply.data, target.name)
        return (f"reset acknowledged; simple poll ACK; event counter {events.counter}; "
                f"{describe_events(events)}")

    return Step(
        name="reset-bill-acceptor",
        summary=f"reset bill acceptor {target.name} over ccTalk and re-read its events",
        parameters={"bill_acceptor": target.name, "device": device.line.device,
                    "address": device.address,
                    "commands": [f"reset device (header {cctalk.HEADER_RESET_DEVICE})",
                                 f"simple poll (header {cctalk.HEADER_SIMPLE_POLL})",
                                 "read buffered bill events "
                                 f"(header {cctalk.HEADER_READ_BUFFERED_BILL_EVENTS})"]},
        act=act,
    )


# -- printers ---------------------------------------------------------------------------------
def printer_escalation(target: str, probes_now: list[dict[str, Any]] | str) -> str | None:
    """Why a person must attend to the printer (from the diagnosis's fresh probes, or the
    reason they could not run); None if it passes."""
    if isinstance(probes_now, str):
        return (f"{target}: its state could not be read ({probes_now}): a person must attend "
                "to the printer")
    failing = [r for r in probes_now if not r.get("ok")]
    if not failing:
        return None
    details = []
    for result in failing:
        problems = (result.get("values") or {}).get("problems")
        details.append(", ".join(problems) if problems else
                       (result.get("error_message") or "failing"))
    return (f"{target}: {'; '.join(details)}. ESC/POS has no command that fixes this "
            "(ESC @ only clears the buffer and modes): a person must attend to the printer")


# -- the runbook -------------------------------------------------------------------------------
def restart_plan(target: Target, diagnosis: Diagnosis, boot_timeout_s: float) -> Plan:
    """The plan for ``target``, by kind; FloorwatchError for a target that is no hall device."""
    if target.kind == TargetKind.TERMINAL:
        if boot_timeout_s <= 0:
            raise FloorwatchError(f"boot_timeout_s must be positive, got {boot_timeout_s:g}")
        return Plan(steps=[reboot_step(target, boot_timeout_s)])
    if target.kind == TargetKind.BILL_ACCEPTOR:
        return Plan(steps=[reset_step(target)])
    if target.kind == TargetKind.PRINTER:
        reason = printer_escalation(target.name, diagnosis.evidence.get("probes_now", []))
        return Plan(escalate=reason) if reason else Plan()
    raise FloorwatchError(f"{target.name} is a {target.kind}: restart-terminal restarts "
                          "terminals and bill acceptors (and escalates printers)")


def planner(boot_timeout_s: float) -> Planner:
    """The planner for one run, with its boot deadline."""
    async def plan(ctx: RunContext, diagnosis: Diagnosis) -> Plan:
        return restart_plan(ctx.target, diagnosis, boot_timeout_s)

    return plan


@flow(name="restart-terminal")
async def restart_terminal(
    target: str,
    boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S,
    verify_deadline_s: float = DEFAULT_VERIFY_DEADLINE_S,
    incident_id: int | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    code: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """Reboot a terminal or reset a bill acceptor over its serial line and verify it is back
    (a failing printer goes to a person).

    Args:
        target: Hall target from the inventory, e.g. hall-1-t01 or hall-1-t01-bill.
        boot_timeout_s: How long a rebooted terminal may take to be back online.
        verify_deadline_s: How long the probes may take to pass after the action.
        incident_id: The incident this run answers, if any.
        dry_run: Produce the full plan and act on nothing.
        requested_by: Who starts this run (automation for triggered runs).
        reason: Why, in a few words.
    """
    params = RunbookParams(target=target, incident_id=incident_id, dry_run=dry_run, code=code,
                           requested_by=requested_by, reason=reason)
    return await run_runbook(RunbookName.RESTART_TERMINAL, params, planner(boot_timeout_s),
                             diagnose, verify_deadline_s=verify_deadline_s)
