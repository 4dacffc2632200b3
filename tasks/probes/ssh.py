"""The ssh_metrics probe: a server's CPU, memory, load, disks and services, agentless over SSH.

One SSH connection per host per sweep (shared through the ProbeContext) and one command per
probe: a small POSIX shell script that prints every measurement in its own section::

    :::floorwatch stat        first line of /proc/stat
    :::floorwatch stat        the same, CPU_SAMPLE_S later
    :::floorwatch meminfo     /proc/meminfo
    :::floorwatch loadavg     /proc/loadavg
    :::floorwatch nproc       the number of CPUs
    :::floorwatch disk        the block's disk_command (df -P format), then its exit status
    :::floorwatch service N   `<service_command> status NAME` of the N-th service, then its rc
    :::floorwatch end

``parse_metrics`` turns that text into ``HostMetrics`` (a pure function); ``assess`` compares
them with the probe's thresholds. A threshold exceeded is ``infrastructure_overload``, a
service not active ``service_down``, a host key other than the pinned one
``security_alert``. A hung service whose process still exists is *not* visible here: the
service manager reports it running; the service's own HTTP probe catches it.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blocks.ssh import SshHost
from floorwatch.catalogue import FaultKind, ProbeKind
from floorwatch.errors import CommandFailed, HostKeyMismatch, ProbeTimeout, ProtocolError
from floorwatch.inventory import SshMetricsProbe, SshThresholds, Target
from floorwatch.results import ProbeResult, failed, now_utc, passed, probe_id
from tasks.probes import ProbeContext, register
from tasks.ssh import open_shell

MARK = ":::floorwatch"
# CPU use is the busy share of the time between two /proc/stat samples this far apart.
CPU_SAMPLE_S = 0.5
# Exit statuses of `<service_command> status NAME` that mean "not active", as systemctl's.
_STATE_BY_EXIT = {3: "inactive", 4: "not-found"}
_ACTIVE_LINE = re.compile(r"^\s*Active:\s*(\S+)", re.MULTILINE)  # systemctl status


@dataclass(frozen=True)
class HostMetrics:
    """What one ssh_metrics probe measured on a server."""

    cpu_percent: float
    memory_percent: float
    load_per_cpu: float
    cpus: int
    disks: dict[str, float] = field(default_factory=dict)  # mount -> percent used
    services: dict[str, str] = field(default_factory=dict)  # name -> state ("active"...)

    def values(self) -> dict[str, Any]:
        """The measurements as stored in a ProbeResult's ``values``."""
        return {
            "cpu_percent": round(self.cpu_percent, 1),
            "memory_percent": round(self.memory_percent, 1),
            "load_per_cpu": round(self.load_per_cpu, 2),
            "cpus": self.cpus,
            "disks": dict(self.disks),
            "services": dict(self.services),
        }


def _section(tag: str, command: str) -> str:
    """Shell lines printing ``command``'s output (stderr too) and exit status under ``tag``.

    A subshell and a newline: the configured command may hold pipes, ``exit`` or a trailing
    comment without cutting the script short.
    """
    return f"echo '{MARK} {tag}'; ( {command}\n) </dev/null 2>&1; echo \"{MARK} rc $?\""


def metrics_script(services: Sequence[str], service_command: str, disk_command: str) -> str:
    """The shell script that prints every section ``parse_metrics`` reads.

    The CPU is sampled first, before the service manager and df run, so their own start-up
    does not count as load. Commands read /dev/null and their stderr joins their section.
    """
    lines = [
        f"echo '{MARK} stat'; head -n 1 /proc/stat",
        f"sleep {CPU_SAMPLE_S:g}",
        f"echo '{MARK} stat'; head -n 1 /proc/stat",
        f"echo '{MARK} meminfo'; cat /proc/meminfo",
        f"echo '{MARK} loadavg'; cat /proc/loadavg",
        f"echo '{MARK} nproc'; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN",
        _section("disk", disk_command),
    ]
    for index, name in enumerate(services):
        lines.append(_section(f"service {index}", f"{service_command} status {shlex.quote(name)}"))
    lines.append(f"echo '{MARK} end'")
    return "\n".join(lines) + "\n"


@dataclass
class _Section:
    tag: str
    lines: list[str] = field(default_factory=list)
    rc: int | None = None


def _sections(text: str, target: str) -> list[_Section]:
    sections: list[_Section] = []
    for line in text.splitlines():
        if line.startswith(MARK + " "):
            tag = line[len(MARK) + 1 :].strip()
            if tag.startswith("rc "):
                if not sections or not tag[3:].strip().lstrip("-").isdigit():
                    raise ProtocolError(target, f"metrics output has a stray line {line!r}")
                sections[-1].rc = int(tag[3:])
            else:
                sections.append(_Section(tag))
        elif sections:
            sections[-1].lines.append(line)
        elif line.strip():
            raise ProtocolError(target, f"metrics output starts with {line[:60]!r}")
    if not sections or sections[-1].tag != "end":
        raise ProtocolError(target, "metrics output ended early (no end marker)")
    return sections


def _cpu_times(section: _Section, target: str) -> tuple[int, int]:
    """(busy, total) jiffies from a /proc/stat ``cpu`` line."""
    fields = section.lines[0].split() if section.lines else []
    if len(fields) < 5 or fields[0] != "cpu" or not all(f.isdigit() for f in fields[1:]):
        shown = section.lines[0][:60] if section.lines else "nothing"
        raise ProtocolError(target, f"/proc/stat has no cpu line (got {shown!r})")
    # user nice system idle iowait irq softirq steal; guest time is already in user/nice
    numbers = [int(f) for f in fields[1:9]]
    idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
    total = sum(numbers)
    return total - idle, total


def _memory_percent(section: _Section, target: str) -> float:
    kb: dict[str, int] = {}
    for line in section.lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[key.strip()] = int(parts[0])
    if "MemTotal" not in kb or "MemAvailable" not in kb or kb["MemTotal"] <= 0:
        raise ProtocolError(target, "/proc/meminfo lacks MemTotal or MemAvailable")
    used = kb["MemTotal"] - min(kb["MemAvailable"], kb["MemTotal"])
    return used * 100 / kb["MemTotal"]


def _number(section: _Section, target: str, what: str) -> float:
    first = section.lines[0].split() if section.lines else []
    try:
        return float(first[0])
    except (IndexError, ValueError):
        shown = section.lines[0][:60] if section.lines else "nothing"
        raise ProtocolError(target, f"{what} is not a number (got {shown!r})") from None


def parse_df(lines: Sequence[str], target: str) -> dict[str, float]:
    """Mount -> percent used, from ``df -P`` output (pseudo file systems without a size,
    shown as ``-``, are skipped)."""
    disks: dict[str, float] = {}
    header = False
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("Filesystem"):
            header = True
            continue
        fields = line.split()
        capacity = fields[4] if len(fields) >= 6 else ""
        if capacity == "-":
            continue
        if not header or not capacity.endswith("%") or not capacity[:-1].isdigit():
            raise ProtocolError(target, f"disk usage line is not df -P format: {line[:80]!r}")
        disks[" ".join(fields[5:])] = float(capacity[:-1])
    if not header:
        raise ProtocolError(target, "disk command printed no df -P header")
    return disks


def service_state(name: str, output: Sequence[str], exit_code: int) -> str:
    """The state of a service from ``<service_command> status NAME``: ``active`` on exit 0,
    else the word systemctl (``Active: failed``) or svc (``NAME failed ...``) printed."""
    if exit_code == 0:
        return "active"
    word: str | None = None
    if match := _ACTIVE_LINE.search("\n".join(output)):
        word = match[1]
    else:
        for line in output:
            tokens = line.split()
            if len(tokens) > 1 and tokens[0] == name:
                word = tokens[1]
                break
    if word is None or word == "active":  # "active" with a failing exit: trust the exit
        word = _STATE_BY_EXIT.get(exit_code, f"unknown (exit {exit_code})")
    return word


def parse_metrics(text: str, services: Sequence[str], target: str) -> HostMetrics:
    """The measurements in the output of ``metrics_script``; raises ProtocolError for text
    that is not that output and CommandFailed when the disk command failed."""
    sections = _sections(text, target)
    by_tag: dict[str, list[_Section]] = {}
    for section in sections:
        by_tag.setdefault(section.tag, []).append(section)

    def one(tag: str) -> _Section:
        found = by_tag.get(tag, [])
        if len(found) != 1:
            raise ProtocolError(target, f"metrics output has {len(found)} {tag} sections, not 1")
        return found[0]

    stats = by_tag.get("stat", [])
    if len(stats) != 2:
        raise ProtocolError(target, f"metrics output has {len(stats)} /proc/stat samples, not 2")
    busy0, total0 = _cpu_times(stats[0], target)
    busy1, total1 = _cpu_times(stats[1], target)
    elapsed = total1 - total0
    cpu = max(busy1 - busy0, 0) * 100 / elapsed if elapsed > 0 else 0.0
    cpus = int(_number(one("nproc"), target, "the CPU count"))
    if cpus < 1:
        raise ProtocolError(target, f"the CPU count is {cpus}")
    load = _number(one("loadavg"), target, "the load average")
    disk = one("disk")
    if disk.rc is None:
        raise ProtocolError(target, "the disk command's exit status is missing")
    if disk.rc != 0:
        last = next((ln.strip() for ln in reversed(disk.lines) if ln.strip()), "no output")
        raise CommandFailed(target, f"disk command exited {disk.rc}: {last[:200]}")
    states: dict[str, str] = {}
    for index, name in enumerate(services):
        section = one(f"service {index}")
        if section.rc is None:
            raise ProtocolError(target, f"the status of {name} has no exit status")
        states[name] = service_state(name, section.lines, section.rc)
    return HostMetrics(
        cpu_percent=min(cpu, 100.0),
        memory_percent=_memory_percent(one("meminfo"), target),
        load_per_cpu=load / cpus,
        cpus=cpus,
        disks=parse_df(disk.lines, target),
        services=states,
    )


def _pct(value: float) -> str:
    return f"{round(value, 1):g}%"


def overloads(metrics: HostMetrics, thresholds: SshThresholds) -> list[str]:
    """One line per threshold exceeded, e.g. ``disk /data 95% > 90%``."""
    found: list[str] = []
    if metrics.cpu_percent > thresholds.cpu_percent:
        found.append(f"cpu {_pct(metrics.cpu_percent)} > {_pct(thresholds.cpu_percent)}")
    if metrics.memory_percent > thresholds.memory_percent:
        found.append(f"memory {_pct(metrics.memory_percent)} > {_pct(thresholds.memory_percent)}")
    if metrics.load_per_cpu > thresholds.load_per_cpu:
        found.append(f"load {metrics.load_per_cpu:.2f} per cpu > {thresholds.load_per_cpu:g}")
    for mount, percent in sorted(metrics.disks.items()):
        if percent > thresholds.disk_percent:
            found.append(f"disk {mount} {_pct(percent)} > {_pct(thresholds.disk_percent)}")
    return found


def services_down(metrics: HostMetrics) -> list[str]:
    """One line per service not active, e.g. ``game-engine: failed``."""
    return [f"{name}: {state}" for name, state in metrics.services.items() if state != "active"]


@register(ProbeKind.SSH_METRICS)
async def probe_ssh_metrics(
    target: Target, probe: SshMetricsProbe, ctx: ProbeContext
) -> ProbeResult:
    """Measure a server over SSH and compare it with the probe's thresholds."""
    started = time.monotonic()
    ts = now_utc()
    pid = probe_id(probe.kind)
    block = ctx.credential(target, SshHost)
    # the inventory says where the server is; the block how to log in and which key to trust
    address = target.connection.host or block.host
    port = target.connection.port or block.port

    def elapsed_ms() -> float:
        return (time.monotonic() - started) * 1000

    try:
        shell = await ctx.resource(
            f"ssh:{block.username}@{address}:{port}",
            lambda: open_shell(
                block, name=target.name, address=address, port=port, timeout=probe.timeout
            ),
        )
    except HostKeyMismatch as exc:
        # someone else may answer at that address: a security event, never an outage
        return failed(
            target.name, ctx.zone, probe.kind, ts=ts, faults=(FaultKind.SECURITY_ALERT,),
            message=str(exc), error_class=type(exc).__name__, latency_ms=elapsed_ms(),
            probe=pid,
        )  # fmt: skip
    left = probe.timeout - (time.monotonic() - started)
    if left <= CPU_SAMPLE_S:
        raise ProbeTimeout(target.name, f"no time left to sample within {probe.timeout:g} s")
    services = target.connection.services
    script = metrics_script(services, block.service_command, block.disk_command)
    result = await asyncio.to_thread(shell.run, script, left)
    metrics = parse_metrics(result.stdout, services, target.name)
    values = metrics.values()
    down = services_down(metrics)
    overloaded = overloads(metrics, probe.thresholds)
    natural: list[FaultKind] = []
    if down:
        natural.append(FaultKind.SERVICE_DOWN)
    if overloaded:
        natural.append(FaultKind.INFRASTRUCTURE_OVERLOAD)
    if not natural:
        return passed(
            target.name, ctx.zone, probe.kind, ts=ts, latency_ms=elapsed_ms(), values=values,
            probe=pid,
        )  # fmt: skip
    # the inventory may name the fault this probe reports for a server that answered
    faults = (probe.fault,) if probe.fault is not None else tuple(natural)
    return failed(
        target.name, ctx.zone, probe.kind, ts=ts, faults=faults,
        message="; ".join(down + overloaded), latency_ms=elapsed_ms(), values=values, probe=pid,
    )  # fmt: skip
