"""The sandbox's HTTP services: API gateway, two game providers, payment gateway (HTTPS) and
user service, each a small Starlette app served by uvicorn on 127.0.0.1.

One background thread runs one asyncio event loop that hosts all five uvicorn servers; the
control methods (``inject``/``heal``/``stop``, called from the daemon's threads) hand their
work to that loop and wait for it with a bound. Faults:

- ``down``            the service's listening socket is closed (connect is refused)
- ``slow``            every request waits ``slow_ms`` before it is handled
- ``errors``          one response in ``error_every`` is a 503 with a JSON error body
- ``bad_payload``     200 responses whose body is truncated JSON
- ``cert_expiring``   payment-gateway restarts with a certificate valid 3 more days
- ``login_failures``  user-service rejects every login (401) and reports a failed-login spike
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from floorwatch.errors import SandboxError
from sandbox.component import Component
from sandbox.tls import NORMAL_VALIDITY_DAYS, Authority, create_authority, issue_server_cert
from sandbox.topology import HOST, HTTP_SERVICES, Layout

T = TypeVar("T")

VERSIONS: dict[str, str] = {
    "api-gateway": "4.12.1",
    "provider-alpha": "2.7.0",
    "provider-beta": "3.1.4",
    "payment-gateway": "1.19.2",
    "user-service": "5.3.0",
}
PROVIDERS = ("provider-alpha", "provider-beta")
PAYMENT_SERVICE = "payment-gateway"
USER_SERVICE = "user-service"
GATEWAY = "api-gateway"

EVERY_SERVICE_FAULTS = ("down", "slow", "errors", "bad_payload")
EXPIRING_VALIDITY_DAYS = 3
# Every username logs in with this password; anything else is a failed login.
LOGIN_PASSWORD = "sandbox"
# What user-service reports on top of the logins it really saw, so the figures look like a
# live platform; a login_failures fault adds the spike.
BASELINE_ACTIVE_SESSIONS = 1240
BASELINE_LOGINS_5M = 312
BASELINE_FAILED_LOGINS_5M = 3
FAILED_LOGINS_SPIKE = 480
STATS_WINDOW_S = 300.0

GAMES: dict[str, list[dict[str, Any]]] = {
    "provider-alpha": [
        {
            "id": "alpha-starfall",
            "title": "Starfall Deluxe",
            "type": "slot",
            "rtp": 96.1,
            "min_stake": 0.1,
            "max_stake": 100.0,
        },
        {
            "id": "alpha-golden-reels",
            "title": "Golden Reels",
            "type": "slot",
            "rtp": 95.8,
            "min_stake": 0.2,
            "max_stake": 50.0,
        },
        {
            "id": "alpha-roulette",
            "title": "European Roulette",
            "type": "table",
            "rtp": 97.3,
            "min_stake": 1.0,
            "max_stake": 500.0,
        },
    ],
    "provider-beta": [
        {
            "id": "beta-dragon-ways",
            "title": "Dragon Ways",
            "type": "slot",
            "rtp": 96.5,
            "min_stake": 0.1,
            "max_stake": 80.0,
        },
        {
            "id": "beta-blackjack",
            "title": "Classic Blackjack",
            "type": "table",
            "rtp": 99.4,
            "min_stake": 2.0,
            "max_stake": 1000.0,
        },
    ],
}

_START_TIMEOUT_S = 10.0
_CONTROL_TIMEOUT_S = 8.0
_OPEN_TIMEOUT_S = 3.0
_CLOSE_TIMEOUT_S = 3.0
_UPSTREAM_TIMEOUT_S = 1.0


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class _FaultBoard:
    """Faults in force per service: written by control threads, read by the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, frozenset[str]] = {name: frozenset() for name in HTTP_SERVICES}
        self._requests: dict[str, int] = dict.fromkeys(HTTP_SERVICES, 0)

    def has(self, service: str, fault: str) -> bool:
        return fault in self._active[service]

    def of(self, service: str) -> frozenset[str]:
        return self._active[service]

    def add(self, service: str, fault: str) -> None:
        with self._lock:
            if fault == "errors" and fault not in self._active[service]:
                # A fresh injection starts the pattern over, so "first request fails" holds.
                self._requests[service] = 0
            self._active[service] = self._active[service] | {fault}

    def clear(self, service: str) -> None:
        with self._lock:
            self._active[service] = frozenset()

    def next_request_fails(self, service: str, every: int) -> bool:
        """Count a request under the errors fault; True for the 1st, (1+every)th, ... one."""
        with self._lock:
            count = self._requests[service]
            self._requests[service] = count + 1
        return count % every == 0


class _FaultInjector:
    """ASGI wrapper that applies the slow / errors / bad_payload faults before the app."""

    def __init__(
        self, app: ASGIApp, service: str, board: _FaultBoard, slow_s: float, error_every: int
    ) -> None:
        self.app = app
        self.service = service
        self.board = board
        self.slow_s = slow_s
        self.error_every = error_every
        # Set when the server closes, so a request held by the slow fault ends at once
        # instead of holding up the shutdown; replaced each time the server opens.
        self.closing = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.board.has(self.service, "slow"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), self.slow_s)
        if self.board.has(self.service, "errors") and self.board.next_request_fails(
            self.service, self.error_every
        ):
            body = {
                "error": "service_unavailable",
                "message": f"{self.service}: backend pool exhausted, retry later",
                "service": self.service,
            }
            response: Response = JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
            await response(scope, receive, send)
            return
        if self.board.has(self.service, "bad_payload"):
            # Valid HTTP framing, JSON content type, but the document stops mid-way: what a
            # crashed serializer or a cut-off upstream looks like to a client.
            truncated = f'{{"status": "ok", "service": "{self.service}", "data": [{{"id": 1, "na'
            response = Response(truncated, status_code=200, media_type="application/json")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class _Running:
    server: uvicorn.Server
    task: asyncio.Task[None]
    sock: socket.socket
    app: _FaultInjector


class HttpServices(Component):
    """The five HTTP services of ``topology.HTTP_SERVICES`` with fault injection."""

    name = "http"

    def __init__(self, layout: Layout, slow_ms: int = 1500, error_every: int = 2) -> None:
        super().__init__(layout)
        if slow_ms < 0:
            raise SandboxError(f"http: slow_ms must be >= 0, not {slow_ms}")
        if error_every < 1:
            raise SandboxError(f"http: error_every must be >= 1, not {error_every}")
        self.slow_ms = slow_ms
        self.error_every = error_every
        self._board = _FaultBoard()
        self._control = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._running: dict[str, _Running] = {}
        self._started_at: dict[str, float] = {}
        self._authority: Authority | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._apps: dict[str, _FaultInjector] = {
            name: self._build_app(name) for name in HTTP_SERVICES
        }
        # Domain state of the services, touched only from the event loop.
        self._payments: dict[str, dict[str, Any]] = {}
        self._rounds: dict[str, dict[str, Any]] = {}
        self._sessions: dict[str, dict[str, Any]] = {}
        self._logins: deque[tuple[float, bool]] = deque()

    # ------------------------------------------------------------------ paths and description

    @property
    def tls_dir(self) -> Path:
        """Folder of the CA and server certificate files."""
        return self.layout.component_dir(self.name) / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA certificate a client verifies payment-gateway with."""
        return self.tls_dir / "ca.pem"

    @property
    def thread_name(self) -> str:
        """Name of the thread running the event loop, unique per sandbox (by base port)."""
        return f"sandbox-http-{self.layout.base_port}"

    def url(self, service: str) -> str:
        """Base URL of ``service``: ``http(s)://127.0.0.1:PORT``."""
        scheme = "https" if HTTP_SERVICES[service][1] else "http"
        return f"{scheme}://{HOST}:{self.layout.http_port(service)}"

    def describe(self) -> dict[str, Any]:
        """Per service: kind, url, health_url, tls, ca_file (TLS only), host, port, version."""
        out: dict[str, Any] = {}
        for service, (_, tls) in HTTP_SERVICES.items():
            url = self.url(service)
            out[service] = {
                "kind": "http",
                "url": url,
                "health_url": f"{url}/health",
                "tls": tls,
                "ca_file": str(self.ca_file) if tls else None,
                "host": HOST,
                "port": self.layout.http_port(service),
                "version": VERSIONS[service],
            }
        return out

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Issue the certificates and open all five services; return once each answers."""
        with self._control:
            if self._thread is not None:
                raise SandboxError("http: already started")
            self._authority = create_authority(self.tls_dir)
            issue_server_cert(self._authority, self.tls_dir, NORMAL_VALIDITY_DAYS)
            self._client_ssl = ssl.create_default_context(cafile=str(self.ca_file))
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stopping = asyncio.Event()
            ready: Future[None] = Future()
            self._thread = threading.Thread(
                target=self._run_loop,
                args=(loop, ready),
                name=self.thread_name,
                daemon=True,
            )
            self._thread.start()
            try:
                ready.result(timeout=_START_TIMEOUT_S)
            except TimeoutError:
                self._shutdown()
                raise SandboxError(
                    f"http: services not ready within {_START_TIMEOUT_S:.0f} s"
                ) from None
            except (SandboxError, OSError) as exc:
                self._shutdown()
                raise SandboxError(f"http: cannot start: {exc}") from exc

    def stop(self) -> None:
        """Close every server, end the loop thread and forget all faults; safe to repeat."""
        with self._control:
            self._shutdown()

    def _shutdown(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed on its own meanwhile
                loop.call_soon_threadsafe(stopping.set)
            thread.join(_START_TIMEOUT_S)
            if thread.is_alive():
                raise SandboxError(
                    f"http: event loop thread did not end within {_START_TIMEOUT_S:.0f} s"
                )
        self._thread = None
        self._loop = None
        self._stopping = None
        for service in HTTP_SERVICES:
            self._board.clear(service)

    def _run_loop(self, loop: asyncio.AbstractEventLoop, ready: Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            # Whatever is still pending (an upstream check, a slow request) is cancelled so
            # the loop closes cleanly and no socket outlives stop().
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            if not ready.done():
                ready.set_exception(SandboxError("http: event loop thread ended before ready"))

    async def _serve(self, ready: Future[None]) -> None:
        assert self._stopping is not None
        try:
            for service in HTTP_SERVICES:
                await self._open(service)
        except (SandboxError, OSError) as exc:
            await self._close_all()
            ready.set_exception(exc)
            return
        ready.set_result(None)
        await self._stopping.wait()
        await self._close_all()

    async def _open(self, service: str) -> None:
        if service in self._running:
            return
        port = self.layout.http_port(service)
        tls = HTTP_SERVICES[service][1]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))
        except OSError as exc:
            sock.close()
            raise SandboxError(f"http: {service} cannot listen on {HOST}:{port}: {exc}") from exc
        config = uvicorn.Config(
            self._apps[service],
            host=HOST,
            port=port,
            interface="asgi3",
            lifespan="off",
            ws="none",
            log_config=None,  # leave the host process's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            ssl_certfile=str(self.tls_dir / "server.pem") if tls else None,
            ssl_keyfile=str(self.tls_dir / "server-key.pem") if tls else None,
        )
        try:
            config.load()  # here rather than in serve(), so a bad certificate fails loudly now
        except (OSError, ValueError) as exc:
            sock.close()
            raise SandboxError(f"http: {service} cannot load its configuration: {exc}") from exc
        app = self._apps[service]
        app.closing = asyncio.Event()
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn-{service}")
        running = _Running(server=server, task=task, sock=sock, app=app)
        deadline = time.monotonic() + _OPEN_TIMEOUT_S
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                await self._close_running(running)
                reason = (
                    repr(task.exception()) if task.done() and not task.cancelled() else "timeout"
                )
                raise SandboxError(f"http: {service} did not start on port {port}: {reason}")
            await asyncio.sleep(0.01)
        self._running[service] = running
        self._started_at[service] = time.monotonic()

    async def _close(self, service: str) -> None:
        running = self._running.pop(service, None)
        if running is not None:
            await self._close_running(running)

    async def _close_running(self, running: _Running) -> None:
        server = running.server
        running.app.closing.set()
        server.should_exit = True
        # uvicorn closes its listeners within a tick (0.1 s) and asks idle connections to
        # close; a TLS connection then waits for the client's close_notify, which an idle
        # client never sends (asyncio waits 30 s), so once the listeners are shut every
        # remaining connection is cut: a service that is down holds no socket.
        deadline = time.monotonic() + _CLOSE_TIMEOUT_S
        while (
            not running.task.done()
            and any(listener.is_serving() for listener in getattr(server, "servers", []))
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        for connection in list(server.server_state.connections):
            connection.transport.abort()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            # Only a wedged app task gets here (slow requests end on `closing`); drop it.
            running.server.force_exit = True
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        finally:
            for listener in getattr(running.server, "servers", []):
                listener.close()
            running.sock.close()

    async def _close_all(self) -> None:
        await asyncio.gather(*(self._close(service) for service in list(self._running)))

    async def _restart(self, service: str) -> None:
        await self._close(service)
        await self._open(service)

    def _call(self, work: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        """Run ``work()`` on the event loop from a control thread and wait, bounded."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            raise SandboxError(f"http: cannot {what}: the services are not running (start first)")
        future = asyncio.run_coroutine_threadsafe(work(), loop)
        try:
            return future.result(timeout=_CONTROL_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise SandboxError(
                f"http: {what} did not finish within {_CONTROL_TIMEOUT_S:.0f} s"
            ) from None

    # ------------------------------------------------------------------ faults

    def faults(self) -> dict[str, list[str]]:
        """Fault name -> services it applies to."""
        everyone = list(HTTP_SERVICES)
        known: dict[str, list[str]] = {fault: everyone for fault in EVERY_SERVICE_FAULTS}
        known["cert_expiring"] = [PAYMENT_SERVICE]
        known["login_failures"] = [USER_SERVICE]
        return known

    def active_faults(self) -> dict[str, list[str]]:
        """Services with faults in force -> their fault names, sorted."""
        return {
            service: sorted(self._board.of(service))
            for service in HTTP_SERVICES
            if self._board.of(service)
        }

    def inject(self, fault: str, target: str) -> None:
        """Put ``fault`` on service ``target``; it stays until healed."""
        self.check_fault(fault, target)
        with self._control:
            if self._thread is None:
                raise SandboxError(f"http: cannot inject {fault!r}: services are not running")
            if self._board.has(target, fault):
                return
            if fault == "down":
                self._call(functools.partial(self._close, target), f"close {target}")
            elif fault == "cert_expiring":
                self._reissue_cert(EXPIRING_VALIDITY_DAYS)
            self._board.add(target, fault)

    def heal(self, target: str | None = None) -> None:
        """Undo every fault on ``target`` (a service name), or on every service."""
        if target is not None and target not in HTTP_SERVICES:
            raise SandboxError(
                f"http: unknown target {target!r} (known: {', '.join(HTTP_SERVICES)})"
            )
        with self._control:
            for service in [target] if target is not None else list(HTTP_SERVICES):
                active = self._board.of(service)
                if not active:
                    continue
                if "cert_expiring" in active:
                    self._reissue_cert(NORMAL_VALIDITY_DAYS)
                self._board.clear(service)
                if "down" in active:
                    self._call(functools.partial(self._open, service), f"reopen {service}")

    def _reissue_cert(self, days: float) -> None:
        """Replace payment-gateway's certificate and restart it (if it is up) to serve it."""
        if self._authority is None:
            raise SandboxError("http: no certificate authority (start first)")
        issue_server_cert(self._authority, self.tls_dir, days)
        if not self._board.has(PAYMENT_SERVICE, "down"):
            restart = functools.partial(self._restart, PAYMENT_SERVICE)
            self._call(restart, f"restart {PAYMENT_SERVICE}")

    # ------------------------------------------------------------------ the apps

    def _build_app(self, service: str) -> _FaultInjector:
        routes = [Route("/health", self._health_endpoint(service), methods=["GET"])]
        if service == GATEWAY:
            routes += [
                Route("/v1/lobby", self._lobby, methods=["GET"]),
                Route("/v1/status", self._gateway_status, methods=["GET"]),
            ]
        elif service in PROVIDERS:
            routes += [
                Route("/v1/games", self._games_endpoint(service), methods=["GET"]),
                Route("/v1/rounds", self._rounds_endpoint(service), methods=["POST"]),
            ]
        elif service == PAYMENT_SERVICE:
            routes += [
                Route("/v1/payments", self._create_payment, methods=["POST"]),
                Route("/v1/payments/{payment_id}", self._get_payment, methods=["GET"]),
            ]
        elif service == USER_SERVICE:
            routes += [
                Route("/v1/login", self._login, methods=["POST"]),
                Route("/v1/sessions/stats", self._session_stats, methods=["GET"]),
            ]

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            slug = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
                exc.status_code, "error"
            )
            body = {"error": slug, "message": exc.detail, "service": service}
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
        return _FaultInjector(app, service, self._board, self.slow_ms / 1000, self.error_every)

    def _health_endpoint(self, service: str) -> Callable[[Request], Awaitable[Response]]:
        async def health(request: Request) -> Response:
            started = self._started_at.get(service, time.monotonic())
            return JSONResponse(
                {
                    "status": "ok",
                    "service": service,
                    "version": VERSIONS[service],
                    "uptime_s": round(time.monotonic() - started, 3),
                }
            )

        return health

    async def _lobby(self, request: Request) -> Response:
        games = [
            {**game, "provider": provider} for provider in PROVIDERS for game in GAMES[provider]
        ]
        return JSONResponse({"games": games, "count": len(games), "generated_at": _now_iso()})

    async def _gateway_status(self, request: Request) -> Response:
        """Probe every upstream's /health now, as a real gateway's status page does."""
        upstreams = [service for service in HTTP_SERVICES if service != GATEWAY]
        async with httpx.AsyncClient(
            verify=self._client_ssl or True, timeout=_UPSTREAM_TIMEOUT_S
        ) as client:
            checks = await asyncio.gather(*(self._check_upstream(client, s) for s in upstreams))
        report = dict(zip(upstreams, checks, strict=True))
        healthy = all(check["status"] == "up" for check in checks)
        return JSONResponse(
            {
                "service": GATEWAY,
                "status": "ok" if healthy else "degraded",
                "upstreams": report,
                "checked_at": _now_iso(),
            }
        )

    async def _check_upstream(self, client: httpx.AsyncClient, service: str) -> dict[str, Any]:
        url = f"{self.url(service)}/health"
        began = time.monotonic()
        http_status: int | None = None
        error: str | None = None
        try:
            response = await client.get(url)
            http_status = response.status_code
            if response.status_code != 200:
                error = f"HTTP {response.status_code}"
            elif response.json().get("status") != "ok":
                error = "health body does not say ok"
        except httpx.TimeoutException:
            error = f"no answer within {_UPSTREAM_TIMEOUT_S:.1f} s"
        except httpx.ConnectError as exc:
            error = f"connect failed: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            error = "health body is not a JSON object"
        return {
            "url": url,
            "status": "up" if error is None else "down",
            "http_status": http_status,
            "latency_ms": round((time.monotonic() - began) * 1000, 1),
            "error": error,
        }

    def _games_endpoint(self, provider: str) -> Callable[[Request], Awaitable[Response]]:
        async def games(request: Request) -> Response:
            listed = GAMES[provider]
            return JSONResponse({"provider": provider, "games": listed, "count": len(listed)})

        return games

    def _rounds_endpoint(self, provider: str) -> Callable[[Request], Awaitable[Response]]:
        catalogue = {game["id"]: game for game in GAMES[provider]}

        async def start_round(request: Request) -> Response:
            body = await _json_object(request)
            game_id = _field(body, "game_id", str)
            player_id = _field(body, "player_id", str)
            stake = _field(body, "stake", (int, float))
            game = catalogue.get(game_id)
            if game is None:
                raise HTTPException(404, f"{provider} has no game {game_id!r}")
            if not game["min_stake"] <= stake <= game["max_stake"]:
                raise HTTPException(
                    400,
                    f"stake {stake} outside {game['min_stake']}..{game['max_stake']} for {game_id}",
                )
            seed = secrets.token_bytes(32)
            record = {
                "round_id": f"rnd_{uuid.uuid4().hex[:16]}",
                "provider": provider,
                "game_id": game_id,
                "player_id": player_id,
                "stake": stake,
                "currency": "EUR",
                "status": "open",
                # The seed stays secret until the round closes; its hash commits to it now.
                "rng_seed_hash": hashlib.sha256(seed).hexdigest(),
                "created_at": _now_iso(),
            }
            self._rounds[record["round_id"]] = record
            return JSONResponse(record, status_code=201)

        return start_round

    async def _create_payment(self, request: Request) -> Response:
        body = await _json_object(request)
        amount = _field(body, "amount", (int, float))
        currency = _field(body, "currency", str)
        player_id = _field(body, "player_id", str)
        if amount <= 0:
            raise HTTPException(400, f"amount must be positive, not {amount}")
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise HTTPException(400, f"currency must be an ISO 4217 code (EUR), not {currency!r}")
        record = {
            "id": f"pay_{uuid.uuid4().hex[:20]}",
            "status": "approved",
            "amount": amount,
            "currency": currency,
            "player_id": player_id,
            "authorization_code": f"{secrets.randbelow(1_000_000):06d}",
            "created_at": _now_iso(),
        }
        self._payments[record["id"]] = record
        return JSONResponse(record, status_code=201)

    async def _get_payment(self, request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        record = self._payments.get(payment_id)
        if record is None:
            raise HTTPException(404, f"no payment {payment_id!r}")
        return JSONResponse(record)

    async def _login(self, request: Request) -> Response:
        body = await _json_object(request)
        username = _field(body, "username", str)
        password = _field(body, "password", str)
        now = time.monotonic()
        if self._board.has(USER_SERVICE, "login_failures") or password != LOGIN_PASSWORD:
            self._logins.append((now, False))
            return JSONResponse(
                {
                    "error": "invalid_credentials",
                    "message": f"login rejected for {username!r}",
                    "service": USER_SERVICE,
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="sandbox"'},
            )
        self._logins.append((now, True))
        token = secrets.token_urlsafe(24)
        session = {
            "session_id": f"ses_{uuid.uuid4().hex[:16]}",
            "username": username,
            "token": token,
            "expires_in_s": 3600,
            "created_at": _now_iso(),
        }
        self._sessions[token] = session
        return JSONResponse(session)

    async def _session_stats(self, request: Request) -> Response:
        now = time.monotonic()
        while self._logins and now - self._logins[0][0] > STATS_WINDOW_S:
            self._logins.popleft()
        succeeded = sum(1 for _, ok in self._logins if ok)
        failed = len(self._logins) - succeeded
        spike = FAILED_LOGINS_SPIKE if self._board.has(USER_SERVICE, "login_failures") else 0
        return JSONResponse(
            {
                "active_sessions": BASELINE_ACTIVE_SESSIONS + len(self._sessions),
                "failed_logins_5m": BASELINE_FAILED_LOGINS_5M + failed + spike,
                "logins_5m": BASELINE_LOGINS_5M + succeeded,
            }
        )


async def _json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise HTTPException(400, f"request body must be a JSON object, not {type(body).__name__}")
    return body


def _field(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``body[key]`` if present and of ``kind`` (bools are not numbers), else a 400."""
    value = body.get(key)
    if value is None:
        raise HTTPException(400, f"missing field {key!r}")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HTTPException(400, f"field {key!r} has the wrong type ({type(value).__name__})")
    return value
