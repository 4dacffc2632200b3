"""HTTP probe: GET the target's URL (or ``probe.path`` on its origin) over a fresh, verified
connection, and check the answer with ``floorwatch.httpcheck``.

The client is aiohttp, chosen by measurement (``bench/sweep.py``: 10,000 targets served by
nginx on loopback, a fresh connection per probe, 2 cores): a bare aiohttp loop spends about
410 µs of CPU per probe, a bare httpx loop about 1,400 µs (its anyio/httpcore stack), so
aiohttp does about 2,300 probes/s on one core and httpx 500-1,100/s. A sweep is CPU-bound
on the client side, so the transport sets its duration; the whole Floorwatch probe (this
module, ``run_probe``, result models) adds only a few percent to bare aiohttp. httpx stays
the client where throughput does not matter (chat, runbooks, the sandbox).

Every probe opens its own connection (``force_close``): a probe answers "can a client reach
this service now", which a kept-alive connection would answer for a service whose listening
socket is already closed. TLS is always verified, with the target's CA bundle when the
inventory names one, the system CAs otherwise; the days left on the verified certificate
are read from the connection itself, so the check costs no second handshake.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from floorwatch.catalogue import FaultKind, ProbeKind
from floorwatch.errors import AdapterError, ConnectError, ProbeTimeout, ProtocolError
from floorwatch.httpcheck import HttpAnswer, evaluate
from floorwatch.inventory import HttpProbe, Target
from floorwatch.results import (
    BAD_ANSWER_FAULT,
    ProbeResult,
    failed,
    now_utc,
    passed,
    probe_id,
)
from tasks.probes import ProbeContext, register

# A health document is small; a probe never holds more than this of an answer in memory.
MAX_BODY_BYTES = 1024 * 1024
USER_AGENT = "floorwatch-probe/0.1"
SESSION_KEY = "http:session"


class _CertResponse(aiohttp.ClientResponse):
    """A response that keeps the expiry of the verified server certificate.

    aiohttp releases (and with ``force_close`` closes) the connection as soon as a small
    body has arrived, before the caller sees the response, so the certificate is read from
    the connection when the response starts.
    """

    not_after: float | None = None

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            cert = ssl_object.getpeercert()
            if cert and "notAfter" in cert:
                self.not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
        return await super().start(connection)


def open_session() -> aiohttp.ClientSession:
    """The client session of one sweep: no connection reuse, no cookies, no proxies."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    return aiohttp.ClientSession(
        connector=connector,
        response_class=_CertResponse,
        cookie_jar=aiohttp.DummyCookieJar(),  # nothing one target sets may reach another
        headers={"User-Agent": USER_AGENT},
        trust_env=False,  # targets are probed directly, never through an environment proxy
        raise_for_status=False,
    )


@lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def request_url(target: Target, probe: HttpProbe) -> str:
    """The URL a probe requests: the connection URL, or ``probe.path`` on its origin."""
    url = target.connection.url
    if url is None:
        raise AdapterError(target.name, "its connection has no url")
    if probe.path is None:
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{probe.path}"


def _shown(url: str) -> str:
    """``host:port/path`` for messages: no credentials or query string, which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}{parts.path or '/'}"


async def _ssl_for(target: Target, ctx: ProbeContext) -> ssl.SSLContext | bool:
    """The TLS settings of a target: its CA bundle's context (one per bundle per sweep), or
    ``True``, aiohttp's verified context with the system CAs. Never unverified."""
    bundle = target.connection.ca_bundle
    if bundle is None:
        return True
    return await ctx.resource(f"http:ssl:{bundle}", lambda: _ca_context(target.name, bundle))


def _ca_context(target: str, bundle: Path) -> contextlib.nullcontext[ssl.SSLContext]:
    try:
        context = ssl.create_default_context(cafile=str(bundle))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AdapterError(target, f"cannot load CA bundle {bundle}: {reason}") from exc
    return contextlib.nullcontext(context)


async def _read_body(response: aiohttp.ClientResponse, target: str, where: str) -> bytes:
    """The whole body, refusing one larger than ``MAX_BODY_BYTES``."""
    length = response.content_length
    if length is not None and length <= MAX_BODY_BYTES:
        return await response.read()
    if length is not None:
        raise ProtocolError(target, f"{where} answered {length} bytes, over the 1 MiB limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProtocolError(target, f"{where} answered more than the 1 MiB limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch(
    target: Target, probe: HttpProbe, ctx: ProbeContext
) -> tuple[HttpAnswer, str]:
    """GET the probe's URL; the answer and the ``host:port/path`` it came from.

    Raises ConnectError (refused, unreachable, TLS verification failed), ProbeTimeout (no
    whole answer within ``probe.timeout``) or ProtocolError (not HTTP, cut off, too big).
    """
    url = request_url(target, probe)
    where = _shown(url)
    session: aiohttp.ClientSession = await ctx.resource(SESSION_KEY, open_session)
    tls = await _ssl_for(target, ctx) if url.startswith("https:") else True
    name = target.name
    started = time.perf_counter()
    try:
        # Redirects are not followed: a health URL that redirects (to a login page, say)
        # is reported with its own status rather than judged by another page.
        async with session.get(
            url, timeout=_timeout(probe.timeout), ssl=tls, allow_redirects=False
        ) as response:
            body = await _read_body(response, name, where)
            status = response.status
            not_after = response.not_after if isinstance(response, _CertResponse) else None
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        raise ProbeTimeout(name, f"no answer from {where} within {probe.timeout:g} s") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        reason = getattr(exc.certificate_error, "verify_message", None) or str(
            exc.certificate_error
        )
        raise ConnectError(name, f"TLS verification of {where} failed: {reason}") from exc
    except (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise ConnectError(name, f"TLS handshake with {where} failed: {_reason(exc)}") from exc
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            raise ConnectError(name, f"cannot connect to {where}: connection refused") from exc
        reason = exc.os_error.strerror or str(exc.os_error)
        raise ConnectError(name, f"cannot connect to {where}: {_short(reason)}") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise ConnectError(name, f"{where} closed the connection without answering") from exc
    except aiohttp.ClientOSError as exc:  # a reset in mid-answer
        raise ConnectError(name, f"connection to {where} failed: {_reason(exc)}") from exc
    except aiohttp.InvalidURL as exc:
        raise AdapterError(name, f"invalid URL for {where}") from exc
    except aiohttp.ClientResponseError as exc:  # not HTTP, or HTTP aiohttp cannot parse
        raise ProtocolError(
            name, f"{where} answered malformed HTTP: {_short(str(exc.message))}"
        ) from exc
    except aiohttp.ClientPayloadError as exc:
        raise ProtocolError(name, f"{where} cut its answer short: {_reason(exc)}") from exc
    except aiohttp.ClientError as exc:
        raise ProtocolError(name, f"{where}: {type(exc).__name__}: {_reason(exc)}") from exc
    latency_ms = (time.perf_counter() - started) * 1000
    cert_days = (not_after - time.time()) / 86400 if not_after is not None else None
    return HttpAnswer(status, body, latency_ms, cert_days), where


def _reason(exc: BaseException) -> str:
    return _short(str(exc)) or type(exc).__name__


def _short(text: str, limit: int = 160) -> str:
    """A library's message on one line: aiohttp's parser errors span several, with a caret
    under the offending byte."""
    words = [word for word in text.split() if word != "^"]
    line = " ".join(words)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def bad_answer_fault(target: Target, probe: HttpProbe) -> FaultKind:
    """The fault of a target that answers wrongly: the probe's own, else its kind's."""
    if probe.fault is not None:
        return probe.fault
    return BAD_ANSWER_FAULT.get(target.kind, FaultKind.API_INTEGRATION_ERROR)


@register(ProbeKind.HTTP)
async def probe_http(target: Target, probe: HttpProbe, ctx: ProbeContext) -> ProbeResult:
    """GET the target and check status, body, JSON, latency and certificate expiry."""
    ts = now_utc()
    answer, where = await fetch(target, probe, ctx)
    verdict = evaluate(answer, probe, bad_answer_fault(target, probe))
    pid = probe_id(probe.kind, probe.path)
    values: dict[str, Any] = verdict.values
    if verdict.faults:
        return failed(
            target.name, ctx.zone, probe.kind, ts=ts, faults=verdict.faults,
            message=f"GET {where}: {verdict.message}", latency_ms=values["latency_ms"],
            values=values, probe=pid,
        )
    return passed(
        target.name, ctx.zone, probe.kind, ts=ts, latency_ms=values["latency_ms"],
        values=values, probe=pid,
    )

