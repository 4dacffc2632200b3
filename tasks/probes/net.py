"""TCP and DNS probes.

``tcp``: does the endpoint accept a connection, and how fast. ``dns``: does the record hold the
expected set of values (or, after a failover, the backup set), asked of the authoritative
server over UDP, again over TCP when the answer is truncated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from urllib.parse import urlsplit

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rdtypes.txtbase

from floorwatch.catalogue import HTTP_KINDS, FaultKind, ProbeKind
from floorwatch.errors import AdapterError, ConnectError, ProbeTimeout, ProtocolError
from floorwatch.inventory import DnsProbe, Probe, Target, TcpProbe
from floorwatch.results import ProbeResult, failed, now_utc, passed, probe_id
from tasks.probes import ProbeContext, register

# Ports of the URL schemes a TCP probe may take its endpoint from, when the URL names none.
DEFAULT_PORTS: dict[str, int] = {
    "http": 80,
    "https": 443,
    "postgresql": 5432,
    "postgres": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "mssql": 1433,
    "oracle": 1521,
}
# How long closing a probe's TCP connection may take; the result does not depend on it.
CLOSE_TIMEOUT_S = 0.5


def latency_fault(target: Target) -> FaultKind:
    """The fault a target that answers, but slower than its threshold, points at.

    Slowness is not an outage: an HTTP-like service that is slow breaks its integrations;
    an endpoint, server, record or database that is slow is overloaded.
    """
    if target.kind in HTTP_KINDS:
        return FaultKind.API_INTEGRATION_ERROR
    return FaultKind.INFRASTRUCTURE_OVERLOAD


def answer_fault(probe: Probe, natural: FaultKind) -> str:
    """The fault of a wrong answer: the probe's own when the inventory names one."""
    return str(probe.fault) if probe.fault is not None else str(natural)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# -- tcp ------------------------------------------------------------------------------------


def tcp_endpoint(target: Target) -> tuple[str, int]:
    """Host and port a TCP probe connects to: the connection's own, else its URL's."""
    conn = target.connection
    if conn.host is not None and conn.port is not None:
        return conn.host, conn.port
    if conn.url is not None:
        parts = urlsplit(conn.url)
        try:
            port = parts.port
        except ValueError as exc:
            raise AdapterError(target.name, "connection.url has an invalid port") from exc
        scheme = parts.scheme.split("+", 1)[0].lower()
        port = port or DEFAULT_PORTS.get(scheme)
        if parts.hostname and port:
            return parts.hostname, port
    raise AdapterError(target.name, "its connection names no host and port to connect to")


@register(ProbeKind.TCP)
async def probe_tcp(target: Target, probe: TcpProbe, ctx: ProbeContext) -> ProbeResult:
    """Connect to the target's host and port; the connect time is the latency."""
    host, port = tcp_endpoint(target)
    where = f"{host}:{port}"
    ts = now_utc()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(probe.timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError as exc:
        raise ProbeTimeout(
            target.name, f"no TCP connection to {where} within {probe.timeout:g} s"
        ) from exc
    except ConnectionRefusedError as exc:
        raise ConnectError(target.name, f"{where} refused the connection") from exc
    except OSError as exc:  # unreachable, unknown host name...
        raise ConnectError(target.name, f"cannot connect to {where}: {exc}") from exc
    latency_ms = _ms(time.perf_counter() - started)
    writer.close()
    # A peer that resets the connection while we close it changes nothing about the result.
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()

    values = {"address": where, "latency_ms": latency_ms}
    pid = probe_id(probe.kind)
    limit = probe.thresholds.latency_ms
    if limit is not None and latency_ms > limit:
        return failed(
            target.name, ctx.zone, probe.kind, ts=ts, faults=(latency_fault(target),),
            message=f"TCP connect to {where} took {latency_ms:.1f} ms (threshold {limit:g} ms)",
            latency_ms=latency_ms, values=values, probe=pid,
        )
    return passed(
        target.name, ctx.zone, probe.kind, ts=ts, latency_ms=latency_ms, values=values, probe=pid
    )


# -- dns ------------------------------------------------------------------------------------


async def _server_address(target: Target, host: str, timeout: float) -> str:
    """The DNS server's IP address: dnspython queries addresses, not host names."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except TimeoutError as exc:
        raise ProbeTimeout(target.name, f"cannot resolve DNS server {host} in time") from exc
    except OSError as exc:
        raise ConnectError(target.name, f"cannot resolve DNS server {host}: {exc}") from exc
    if not infos:
        raise ConnectError(target.name, f"DNS server {host} has no address")
    return str(infos[0][4][0])


async def _exchange(
    target: Target, query: dns.message.Message, address: str, port: int, timeout: float
) -> tuple[dns.message.Message, str]:
    """Send ``query`` over UDP, over TCP if the answer is truncated; the answer and transport."""
    where = f"{address}:{port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    backend = dns.asyncbackend.get_backend("asyncio")
    try:
        # A connected UDP socket, so that a closed port (ICMP port unreachable) is reported
        # as a refusal at once instead of looking like a server that does not answer.
        sock = await backend.make_socket(  # type: ignore[no-untyped-call]  # dnspython
            dns.inet.af_for_address(address), socket.SOCK_DGRAM, 0, None, (address, port)
        )
        try:
            response = await dns.asyncquery.udp(
                query, address, timeout=timeout, port=port, raise_on_truncation=True, sock=sock
            )
            return response, "udp"
        except dns.message.Truncated:
            pass  # the answer does not fit a datagram: ask again over TCP
        finally:
            await sock.close()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ProbeTimeout(
                target.name, f"no complete DNS answer from {where} within {timeout:g} s"
            )
        response = await dns.asyncquery.tcp(query, address, timeout=remaining, port=port)
        return response, "tcp"
    except dns.exception.Timeout as exc:
        raise ProbeTimeout(
            target.name, f"no DNS answer from {where} within {timeout:g} s"
        ) from exc
    except ConnectionRefusedError as exc:
        raise ConnectError(target.name, f"{where} refused the DNS query") from exc
    except OSError as exc:
        raise ConnectError(target.name, f"cannot reach DNS server {where}: {exc}") from exc
    except EOFError as exc:  # dnspython's TCP read of a connection closed mid-answer
        raise ProtocolError(target.name, f"{where} closed the connection before answering") from exc
    except dns.exception.DNSException as exc:
        raise ProtocolError(target.name, f"unreadable DNS answer from {where}: {exc}") from exc


def _display(rdata: dns.rdata.Rdata) -> str:
    """A record value as an inventory writes it: TXT strings unquoted and joined."""
    if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
        return b"".join(rdata.strings).decode("utf-8", "replace")
    return str(rdata.to_text())


def _normalized(rdtype: dns.rdatatype.RdataType, value: str) -> str:
    """A value in the form two equal values share (``::1`` for ``0::1``, names without the
    final dot and lowercased)."""
    text = value.strip()
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(text))
        return text
    if rdtype == dns.rdatatype.TXT:
        return text
    return " ".join(part.rstrip(".").lower() for part in text.split())


@register(ProbeKind.DNS)
async def probe_dns(target: Target, probe: DnsProbe, ctx: ProbeContext) -> ProbeResult:
    """Ask the record's server for it and compare the answer with the expected or backup set."""
    conn = target.connection
    if conn.host is None or conn.port is None or conn.record is None:
        raise AdapterError(target.name, "its connection needs host, port and record")
    try:
        qname = dns.name.from_text(conn.record)
        rdtype = dns.rdatatype.from_text(conn.rdtype)
    except dns.exception.DNSException as exc:
        raise AdapterError(
            target.name, f"cannot ask for {conn.record} {conn.rdtype}: {exc}"
        ) from exc
    record = qname.to_text()
    ts = now_utc()
    started = time.perf_counter()
    address = await _server_address(target, conn.host, probe.timeout)
    remaining = probe.timeout - (time.perf_counter() - started)
    query = dns.message.make_query(qname, rdtype)
    response, transport = await _exchange(target, query, address, conn.port, max(remaining, 0.01))
    latency_ms = _ms(time.perf_counter() - started)

    rcode = response.rcode()
    if rcode == dns.rcode.REFUSED:
        raise ConnectError(
            target.name, f"{address}:{conn.port} refused to answer for {record} (REFUSED)"
        )
    answer: list[str] = []
    ttl: int | None = None
    problem: str | None = None
    serving: str | None = None
    if rcode == dns.rcode.NXDOMAIN:
        problem = f"{record} does not exist (NXDOMAIN)"
    elif rcode != dns.rcode.NOERROR:
        problem = f"{record} {conn.rdtype} cannot be resolved ({dns.rcode.to_text(rcode)})"
    else:
        if not isinstance(response, dns.message.QueryMessage):
            raise ProtocolError(target.name, f"the answer for {record} is not a query response")
        try:
            rrset = response.resolve_chaining().answer
        except dns.exception.DNSException as exc:
            raise ProtocolError(target.name, f"unusable answer for {record}: {exc}") from exc
        if rrset is not None:
            answer = sorted(_display(rdata) for rdata in rrset)
            ttl = rrset.ttl
        seen = {_normalized(rdtype, value) for value in answer}
        if not answer:
            problem = f"{record} {conn.rdtype} has no records"
        elif seen == {_normalized(rdtype, value) for value in conn.expected}:
            serving = "primary"
        elif conn.backup and seen == {_normalized(rdtype, value) for value in conn.backup}:
            serving = "backup"  # a failover is in force: the record is served, not a fault
        else:
            problem = (
                f"{record} {conn.rdtype} is {', '.join(answer)}; "
                f"expected {', '.join(conn.expected)}"
                + (f" (or backup {', '.join(conn.backup)})" if conn.backup else "")
            )

    values = {
        "answer": answer, "serving": serving, "rcode": dns.rcode.to_text(rcode), "ttl": ttl,
        "transport": transport, "server": f"{address}:{conn.port}", "latency_ms": latency_ms,
    }
    faults: list[str] = []
    problems: list[str] = []
    if problem is not None:
        faults.append(answer_fault(probe, FaultKind.SERVICE_DOWN))
        problems.append(problem)
    limit = probe.thresholds.latency_ms
    if limit is not None and latency_ms > limit:
        faults.append(str(latency_fault(target)))
        problems.append(f"the answer took {latency_ms:.1f} ms (threshold {limit:g} ms)")
    pid = probe_id(probe.kind)
    if faults:
        return failed(
            target.name, ctx.zone, probe.kind, ts=ts, faults=tuple(dict.fromkeys(faults)),
            message="; ".join(problems), latency_ms=latency_ms, values=values, probe=pid,
        )
    return passed(
        target.name, ctx.zone, probe.kind, ts=ts, latency_ms=latency_ms, values=values, probe=pid
    )
