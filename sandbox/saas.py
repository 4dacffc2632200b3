"""Local stand-ins of the SaaS the team is reached through: the Slack Web API, the Telegram
Bot API and an SMS gateway, each a small Starlette app served by uvicorn on 127.0.0.1.

They speak the real services' request and response shapes, so Floorwatch's real clients
(slack-sdk's ``WebClient``, httpx) talk to them unchanged:

- Slack (``/api/<method>``): ``auth.test``, ``chat.postMessage``, ``chat.update``; a Bearer
  token (or a ``token`` argument), JSON or form bodies as slack-sdk sends them; errors as
  Slack gives them: HTTP 200 with ``{"ok": false, "error": "invalid_auth"}``,
  ``not_authed``, ``token_revoked``, ``channel_not_found``, ``message_not_found``,
  ``thread_not_found``, ``no_text``, ``invalid_blocks``, ``msg_too_long``.
- Telegram (``/bot<TOKEN>/<method>``): ``getMe`` and ``sendMessage`` (JSON, form or query
  arguments, ``parse_mode=HTML`` checked, replies by ``reply_parameters``); errors as
  ``{"ok": false, "error_code": 401, "description": "Unauthorized"}``.
- SMS gateway: ``POST /v1/messages`` with ``Authorization: Bearer <key>`` and JSON
  ``{"from", "to", "text"}`` -> 201 ``{"id", "status": "queued", ...}``; an
  ``Idempotency-Key`` header makes a repeated request return the first message (200);
  401 ``unauthorized`` / ``api_key_revoked``, 422 ``invalid_number``.

Every port also serves ``/`` (an HTML page listing what all three received, newest first)
and ``/_sandbox/messages`` (the same as JSON). Faults, per stand-in:

- ``chat_down``      its listening socket is closed (connect is refused)
- ``token_revoked``  its credential is refused as revoked (Slack ``token_revoked``,
                     Telegram 401, SMS 401 ``api_key_revoked``)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from floorwatch.errors import SandboxError
from sandbox.component import Component
from sandbox.topology import HOST, SAAS_SERVICES, Layout

T = TypeVar("T")

SLACK, TELEGRAM, SMS = SAAS_SERVICES  # "slack", "telegram", "sms-gateway", in that order
PORT_OFFSETS: dict[str, int] = SAAS_SERVICES
FAULTS = ("chat_down", "token_revoked")

SLACK_TEAM = {"team": "Floorwatch Sandbox", "team_id": "T0SANDBOX1",
              "url": "https://floorwatch-sandbox.slack.com/"}
SLACK_BOT = {"user": "floorwatch", "user_id": "U0FLOORWT1", "bot_id": "B0FLOORWT1",
             "app_id": "A0FLOORWT1"}
# Channel name -> id: the sandbox workspace's channels.
SLACK_CHANNELS: dict[str, str] = {
    "ops-oncall": "C0OPSONCALL",
    "devops": "C0DEVOPS001",
    "backend": "C0BACKEND01",
    "general": "C0GENERAL01",
}
SLACK_BLOCK_TYPES = frozenset(
    {"section", "header", "context", "actions", "divider", "image", "rich_text", "input"}
)
SLACK_MAX_TEXT = 40000
TELEGRAM_BOT = {"id": 7000000001, "is_bot": True, "first_name": "Floorwatch",
                "username": "floorwatch_sandbox_bot"}
# Chat id -> title; "@floorwatch_ops" is the username of the ops channel.
TELEGRAM_CHATS: dict[int, dict[str, str]] = {
    -1001234567890: {"title": "Floorwatch backend", "type": "supergroup"},
    -1009876543210: {"title": "Floorwatch ops", "type": "channel", "username": "floorwatch_ops"},
}
TELEGRAM_MAX_TEXT = 4096
TELEGRAM_HTML_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
     "span", "tg-spoiler", "blockquote", "tg-emoji"}
)
SMS_SENDER = "Floorwatch"
SMS_MAX_TEXT = 1600
E164 = re.compile(r"\+[1-9][0-9]{6,14}")

_START_TIMEOUT_S = 10.0
_CONTROL_TIMEOUT_S = 8.0
_OPEN_TIMEOUT_S = 3.0
_CLOSE_TIMEOUT_S = 3.0


@dataclass
class _Running:
    server: uvicorn.Server
    task: asyncio.Task[None]
    sock: socket.socket


class SaasStandIns(Component):
    """Slack, Telegram and SMS stand-ins with fault injection (see the module docstring)."""

    name = "saas"
    chaos = False  # stand-ins for the team's chat, not the platform under watch

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self._control = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._running: dict[str, _Running] = {}
        self._faults: dict[str, set[str]] = {service: set() for service in PORT_OFFSETS}
        self._credentials: dict[str, str] = {}
        self._reset_state()

    def _reset_state(self) -> None:
        """Received messages; touched only on the event loop (or before it runs)."""
        self._slack_messages: dict[str, list[dict[str, Any]]] = {
            cid: [] for cid in SLACK_CHANNELS.values()
        }
        self._telegram_messages: dict[int, list[dict[str, Any]]] = {
            cid: [] for cid in TELEGRAM_CHATS
        }
        self._sms: list[dict[str, Any]] = []
        self._sms_keys: dict[str, dict[str, Any]] = {}
        self._log: list[dict[str, Any]] = []  # every service, in arrival order
        self._seq = 0

    # ------------------------------------------------------------------ description

    def port(self, service: str) -> int:
        return self.layout.saas_port(service)

    def url(self, service: str) -> str:
        return f"http://{HOST}:{self.port(service)}"

    @property
    def dir(self) -> Path:
        return self.layout.component_dir(self.name)

    @property
    def thread_name(self) -> str:
        """Name of the thread running the event loop, unique per sandbox (by base port)."""
        return f"sandbox-saas-{self.layout.base_port}"

    def credential_file(self, service: str) -> Path:
        """The file holding the stand-in's token (Slack, Telegram) or API key (SMS)."""
        return self.dir / {SLACK: "slack-bot-token", TELEGRAM: "telegram-bot-token",
                           SMS: "sms-api-key"}[service]

    def describe(self) -> dict[str, Any]:
        """Per stand-in: url, the API base a client is configured with, host, port, the
        credential file, the page listing messages and where messages can go."""
        out: dict[str, Any] = {}
        for service in PORT_OFFSETS:
            url = self.url(service)
            out[service] = {
                "kind": "saas",
                "url": url,
                "host": HOST,
                "port": self.port(service),
                "credential_file": str(self.credential_file(service)),
                "messages_url": f"{url}/",
            }
        out[SLACK] |= {"base_url": f"{self.url(SLACK)}/api/", "channels": dict(SLACK_CHANNELS),
                       "default_channel": "#ops-oncall"}
        chats = {str(cid): chat["title"] for cid, chat in TELEGRAM_CHATS.items()}
        out[TELEGRAM] |= {"base_url": self.url(TELEGRAM), "chats": chats,
                          "default_chat_id": str(next(iter(TELEGRAM_CHATS)))}
        out[SMS] |= {"base_url": self.url(SMS), "sender": SMS_SENDER}
        return out

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Write fresh credentials and open the three stand-ins; return once each listens."""
        with self._control:
            if self._thread is not None:
                raise SandboxError("saas: already started")
            self._credentials = {
                SLACK: f"xoxb-{secrets.randbelow(10**12):012d}-{secrets.randbelow(10**12):012d}-"
                       f"{secrets.token_hex(12)}",
                TELEGRAM: f"{TELEGRAM_BOT['id']}:{secrets.token_urlsafe(26)[:35]}",
                SMS: f"sk_sandbox_{secrets.token_hex(16)}",
            }
            for service, value in self._credentials.items():
                path = self.credential_file(service)
                path.write_text(value + "\n")
                path.chmod(0o600)
            self._reset_state()
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stopping = asyncio.Event()
            ready: Future[None] = Future()
            self._thread = threading.Thread(
                target=self._run_loop, args=(loop, ready),
                name=self.thread_name, daemon=True,
            )
            self._thread.start()
            try:
                ready.result(timeout=_START_TIMEOUT_S)
            except TimeoutError:
                self._shutdown()
                raise SandboxError(
                    f"saas: stand-ins not ready within {_START_TIMEOUT_S:.0f} s"
                ) from None
            except (SandboxError, OSError) as exc:
                self._shutdown()
                raise SandboxError(f"saas: cannot start: {exc}") from exc

    def stop(self) -> None:
        """Close every stand-in, end the loop thread and forget all faults; safe to repeat."""
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
                    f"saas: event loop thread did not end within {_START_TIMEOUT_S:.0f} s"
                )
        self._thread = None
        self._loop = None
        self._stopping = None
        for faults in self._faults.values():
            faults.clear()

    def _run_loop(self, loop: asyncio.AbstractEventLoop, ready: Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            if not ready.done():
                ready.set_exception(SandboxError("saas: event loop thread ended before ready"))

    async def _serve(self, ready: Future[None]) -> None:
        assert self._stopping is not None
        try:
            for service in PORT_OFFSETS:
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
        port = self.port(service)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))
        except OSError as exc:
            sock.close()
            raise SandboxError(f"saas: {service} cannot listen on {HOST}:{port}: {exc}") from exc
        config = uvicorn.Config(
            self._app(service), host=HOST, port=port, interface="asgi3", lifespan="off",
            ws="none", log_config=None, log_level="warning", access_log=False,
            timeout_graceful_shutdown=1,
        )
        config.load()
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn-{service}")
        running = _Running(server=server, task=task, sock=sock)
        deadline = time.monotonic() + _OPEN_TIMEOUT_S
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                await self._close_running(running)
                reason = (
                    repr(task.exception()) if task.done() and not task.cancelled() else "timeout"
                )
                raise SandboxError(f"saas: {service} did not start on port {port}: {reason}")
            await asyncio.sleep(0.01)
        self._running[service] = running

    async def _close(self, service: str) -> None:
        running = self._running.pop(service, None)
        if running is not None:
            await self._close_running(running)

    async def _close_running(self, running: _Running) -> None:
        server = running.server
        server.should_exit = True
        deadline = time.monotonic() + _CLOSE_TIMEOUT_S
        while (
            not running.task.done()
            and any(listener.is_serving() for listener in getattr(server, "servers", []))
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        # A keep-alive client (slack-sdk, httpx) would otherwise hold its connection open
        # and reach a stand-in that is meant to be down.
        for connection in list(server.server_state.connections):
            connection.transport.abort()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            server.force_exit = True
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        finally:
            for listener in getattr(server, "servers", []):
                listener.close()
            running.sock.close()

    async def _close_all(self) -> None:
        await asyncio.gather(*(self._close(service) for service in list(self._running)))

    def _call(self, work: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        """Run ``work()`` on the event loop from a control thread and wait, bounded."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            raise SandboxError(f"saas: cannot {what}: the stand-ins are not running (start first)")
        future = asyncio.run_coroutine_threadsafe(work(), loop)
        try:
            return future.result(timeout=_CONTROL_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise SandboxError(
                f"saas: {what} did not finish within {_CONTROL_TIMEOUT_S:.0f} s"
            ) from None

    # ------------------------------------------------------------------ faults

    def faults(self) -> dict[str, list[str]]:
        """Fault name -> stand-ins it applies to."""
        return {fault: list(PORT_OFFSETS) for fault in FAULTS}

    def active_faults(self) -> dict[str, list[str]]:
        return {service: sorted(found) for service, found in self._faults.items() if found}

    def inject(self, fault: str, target: str) -> None:
        """Put ``fault`` on stand-in ``target``; it stays until healed."""
        self.check_fault(fault, target)
        with self._control:
            if self._thread is None:
                raise SandboxError(f"saas: cannot inject {fault!r}: stand-ins are not running")
            if fault in self._faults[target]:
                return
            if fault == "chat_down":
                self._call(functools.partial(self._close, target), f"close {target}")
            self._faults[target].add(fault)

    def heal(self, target: str | None = None) -> None:
        """Undo every fault on ``target`` (a stand-in name), or on all of them."""
        if target is not None and target not in PORT_OFFSETS:
            raise SandboxError(
                f"saas: unknown target {target!r} (known: {', '.join(PORT_OFFSETS)})"
            )
        with self._control:
            for service in [target] if target is not None else list(PORT_OFFSETS):
                active = set(self._faults[service])
                self._faults[service].clear()
                if "chat_down" in active:
                    self._call(functools.partial(self._open, service), f"reopen {service}")

    def received(self) -> dict[str, list[dict[str, Any]]]:
        """What every stand-in received so far (a copy), per service, oldest first."""

        async def snapshot() -> dict[str, list[dict[str, Any]]]:
            return self._snapshot()

        return self._call(snapshot, "read the received messages")

    def _snapshot(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {SLACK: [], TELEGRAM: [], SMS: []}
        for entry in self._log:
            found[entry["service"]].append(json.loads(json.dumps(entry["message"])))
        return found

    def _revoked(self, service: str) -> bool:
        return "token_revoked" in self._faults[service]

    # ------------------------------------------------------------------ the apps

    def _app(self, service: str) -> Starlette:
        routes = [
            Route("/", self._page, methods=["GET"]),
            Route("/_sandbox/messages", self._messages_json, methods=["GET"]),
        ]
        if service == SLACK:
            routes.append(Route("/api/{method}", self._slack, methods=["GET", "POST"]))
        elif service == TELEGRAM:
            routes.append(Route("/bot{token}/{method}", self._telegram, methods=["GET", "POST"]))
        else:
            routes += [
                Route("/v1/messages", self._sms_send, methods=["POST"]),
                Route("/v1/messages/{message_id}", self._sms_get, methods=["GET"]),
            ]
        return Starlette(routes=routes)

    def _record(self, service: str, destination: str, message: dict[str, Any]) -> None:
        self._log.append({"service": service, "destination": destination, "message": message,
                          "received_at": time.time()})

    async def _messages_json(self, _request: Request) -> Response:
        return JSONResponse(self._snapshot())

    async def _page(self, _request: Request) -> Response:
        rows = []
        for entry in reversed(self._log[-500:]):
            message = entry["message"]
            text = message.get("text", "")
            thread = message.get("thread_ts") or (message.get("reply_to_message") or {}).get(
                "message_id", "")
            edited = " (edited)" if message.get("edited") else ""
            rows.append(
                "<tr>"
                f"<td>{time.strftime('%H:%M:%S', time.localtime(entry['received_at']))}</td>"
                f"<td>{html.escape(entry['service'])}</td>"
                f"<td>{html.escape(entry['destination'])}</td>"
                f"<td>{html.escape(str(thread))}</td>"
                f"<td><pre>{html.escape(str(text))}{edited}</pre></td>"
                "</tr>"
            )
        body = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='5'><title>Sandbox chat</title>"
            "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px 8px;"
            "border-bottom:1px solid #ddd}pre{white-space:pre-wrap;margin:0}</style></head>"
            f"<body><h1>Messages received by the sandbox's chat stand-ins</h1>"
            f"<p>{len(self._log)} messages, newest first.</p><table>"
            "<tr><th>time</th><th>service</th><th>to</th><th>thread</th><th>text</th></tr>"
            + "".join(rows) + "</table></body></html>"
        )
        return HTMLResponse(body)

    # -- Slack -------------------------------------------------------------------------

    async def _slack(self, request: Request) -> Response:
        method = request.path_params["method"]
        try:
            args = await _slack_arguments(request)
        except ValueError as exc:
            return _slack_error("invalid_form_data", str(exc))
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        token = token or str(args.pop("token", "") or "")
        if not token:
            return _slack_error("not_authed")
        if token != self._credentials[SLACK]:
            return _slack_error("invalid_auth")
        if self._revoked(SLACK):
            return _slack_error("token_revoked")
        handlers = {"auth.test": self._slack_auth_test, "chat.postMessage": self._slack_post,
                    "chat.update": self._slack_update}
        handler = handlers.get(method)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method", "req_method": method},
                                status_code=404)
        return handler(args)

    def _slack_auth_test(self, _args: dict[str, Any]) -> Response:
        return JSONResponse({"ok": True, **SLACK_TEAM, **SLACK_BOT,
                             "is_enterprise_install": False})

    def _slack_channel(self, value: object, by_name: bool) -> str | None:
        text = str(value or "").strip()
        if text in self._slack_messages:
            return text
        if by_name:
            return SLACK_CHANNELS.get(text.removeprefix("#"))
        return None

    def _slack_content(self, args: dict[str, Any]) -> tuple[str, list[Any]] | Response:
        text = str(args.get("text") or "")
        blocks = args.get("blocks") or []
        if not text and not blocks and not args.get("attachments"):
            return _slack_error("no_text")
        if len(text) > SLACK_MAX_TEXT:
            return _slack_error("msg_too_long")
        problems = _block_problems(blocks)
        if problems:
            return _slack_error("invalid_blocks", *problems)
        return text, blocks

    def _next_ts(self) -> str:
        self._seq += 1
        return f"{int(time.time())}.{self._seq:06d}"

    def _slack_post(self, args: dict[str, Any]) -> Response:
        channel = self._slack_channel(args.get("channel"), by_name=True)
        if channel is None:
            return _slack_error("channel_not_found")
        content = self._slack_content(args)
        if isinstance(content, Response):
            return content
        text, blocks = content
        thread_ts = str(args.get("thread_ts") or "") or None
        parent = None
        if thread_ts is not None:
            parent = next((m for m in self._slack_messages[channel]
                           if m["ts"] == thread_ts and m.get("thread_ts", thread_ts) == thread_ts),
                          None)
            if parent is None:
                return _slack_error("thread_not_found")
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message", "subtype": "bot_message", "text": text, "blocks": blocks,
            "user": SLACK_BOT["user_id"], "bot_id": SLACK_BOT["bot_id"],
            "app_id": SLACK_BOT["app_id"], "team": SLACK_TEAM["team_id"], "ts": ts,
        }
        if thread_ts is not None and parent is not None:
            message["thread_ts"] = thread_ts
            message["parent_user_id"] = parent["user"]
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["thread_ts"] = thread_ts
        self._slack_messages[channel].append(message)
        self._record(SLACK, channel, message)
        return JSONResponse({"ok": True, "channel": channel, "ts": ts, "message": message})

    def _slack_update(self, args: dict[str, Any]) -> Response:
        # chat.update takes a channel id only, as Slack's does.
        channel = self._slack_channel(args.get("channel"), by_name=False)
        if channel is None:
            return _slack_error("channel_not_found")
        ts = str(args.get("ts") or "")
        message = next((m for m in self._slack_messages[channel] if m["ts"] == ts), None)
        if message is None:
            return _slack_error("message_not_found")
        content = self._slack_content(args)
        if isinstance(content, Response):
            return content
        message["text"], message["blocks"] = content
        message["edited"] = {"user": SLACK_BOT["user_id"], "ts": self._next_ts()}
        return JSONResponse({"ok": True, "channel": channel, "ts": ts, "text": message["text"],
                             "message": message})

    # -- Telegram ----------------------------------------------------------------------

    async def _telegram(self, request: Request) -> Response:
        token = request.path_params["token"]
        method = request.path_params["method"]
        if token != self._credentials[TELEGRAM] or self._revoked(TELEGRAM):
            return _telegram_error(401, "Unauthorized")
        try:
            args = dict(request.query_params) | await _body_arguments(request)
        except ValueError as exc:
            return _telegram_error(400, f"Bad Request: {exc}")
        if method == "getMe":
            return JSONResponse({"ok": True, "result": TELEGRAM_BOT})
        if method == "sendMessage":
            return self._telegram_send(args)
        return _telegram_error(404, "Not Found")

    def _telegram_chat(self, value: object) -> int | None:
        text = str(value if value is not None else "").strip()
        if text.startswith("@"):
            return next((cid for cid, chat in TELEGRAM_CHATS.items()
                         if chat.get("username") == text[1:]), None)
        try:
            chat_id = int(text)
        except ValueError:
            return None
        return chat_id if chat_id in TELEGRAM_CHATS else None

    def _telegram_send(self, args: dict[str, Any]) -> Response:
        if args.get("chat_id") in (None, ""):
            return _telegram_error(400, "Bad Request: chat_id is empty")
        chat_id = self._telegram_chat(args["chat_id"])
        if chat_id is None:
            return _telegram_error(400, "Bad Request: chat not found")
        text = str(args.get("text") or "")
        if not text.strip():
            return _telegram_error(400, "Bad Request: message text is empty")
        plain = text
        if str(args.get("parse_mode") or "").upper() == "HTML":
            try:
                plain = _telegram_html_text(text)
            except ValueError as exc:
                return _telegram_error(400, f"Bad Request: can't parse entities: {exc}")
        if len(plain) > TELEGRAM_MAX_TEXT:
            return _telegram_error(400, "Bad Request: message is too long")
        try:
            reply_to = _reply_target(args)
        except ValueError as exc:
            return _telegram_error(400, f"Bad Request: {exc}")
        chat = TELEGRAM_CHATS[chat_id]
        message: dict[str, Any] = {
            "message_id": len(self._telegram_messages[chat_id]) + 1,
            "from": TELEGRAM_BOT,
            "chat": {"id": chat_id, **chat},
            "date": int(time.time()),
            "text": plain,
        }
        if reply_to is not None:
            parent = next((m for m in self._telegram_messages[chat_id]
                           if m["message_id"] == reply_to), None)
            if parent is not None:
                message["reply_to_message"] = {k: v for k, v in parent.items()
                                               if k != "reply_to_message"}
            elif not _allows_missing_reply(args):
                return _telegram_error(400, "Bad Request: message to be replied not found")
        self._telegram_messages[chat_id].append(message)
        self._record(TELEGRAM, str(chat_id), message | {"html": text})
        return JSONResponse({"ok": True, "result": message})

    # -- SMS gateway ---------------------------------------------------------------------

    def _sms_auth(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return _sms_error(401, "unauthorized", "missing bearer API key")
        if header[7:].strip() != self._credentials[SMS]:
            return _sms_error(401, "unauthorized", "invalid API key")
        if self._revoked(SMS):
            return _sms_error(401, "api_key_revoked", "this API key has been revoked")
        return None

    async def _sms_send(self, request: Request) -> Response:
        refused = self._sms_auth(request)
        if refused is not None:
            return refused
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _sms_error(415, "unsupported_media_type", "send application/json")
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _sms_error(400, "invalid_request", f"body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return _sms_error(400, "invalid_request", "body must be a JSON object")
        for key in ("from", "to", "text"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                return _sms_error(400, "invalid_request", f"missing or empty field {key!r}")
        if not E164.fullmatch(body["to"]):
            return _sms_error(422, "invalid_number",
                              f"{body['to']!r} is not an E.164 number such as +35699123456")
        if len(body["text"]) > SMS_MAX_TEXT:
            return _sms_error(422, "text_too_long", f"text exceeds {SMS_MAX_TEXT} characters")
        repeat_key = request.headers.get("idempotency-key")
        if repeat_key and repeat_key in self._sms_keys:
            return JSONResponse(self._sms_keys[repeat_key], status_code=200)
        text = body["text"]
        record = {
            "id": f"msg_{secrets.token_hex(10)}", "status": "queued", "from": body["from"],
            "to": body["to"], "text": text, "segments": max(1, -(-len(text) // 153)),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._sms.append(record)
        if repeat_key:
            self._sms_keys[repeat_key] = record
        self._record(SMS, body["to"], record)
        return JSONResponse(record, status_code=201)

    async def _sms_get(self, request: Request) -> Response:
        refused = self._sms_auth(request)
        if refused is not None:
            return refused
        wanted = request.path_params["message_id"]
        record = next((r for r in self._sms if r["id"] == wanted), None)
        if record is None:
            return _sms_error(404, "not_found", f"no message {wanted!r}")
        return JSONResponse(record)


# -- request parsing and error shapes ---------------------------------------------------------


async def _body_arguments(request: Request) -> dict[str, Any]:
    """Arguments from a JSON, form or multipart body (empty for no body)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if not raw:
        return {}
    if kind == "application/json":
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ValueError("the JSON body must be an object")
        return parsed
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    if kind == "multipart/form-data":
        form = await request.form()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    raise ValueError(f"unsupported content type {kind or 'none'!r}")


async def _slack_arguments(request: Request) -> dict[str, Any]:
    """Slack method arguments as slack-sdk sends them: JSON, or a form whose ``blocks`` is a
    JSON string; query arguments too."""
    args = dict(request.query_params) | await _body_arguments(request)
    if isinstance(args.get("blocks"), str):
        try:
            args["blocks"] = json.loads(args["blocks"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"blocks is not valid JSON: {exc}") from exc
    return args


def _slack_error(error: str, *messages: str) -> Response:
    body: dict[str, Any] = {"ok": False, "error": error}
    if messages:
        body["response_metadata"] = {"messages": [f"[ERROR] {m}" for m in messages]}
    # Slack answers API errors with HTTP 200 and ok: false.
    return JSONResponse(body)


def _telegram_error(code: int, description: str) -> Response:
    return JSONResponse({"ok": False, "error_code": code, "description": description},
                        status_code=code)


def _sms_error(status: int, error: str, message: str) -> Response:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def _text_object_problems(value: object, where: str, limit: int) -> list[str]:
    if not isinstance(value, dict) or value.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where} must be a text object with type plain_text or mrkdwn"]
    text = value.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}.text must be a non-empty string"]
    if len(text) > limit:
        return [f"{where}.text must be at most {limit} characters"]
    return []


def _block_problems(blocks: object) -> list[str]:
    """What Slack would refuse in ``blocks`` (the limits Floorwatch's rendering must keep)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    if len(blocks) > 50:
        return ["no more than 50 blocks are allowed"]
    problems: list[str] = []
    for index, block in enumerate(blocks):
        where = f"blocks[{index}]"
        if not isinstance(block, dict) or block.get("type") not in SLACK_BLOCK_TYPES:
            problems.append(f"{where} has an unknown or missing type")
            continue
        kind = block["type"]
        if kind == "header":
            problems += _text_object_problems(block.get("text"), f"{where}.text", 150)
            if isinstance(block.get("text"), dict) and block["text"].get("type") != "plain_text":
                problems.append(f"{where}.text must be plain_text")
        elif kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                problems.append(f"{where} needs text or fields")
            if "text" in block:
                problems += _text_object_problems(block["text"], f"{where}.text", 3000)
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    problems.append(f"{where}.fields must be an array of at most 10 items")
                else:
                    for i, field in enumerate(fields):
                        problems += _text_object_problems(field, f"{where}.fields[{i}]", 2000)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{where}.elements must hold 1 to 10 items")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                problems.append(f"{where}.elements must hold 1 to 25 items")
            else:
                for i, element in enumerate(elements):
                    if not isinstance(element, dict):
                        problems.append(f"{where}.elements[{i}] must be an object")
                        continue
                    if element.get("type") == "button":
                        problems += _text_object_problems(
                            element.get("text"), f"{where}.elements[{i}].text", 75)
                        url = element.get("url")
                        if url is not None and (not isinstance(url, str) or len(url) > 3000):
                            problems.append(f"{where}.elements[{i}].url is invalid")
    return problems


def _allows_missing_reply(args: dict[str, Any]) -> bool:
    params = args.get("reply_parameters")
    if isinstance(params, str):
        with contextlib.suppress(json.JSONDecodeError):
            params = json.loads(params)
    return isinstance(params, dict) and params.get("allow_sending_without_reply") is True


def _reply_target(args: dict[str, Any]) -> int | None:
    """The message id a sendMessage replies to (``reply_parameters`` or the older
    ``reply_to_message_id``), None for no reply; ValueError when malformed."""
    params = args.get("reply_parameters")
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError as exc:
            raise ValueError(f"reply_parameters is not valid JSON: {exc}") from exc
    if isinstance(params, dict):
        value: object = params.get("message_id")
    elif params is None:
        value = args.get("reply_to_message_id")
    else:
        raise ValueError("reply_parameters must be an object")
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"message_id {value!r} is not a number") from None


class _TelegramHtml(HTMLParser):
    """Checks Telegram's HTML subset (known tags, properly nested) and keeps the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_HTML_TAGS:
            raise ValueError(f"unsupported start tag \"{tag}\"")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            raise ValueError(f"can't find end tag corresponding to start tag \"{tag}\"")
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _telegram_html_text(text: str) -> str:
    """The plain text of Telegram HTML; ValueError naming what Telegram would refuse."""
    if re.search(r"<(?![a-zA-Z/])", text):
        raise ValueError("unescaped '<' (use &lt;)")
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.open:
        raise ValueError(f"unclosed start tag \"{parser.open[-1]}\"")
    return "".join(parser.text)
