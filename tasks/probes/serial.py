"""Probes of the gaming hall's serial devices: terminals, bill acceptors, receipt printers.

Each probe finishes within ``probe.timeout``: the deadline is set when it starts and every
exchange on the line gets only the time left. I/O failures are raised (``tasks.serial``
translates pyserial's and the codecs' errors) and ``run_probe`` maps them: a terminal that
does not answer, or answers garbage, is ``terminal_offline``; a cash device,
``cash_device_fault``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from floorwatch.catalogue import FaultKind, ProbeKind
from floorwatch.errors import ProbeTimeout
from floorwatch.inventory import BillAcceptorProbe, PrinterProbe, Probe, Target, TerminalProbe
from floorwatch.results import ProbeResult, failed, now_utc, passed, probe_id
from tasks.probes import ProbeContext, register
from tasks.serial import CctalkDevice, Console, EscposPrinter

# The heartbeat counts whole seconds: two samples more than a second apart must differ.
HEARTBEAT_GAP_S = 1.1
# Time a second STATUS needs at least; with less left, the hang check cannot be made.
MIN_REPLY_S = 0.3


class _Deadline:
    """The probe's time budget, started when the probe starts."""

    def __init__(self, timeout: float) -> None:
        self.started = time.monotonic()
        self.at = self.started + timeout

    def left(self) -> float:
        return self.at - time.monotonic()

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000


def _faults(probe: Probe, natural: list[FaultKind]) -> tuple[str, ...]:
    # The inventory may name the fault this probe reports for a wrong answer.
    chosen = [str(probe.fault) if probe.fault is not None else str(f) for f in natural]
    return tuple(dict.fromkeys(chosen))


def _result(
    target: Target,
    probe: Probe,
    ctx: ProbeContext,
    *,
    ts: datetime,
    latency_ms: float,
    values: dict[str, Any],
    natural: list[FaultKind],
    problems: list[str],
) -> ProbeResult:
    pid = probe_id(probe.kind)
    if not natural:
        return passed(
            target.name, ctx.zone, probe.kind, ts=ts, latency_ms=latency_ms, values=values,
            probe=pid,
        )
    return failed(
        target.name, ctx.zone, probe.kind, ts=ts, faults=_faults(probe, natural),
        message="; ".join(problems), latency_ms=latency_ms, values=values, probe=pid,
    )


@register(ProbeKind.TERMINAL)
async def probe_terminal(target: Target, probe: TerminalProbe, ctx: ProbeContext) -> ProbeResult:
    """STATUS twice, just over a second apart: a frozen heartbeat is a hung terminal; a
    configuration hash other than the expected one, a failed delivery."""
    ts = now_utc()
    deadline = _Deadline(probe.timeout)
    terminal = Console.for_target(target)
    first = await terminal.status(timeout=deadline.left())
    first_ms = deadline.elapsed_ms()
    if deadline.left() < HEARTBEAT_GAP_S + MIN_REPLY_S:
        raise ProbeTimeout(
            target.name,
            f"timeout {probe.timeout:g} s leaves no time for a second STATUS "
            f"{HEARTBEAT_GAP_S:g} s later (first took {first_ms:.0f} ms)",
        )
    await asyncio.sleep(HEARTBEAT_GAP_S)
    sent = time.monotonic()
    second = await terminal.status(timeout=deadline.left())
    latency_ms = max(first_ms, (time.monotonic() - sent) * 1000)

    values: dict[str, Any] = {
        **second.to_fields(),
        "state_previous": first.state,
        "heartbeat_previous": first.heartbeat,
        "heartbeat_advance": second.heartbeat - first.heartbeat,
    }
    natural: list[FaultKind] = []
    problems: list[str] = []
    booting = "booting" in (first.state, second.state)
    # A terminal that restarted between the samples (uptime went back) is not hung.
    restarted = second.uptime_s < first.uptime_s
    if not booting and not restarted and second.heartbeat <= first.heartbeat:
        natural.append(FaultKind.TERMINAL_HUNG)
        problems.append(
            f"heartbeat stuck at {second.heartbeat} over {HEARTBEAT_GAP_S:g} s "
            f"(state {second.state})"
        )
    expected = probe.expect.config_hash
    if expected is not None:
        values["expected_config_hash"] = expected
        if second.config_hash != expected:
            natural.append(FaultKind.DELIVERY_FAILURE)
            problems.append(
                f"configuration hash {second.config_hash} differs from expected {expected}"
            )
    return _result(
        target, probe, ctx, ts=ts, latency_ms=latency_ms, values=values,
        natural=natural, problems=problems,
    )


@register(ProbeKind.BILL_ACCEPTOR)
async def probe_bill_acceptor(
    target: Target, probe: BillAcceptorProbe, ctx: ProbeContext
) -> ProbeResult:
    """ccTalk simple poll, then read buffered bill events: the newest being a fatal code (a
    jam, a faulty stacker) is a cash device fault."""
    ts = now_utc()
    deadline = _Deadline(probe.timeout)
    validator = CctalkDevice.for_target(target)
    await validator.simple_poll(timeout=deadline.left())
    latency_ms = deadline.elapsed_ms()
    events = await validator.read_bill_events(timeout=deadline.left())
    latest = events.latest
    recent = events.new_events()
    values: dict[str, Any] = {
        "address": validator.address,
        "event_counter": events.counter,
        "latest_event": latest.description if latest else None,
        "latest_event_kind": latest.kind if latest else None,
        "recent_events": [event.description for event in recent],
        "lost_events": events.lost_events(),
    }
    natural: list[FaultKind] = []
    problems: list[str] = []
    if latest is not None and (latest.is_jam or latest.kind == "fatal"):
        natural.append(FaultKind.CASH_DEVICE_FAULT)
        problems.append(f"bill acceptor reports {latest.description} (code {latest.b})")
    return _result(
        target, probe, ctx, ts=ts, latency_ms=latency_ms, values=values,
        natural=natural, problems=problems,
    )


@register(ProbeKind.PRINTER)
async def probe_printer(target: Target, probe: PrinterProbe, ctx: ProbeContext) -> ProbeResult:
    """DLE EOT 1..4: offline, paper end, cover open or an error is a cash device fault; paper
    near end is only noted."""
    ts = now_utc()
    deadline = _Deadline(probe.timeout)
    status = await EscposPrinter.for_target(target).status(timeout=deadline.left())
    latency_ms = deadline.elapsed_ms()
    all_problems = status.problems()
    blocking = [problem for problem in all_problems if problem != "paper near end"]
    values: dict[str, Any] = {
        "ready": status.ready,
        "online": status.online,
        "paper_near_end": status.paper_near_end,
        "paper_end": status.paper_end,
        "cover_open": status.cover_open,
        "error": status.error,
        "problems": all_problems,
    }
    natural = [FaultKind.CASH_DEVICE_FAULT] if blocking else []
    problems = [f"printer not ready: {', '.join(all_problems)}"] if blocking else []
    return _result(
        target, probe, ctx, ts=ts, latency_ms=latency_ms, values=values,
        natural=natural, problems=problems,
    )


__all__ = ["probe_bill_acceptor", "probe_printer", "probe_terminal"]
