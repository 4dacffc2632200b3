"""Diagnosis: the evidence every runbook starts from, and the ``diagnose_target`` logic.

Recent probe history from the store and a fresh probe of every probe the target has, then
the kind-specific evidence from the target's own adapters::

    server, or endpoint whose service runs on a parent server   over SSH (one connection):
        services   `<service_command> status NAME` of each service
        journal    `<service_command> journal NAME -n 20` (`journalctl -u NAME ...` for systemd)
        processes  `ps -eo pid,pcpu,pmem,comm --sort=-pcpu | head -6`
        disk       the block's disk_command
    terminal         console STATUS and VERSION
    bill acceptor    ccTalk simple poll and buffered bill events
    printer          ESC/POS real-time status
    dns record       the authoritative answers now, against expected and backup
    database         the sql probe's values, and the affected bets, rounds and payments

Every piece is collected on its own, concurrently, each within ``PIECE_TIMEOUT_S`` and the
whole within ``DIAGNOSIS_BUDGET_S``: a piece that cannot be collected is recorded as
``"unavailable: <reason>"`` and never fails the runbook, whose diagnosis is what a person
reads first when something else has failed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shlex
import socket
import time
from collections.abc import Awaitable, Sequence
from pathlib import PurePosixPath
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from blocks import SshHost
from floorwatch.catalogue import TargetKind
from floorwatch.errors import AdapterError, ConnectError, ProbeTimeout, ProtocolError
from floorwatch.inventory import Inventory, Target
from floorwatch.protocols import console
from floorwatch.results import ProbeResult
from runbooks.financial import describe_affected, list_affected_rows
from runbooks.frame import Diagnosis, RunContext, probe_target
from tasks.probes.ssh import service_state
from tasks.serial import CctalkDevice, Console, EscposPrinter
from tasks.ssh import CommandResult, RemoteShell, open_shell

HISTORY = 10
PIECE_TIMEOUT_S = 5.0
DIAGNOSIS_BUDGET_S = 15.0
JOURNAL_LINES = 20
TOP_PROCESSES = "ps -eo pid,pcpu,pmem,comm --sort=-pcpu | head -6"
# sshd allows 10 sessions per connection by default; stay well below it.
MAX_SSH_CHANNELS = 4
MAX_OUTPUT_CHARS = 4000
UNAVAILABLE = "unavailable: "
SSH_PIECES = ("services", "journal", "processes", "disk")


def unavailable(reason: BaseException | str) -> str:
    """How a piece of evidence that could not be collected is recorded."""
    if isinstance(reason, BaseException):
        reason = str(reason) or type(reason).__name__
    return f"{UNAVAILABLE}{reason}"


def is_unavailable(value: object) -> bool:
    """Whether ``value`` records a piece of evidence that could not be collected."""
    return isinstance(value, str) and value.startswith(UNAVAILABLE)


class _Budget:
    """The whole diagnosis's time, started when it starts."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def piece(self, timeout: float = PIECE_TIMEOUT_S) -> float:
        """Time for one piece: its own timeout, or what is left, if less."""
        return max(min(timeout, self.at - time.monotonic()), 0.1)


async def _piece(what: str, work: Awaitable[Any], timeout: float) -> Any:
    """The value of ``work``, or ``unavailable: <reason>`` when it fails or takes too long."""
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        return unavailable(f"{what} took longer than {timeout:g} s")
    except Exception as exc:  # noqa: BLE001 - one piece of evidence must not fail the runbook
        reason = str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"
        return unavailable(reason)


# -- servers over SSH ------------------------------------------------------------------------


def ssh_server(inventory: Inventory, target: Target) -> tuple[Target, list[str]] | None:
    """(server, services) to look at over SSH: a server and its services, or the server an
    endpoint's ``connection.service`` runs on; None for anything else."""
    if target.kind == TargetKind.SERVER:
        return target, list(target.connection.services)
    if target.connection.service is None:
        return None
    for parent in inventory.parents(target.name):
        if parent.kind == TargetKind.SERVER:
            return parent, [target.connection.service]
    return None


def journal_command(service_command: str, name: str, lines: int = JOURNAL_LINES) -> str:
    """The journal tail of ``name``: ``journalctl`` beside a ``systemctl`` service manager,
    else the manager's own ``journal`` verb (the sandbox's ``svc journal NAME -n 20``)."""
    with contextlib.suppress(ValueError):  # unbalanced quotes: not systemctl, use as is
        words = shlex.split(service_command)
        if words and PurePosixPath(words[-1]).name == "systemctl":
            journalctl = str(PurePosixPath(words[-1]).with_name("journalctl"))
            prefix = " ".join(shlex.quote(w) for w in [*words[:-1], journalctl])
            return f"{prefix} -u {shlex.quote(name)} -n {lines} --no-pager"
    return f"{service_command} journal {shlex.quote(name)} -n {lines}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + "…"


def _lines(text: str) -> list[str]:
    return [line for line in _clip(text).splitlines() if line.strip()]


def _failed_command(command: str, result: CommandResult) -> str:
    detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return unavailable(f"`{command}` exited {result.exit_code}"
                       + (f": {detail[-1][:200]}" if detail else ""))


async def _ssh_host(ctx: RunContext, server: Target) -> SshHost:
    name = server.connection.block
    if name is None:
        raise AdapterError(server.name, "its connection names no SSH block")
    host = ctx.credentials.get(name)
    if isinstance(host, SshHost):
        return host
    loaded = await SshHost.aload(name)
    if not isinstance(loaded, SshHost):
        raise AdapterError(server.name, f"block {name!r} is not an SSH Host")
    return loaded


async def server_evidence(
    host: SshHost, server: Target, services: Sequence[str], timeout: float = PIECE_TIMEOUT_S
) -> dict[str, Any]:
    """Service states, journal tails, top processes and disk usage of ``server``, over one
    SSH connection; each command within ``timeout``, a failed one recorded as unavailable."""
    commands: dict[tuple[str, str], str] = {}
    for name in services:
        commands[("status", name)] = f"{host.service_command} status {shlex.quote(name)}"
        commands[("journal", name)] = journal_command(host.service_command, name)
    commands[("processes", "")] = TOP_PROCESSES
    commands[("disk", "")] = host.disk_command
    gate = asyncio.Semaphore(MAX_SSH_CHANNELS)

    async def run(shell: RemoteShell, command: str) -> CommandResult | str:
        async with gate:
            try:
                return await asyncio.to_thread(shell.run, command, timeout)
            except AdapterError as exc:
                return unavailable(exc)

    # the inventory says where the server is; the block how to log in (as the ssh probe does)
    address = server.connection.host or host.host
    port = server.connection.port or host.port
    try:
        async with open_shell(host, name=server.name, address=address, port=port,
                              timeout=timeout) as shell:
            ran = await asyncio.gather(*(run(shell, c) for c in commands.values()))
    except AdapterError as exc:  # no connection: every piece over it is unavailable
        reason = unavailable(exc)
        return {"server": server.name, **{piece: reason for piece in SSH_PIECES}}
    results = dict(zip(commands, ran, strict=True))

    evidence: dict[str, Any] = {"server": server.name, "services": {}, "journal": {}}
    for (piece, name), result in results.items():
        command = commands[(piece, name)]
        if isinstance(result, str):
            value: Any = result
        elif piece == "status":
            # Any exit is an answer here: systemctl says "not active" with exit 3.
            output = _lines(result.stdout + result.stderr)
            value = {"state": service_state(name, output, result.exit_code),
                     "exit_code": result.exit_code, "output": output}
        elif result.exit_code != 0:
            value = _failed_command(command, result)
        else:
            value = _lines(result.stdout)
        if piece == "status":
            evidence["services"][name] = value
        elif piece == "journal":
            evidence["journal"][name] = value
        else:
            evidence[piece] = value
    return evidence


# -- hall devices ------------------------------------------------------------------------------


async def terminal_evidence(target: Target, timeout: float = PIECE_TIMEOUT_S) -> dict[str, Any]:
    """The terminal's console STATUS and VERSION, each on its own."""
    terminal = Console.for_target(target)
    status = await _piece("STATUS", terminal.status(timeout=timeout), timeout + 1)
    if is_unavailable(status):
        # A terminal that did not answer STATUS will not answer VERSION either: don't wait
        # a second timeout on a silent line.
        version: Any = unavailable("not asked: STATUS got no answer")
    else:
        version = await _piece("VERSION", terminal.command(console.VERSION, timeout=timeout),
                               timeout + 1)
    return {"console": {
        "status": status if isinstance(status, str) else status.to_fields(),
        "version": version,
    }}


async def _bill_acceptor_status(target: Target, timeout: float) -> dict[str, Any]:
    validator = CctalkDevice.for_target(target)
    await validator.simple_poll(timeout=timeout)
    events = await validator.read_bill_events(timeout=timeout)
    latest = events.latest
    return {
        "address": validator.address, "event_counter": events.counter,
        "latest_event": latest.description if latest else None,
        "latest_event_kind": latest.kind if latest else None,
        "recent_events": [event.description for event in events.new_events()],
    }


async def _printer_status(target: Target, timeout: float) -> dict[str, Any]:
    status = await EscposPrinter.for_target(target).status(timeout=timeout)
    return {"ready": status.ready, "problems": status.problems()}


# -- dns ---------------------------------------------------------------------------------------


def _normalized(rdtype: dns.rdatatype.RdataType, value: str) -> str:
    text = value.strip()
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(text))
    return text.rstrip(".").lower()


def compare_answers(
    rdtype: str, answer: Sequence[str], expected: Sequence[str], backup: Sequence[str]
) -> str:
    """Which set the answer is: ``expected``, ``backup``, ``neither`` or ``nothing``."""
    kind = dns.rdatatype.from_text(rdtype)
    seen = {_normalized(kind, v) for v in answer}
    if not seen:
        return "nothing"
    if seen == {_normalized(kind, v) for v in expected}:
        return "expected"
    if backup and seen == {_normalized(kind, v) for v in backup}:
        return "backup"
    return "neither"


async def dns_evidence(target: Target, timeout: float = PIECE_TIMEOUT_S) -> dict[str, Any]:
    """The record's answers now, asked of its authoritative server, against the expected
    and backup sets."""
    conn = target.connection
    if conn.host is None or conn.port is None or conn.record is None:
        raise AdapterError(target.name, "its connection needs host, port and record")
    where = f"{conn.host}:{conn.port}"
    try:
        address = str(ipaddress.ip_address(conn.host))
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(conn.host, None,
                                                             type=socket.SOCK_DGRAM)
        address = str(infos[0][4][0])
    try:
        query = dns.message.make_query(conn.record, conn.rdtype)
        response, _tcp = await dns.asyncquery.udp_with_fallback(
            query, address, timeout=timeout, port=conn.port)
    except dns.exception.Timeout as exc:
        raise ProbeTimeout(target.name, f"no DNS answer from {where} within {timeout:g} s") \
            from exc
    except OSError as exc:
        raise ConnectError(target.name, f"cannot reach DNS server {where}: {exc}") from exc
    except (dns.exception.DNSException, EOFError) as exc:
        raise ProtocolError(target.name, f"unreadable DNS answer from {where}: {exc}") from exc
    answer: list[str] = []
    ttl: int | None = None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.from_text(conn.rdtype):
            answer.extend(sorted(rdata.to_text() for rdata in rrset))
            ttl = rrset.ttl
    return {"dns": {
        "server": where, "record": conn.record, "rdtype": conn.rdtype,
        "rcode": dns.rcode.to_text(response.rcode()), "answer": answer, "ttl": ttl,
        "expected": list(conn.expected), "backup": list(conn.backup),
        "matches": compare_answers(conn.rdtype, answer, conn.expected, conn.backup),
    }}


# -- the diagnosis -----------------------------------------------------------------------------


async def kind_evidence(ctx: RunContext, budget: _Budget) -> dict[str, Any]:
    """The evidence only this kind of target has (see the module docstring)."""
    target = ctx.target
    kind = target.kind
    if kind == TargetKind.TERMINAL:
        found = await _piece("console", terminal_evidence(target, budget.piece()),
                             2 * budget.piece() + 2)
        return found if isinstance(found, dict) else {"console": found}
    if kind == TargetKind.BILL_ACCEPTOR:
        return {"cash_device": await _piece(
            "bill acceptor", _bill_acceptor_status(target, budget.piece()), budget.piece() + 1)}
    if kind == TargetKind.PRINTER:
        return {"cash_device": await _piece(
            "printer", _printer_status(target, budget.piece()), budget.piece() + 1)}
    if kind == TargetKind.DNS_RECORD:
        found = await _piece("dns", dns_evidence(target, budget.piece()), budget.piece() + 1)
        return found if isinstance(found, dict) else {"dns": found}
    if kind == TargetKind.DATABASE:
        return {"financial": await _piece(
            "affected rows", list_affected_rows(target, budget.piece()), budget.piece() + 1)}
    located = ssh_server(ctx.inventory, target)
    if located is None:
        return {}
    server, services = located

    async def over_ssh() -> dict[str, Any]:
        host = await _ssh_host(ctx, server)
        return await server_evidence(host, server, services, budget.piece())

    # connect, then the commands: each gets a piece's time
    found = await _piece("SSH evidence", over_ssh(), 2 * budget.piece() + 2)
    if isinstance(found, str):
        return {"server": server.name, **{piece: found for piece in SSH_PIECES}}
    return dict(found)


async def diagnose(ctx: RunContext) -> Diagnosis:
    """What is wrong with the target now, with the evidence that shows it."""
    budget = _Budget(DIAGNOSIS_BUDGET_S)
    fresh, history, extra = await asyncio.gather(
        _piece("fresh probes", probe_target(ctx), DIAGNOSIS_BUDGET_S),
        _piece("history", _history(ctx), PIECE_TIMEOUT_S),
        kind_evidence(ctx, budget),
    )
    evidence: dict[str, Any] = {
        "probes_now": (fresh if isinstance(fresh, str)
                       else [r.model_dump(mode="json") for r in fresh]),
        "recent_history": history,
    }
    if ctx.target.kind == TargetKind.DATABASE:
        evidence["database"] = _sql_values(fresh)
    evidence.update(extra)
    return Diagnosis(summary=summarize(ctx.target.name, fresh, evidence), evidence=evidence)


async def _history(ctx: RunContext) -> list[dict[str, Any]]:
    rows = await asyncio.to_thread(ctx.store.recent_results, ctx.target.name, HISTORY)
    return [
        {"ts": r.ts.isoformat(), "probe": r.probe_id, "ok": r.ok,
         "faults": list(r.faults), "error": r.error_message}
        for r in rows
    ]


def _sql_values(fresh: list[ProbeResult] | str) -> dict[str, Any] | str:
    if isinstance(fresh, str):
        return fresh
    for result in fresh:
        if result.probe_kind == "sql":
            if result.values:
                return dict(result.values)
            return unavailable(result.error_message or "the sql probe measured nothing")
    return unavailable("the target has no sql probe")


# -- the summary -------------------------------------------------------------------------------


def _highlights(evidence: dict[str, Any]) -> list[str]:
    """Short phrases for what the kind-specific evidence shows."""
    found: list[str] = []
    services = evidence.get("services")
    if isinstance(services, dict) and services:
        found.append("services: " + ", ".join(
            f"{name} {value['state']}" if isinstance(value, dict) else f"{name} unavailable"
            for name, value in services.items()))
    terminal = evidence.get("console")
    if isinstance(terminal, dict) and isinstance(terminal.get("status"), dict):
        status = terminal["status"]
        found.append(f"console: state {status['state']}, heartbeat {status['heartbeat']}, "
                     f"uptime {status['uptime_s']} s, config {status['config_hash']}")
    device = evidence.get("cash_device")
    if isinstance(device, dict):
        if "problems" in device:
            found.append("printer: " + (", ".join(device["problems"]) or "ready"))
        else:
            found.append(f"bill acceptor: latest event {device.get('latest_event') or 'none'}")
    record = evidence.get("dns")
    if isinstance(record, dict):
        found.append(
            f"{record['record']} {record['rdtype']} answers "
            f"{', '.join(record['answer']) or record['rcode']} ({record['matches']}; expected "
            f"{', '.join(record['expected'])}"
            + (f", backup {', '.join(record['backup'])})" if record["backup"] else ")"))
    money = evidence.get("financial")
    if isinstance(money, dict) and (money["stuck_bets"] or money["stuck_payments"]
                                    or money["mismatched_rounds"]):
        found.append(describe_affected(money))
    missing = _unavailable_pieces(evidence)
    if missing:
        found.append("unavailable: " + "; ".join(f"{k} ({v[len(UNAVAILABLE):][:160]})"
                                                 for k, v in missing.items()))
    return found


def _unavailable_pieces(evidence: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Piece name -> its unavailable record; identical reasons (one lost connection) once."""
    found: dict[str, str] = {}
    for key, value in evidence.items():
        name = f"{prefix}{key}"
        if is_unavailable(value):
            found[name] = value
        elif isinstance(value, dict):
            found.update(_unavailable_pieces(value, f"{name} "))
    merged: dict[str, str] = {}
    for reason in dict.fromkeys(found.values()):
        names = [k for k, v in found.items() if v == reason]
        merged[", ".join(names)] = reason
    return merged


def summarize(name: str, fresh: list[ProbeResult] | str, evidence: dict[str, Any]) -> str:
    """One paragraph: the failing probes, then what the kind-specific evidence shows."""
    if isinstance(fresh, str):
        head = "probes could not be run"
    elif failing := [r for r in fresh if not r.ok]:
        head = "; ".join(
            f"{r.probe_id}: {', '.join(r.faults)} ({r.error_message or 'no detail'})"
            for r in failing
        )
    else:
        head = f"all {len(fresh)} probe(s) of {name} pass now"
    return "; ".join([f"{name}: {head}", *_highlights(evidence)])


def render_evidence(evidence: dict[str, Any]) -> str:
    """The evidence as markdown for a report: the kind-specific pieces, each on its own."""
    lines: list[str] = []
    services = evidence.get("services")
    if services is not None:
        lines += ["### Services", ""]
        if isinstance(services, str):
            lines.append(services)
        for name, value in (services.items() if isinstance(services, dict) else ()):
            shown = value if isinstance(value, str) else (
                f"**{value['state']}** (exit {value['exit_code']}): "
                + " ".join(value["output"])[:300])
            lines.append(f"- {name}: {shown}")
    journal = evidence.get("journal")
    if isinstance(journal, dict):
        for name, value in journal.items():
            lines += ["", f"### Journal of {name}", ""]
            lines += ([value] if isinstance(value, str) else ["```", *value, "```"])
    elif isinstance(journal, str):
        lines += ["", "### Journal", "", journal]
    for key, title in (("processes", "Top processes"), ("disk", "Disk")):
        value = evidence.get(key)
        if value is not None:
            lines += ["", f"### {title}", ""]
            lines += ([value] if isinstance(value, str) else ["```", *value, "```"])
    for key, title in (("console", "Console"), ("cash_device", "Device status"),
                       ("dns", "DNS answers"), ("database", "Database")):
        value = evidence.get(key)
        if value is None:
            continue
        lines += ["", f"### {title}", ""]
        if isinstance(value, dict):
            lines += [f"- {k}: {_short(v)}" for k, v in value.items()]
        else:
            lines.append(str(value))
    lines += _render_financial(evidence.get("financial"))
    return "\n".join(lines).strip() + "\n" if lines else ""


_FINANCIAL_COLUMNS = (
    ("stuck_bets", ("id", "round_id", "amount_cents", "placed_at", "age_minutes")),
    ("mismatched_rounds", ("id", "provider", "game", "ended_at", "total_payout_cents",
                           "bets_payout_cents", "difference_cents")),
    ("stuck_payments", ("id", "kind", "provider", "amount_cents", "created_at", "age_minutes")),
)


def _render_financial(money: dict[str, Any] | str | None) -> list[str]:
    if money is None:
        return []
    lines = ["", "### Affected bets, rounds and payments", ""]
    if isinstance(money, str):
        return [*lines, money]
    lines.append(describe_affected(money))
    for key, columns in _FINANCIAL_COLUMNS:
        rows = money.get(key) or []
        if rows:
            lines += ["", f"{key.replace('_', ' ')}:", "", f"| {' | '.join(columns)} |",
                      "|" + "---|" * len(columns)]
            lines += [f"| {' | '.join(str(row[c]) for c in columns)} |" for row in rows]
    return lines


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 600 else text[:600] + "…"
