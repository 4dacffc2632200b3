"""The sandbox daemon: runs every part of the simulated platform in one background process.

``floorwatch sandbox up`` starts ``python -m sandbox.daemon --dir DIR`` in its own session;
the daemon starts the parts in parallel, writes ``DIR/sandbox.json`` (what runs where) when
all are ready, and answers ``inject``/``heal``/``status``/``down`` on a Unix socket
(``DIR/control.sock``), so no TCP port beyond the platform's own is opened. On ``down``,
SIGTERM or SIGINT it stops every part and removes its files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from floorwatch.errors import SandboxError
from sandbox.component import Component
from sandbox.topology import DEFAULT_BASE_PORT, DEFAULT_TERMINALS, HOST, Layout

log = logging.getLogger("sandbox")

STATE_FILE = "sandbox.json"
SOCKET_FILE = "control.sock"
LOG_FILE = "sandbox.log"
PID_FILE = "sandbox.pid"


def build_components(layout: Layout, gamedb_backend: str = "sqlite") -> list[Component]:
    """Every part of the platform, in start order (independent of each other)."""
    from sandbox.dns import SandboxDns
    from sandbox.gamedb import GameDatabase
    from sandbox.hall import GamingHall
    from sandbox.http_services import HttpServices
    from sandbox.saas import SaasStandIns
    from sandbox.servers import AppServers

    return [
        HttpServices(layout),
        AppServers(layout),
        SandboxDns(layout),
        GameDatabase(layout, backend=gamedb_backend),
        GamingHall(layout),
        SaasStandIns(layout),
    ]


class Platform:
    """The running parts, with fault routing and the chaos loop."""

    def __init__(self, layout: Layout, components: list[Component]) -> None:
        self.layout = layout
        self.components = components
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.chaos_interval: float | None = None
        self.history: list[dict[str, Any]] = []

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start all parts in parallel; if one fails, stop those that started and raise."""
        started: list[Component] = []
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=len(self.components)) as pool:
            futures = {pool.submit(self._timed_start, c): c for c in self.components}
            for future, component in futures.items():
                try:
                    future.result()
                    started.append(component)
                except Exception as exc:  # noqa: BLE001 - any part failing is reported with its name
                    errors.append(f"{component.name}: {type(exc).__name__}: {exc}")
        if errors:
            for component in started:
                self._safe_stop(component)
            raise SandboxError("sandbox parts failed to start:\n  " + "\n  ".join(errors))

    def _timed_start(self, component: Component) -> None:
        t0 = time.monotonic()
        component.start()
        log.info("%s ready in %.2f s", component.name, time.monotonic() - t0)

    def stop(self) -> None:
        self._stop.set()
        with ThreadPoolExecutor(max_workers=len(self.components)) as pool:
            list(pool.map(self._safe_stop, self.components))

    @staticmethod
    def _safe_stop(component: Component) -> None:
        try:
            component.stop()
        except Exception:
            log.exception("%s failed to stop cleanly", component.name)

    # -- faults ------------------------------------------------------------------------
    def catalogue(self) -> dict[str, dict[str, list[str]]]:
        """Component name -> fault -> targets."""
        return {c.name: c.faults() for c in self.components}

    def _owner(self, fault: str, target: str) -> Component:
        known_fault = False
        for component in self.components:
            faults = component.faults()
            if fault in faults:
                known_fault = True
                if target in faults[fault]:
                    return component
        if not known_fault:
            names = sorted({f for c in self.components for f in c.faults()})
            raise SandboxError(f"unknown fault {fault!r}; known faults: {', '.join(names)}")
        targets = sorted({t for c in self.components for t in c.faults().get(fault, [])})
        raise SandboxError(
            f"fault {fault!r} does not apply to {target!r}; it applies to: {', '.join(targets)}"
        )

    def inject(self, fault: str, target: str, source: str = "manual") -> dict[str, Any]:
        with self._lock:
            component = self._owner(fault, target)
            component.inject(fault, target)
            entry = {"ts": time.time(), "op": "inject", "fault": fault, "target": target,
                     "source": source}
            self.history.append(entry)
        log.info("injected %s into %s (%s)", fault, target, source)
        return entry

    def heal(self, target: str | None = None) -> dict[str, Any]:
        with self._lock:
            if target is None:
                for component in self.components:
                    component.heal(None)
            else:
                owners = [c for c in self.components if _targets_of(c) & {target}]
                if not owners:
                    raise SandboxError(f"unknown sandbox target {target!r}")
                for component in owners:
                    component.heal(target)
            entry = {"ts": time.time(), "op": "heal", "target": target}
            self.history.append(entry)
        log.info("healed %s", target or "everything")
        return entry

    def active_faults(self) -> dict[str, list[str]]:
        active: dict[str, list[str]] = {}
        for component in self.components:
            for target, faults in component.active_faults().items():
                if faults:
                    active.setdefault(target, []).extend(faults)
        return active

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "chaos_interval_s": self.chaos_interval,
            "active_faults": self.active_faults(),
            "history": self.history[-50:],
        }

    def describe(self) -> dict[str, Any]:
        return {
            "host": HOST,
            "dir": str(self.layout.dir),
            "base_port": self.layout.base_port,
            "terminals": self.layout.terminals,
            "pid": os.getpid(),
            "control_socket": str(self.layout.dir / SOCKET_FILE),
            "components": {c.name: c.describe() for c in self.components},
            "faults": self.catalogue(),
        }

    # -- chaos -------------------------------------------------------------------------
    def run_chaos(self, interval: float, rng: random.Random) -> None:
        """Inject one random fault every ``interval`` seconds until stopped; never heals."""
        self.chaos_interval = interval
        while not self._stop.wait(interval):
            active = self.active_faults()
            choices = [
                (fault, target)
                for component in self.components if component.chaos
                for fault, targets in component.faults().items()
                for target in targets
                if fault not in active.get(target, [])
            ]
            if not choices:
                continue
            fault, target = rng.choice(choices)
            try:
                self.inject(fault, target, source="chaos")
            except SandboxError as exc:
                log.warning("chaos could not inject %s into %s: %s", fault, target, exc)


def _targets_of(component: Component) -> set[str]:
    return {t for targets in component.faults().values() for t in targets}


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _control_app(platform: Platform, shutdown: Callable[[], None]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(platform.status())

    async def describe(_: Request) -> JSONResponse:
        return JSONResponse(platform.describe())

    async def inject(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            import anyio.to_thread

            entry = await anyio.to_thread.run_sync(
                platform.inject, str(body["fault"]), str(body["target"])
            )
        except (SandboxError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(entry)

    async def heal(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            import anyio.to_thread

            entry = await anyio.to_thread.run_sync(platform.heal, body.get("target"))
        except SandboxError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(entry)

    async def down(_: Request) -> JSONResponse:
        shutdown()
        return JSONResponse({"stopping": True})

    return Starlette(routes=[
        Route("/status", status),
        Route("/describe", describe),
        Route("/inject", inject, methods=["POST"]),
        Route("/heal", heal, methods=["POST"]),
        Route("/down", down, methods=["POST"]),
    ])


class _Stop(Exception):
    """SIGTERM or SIGINT arrived before the control server took over the signals."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve(layout: Layout, gamedb_backend: str, chaos: float | None, seed: int | None) -> int:
    """Run the platform until told to stop. Returns the process exit code.

    ``sandbox.json`` says ready only once every part answers AND the control socket
    listens, so a client that sees it can always send ``down``. A signal at any moment
    still stops every part that started.
    """
    layout.dir.mkdir(parents=True, exist_ok=True)
    state_path = layout.dir / STATE_FILE
    sock_path = layout.dir / SOCKET_FILE
    for stale in (state_path, sock_path):
        stale.unlink(missing_ok=True)
    (layout.dir / PID_FILE).write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)

    t0 = time.monotonic()
    platform = Platform(layout, build_components(layout, gamedb_backend))
    try:
        platform.start()
    except (SandboxError, _Stop) as exc:
        log.error("sandbox not started: %s", exc)
        _write_json_atomic(state_path, {"ready": False, "error": str(exc), "pid": os.getpid()})
        (layout.dir / PID_FILE).unlink(missing_ok=True)
        return 1
    try:
        asyncio.run(_serve_control(platform, layout, time.monotonic() - t0, chaos, seed))
    except _Stop as exc:
        log.info("%s before the control server started", exc)
    finally:
        log.info("stopping sandbox")
        platform.stop()
        for path in (state_path, sock_path, layout.dir / PID_FILE):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        log.info("sandbox stopped")
    return 0


async def _serve_control(
    platform: Platform, layout: Layout, ready_s: float, chaos: float | None, seed: int | None
) -> None:
    import uvicorn

    server: uvicorn.Server
    config = uvicorn.Config(
        _control_app(platform, lambda: setattr(server, "should_exit", True)),
        uds=str(layout.dir / SOCKET_FILE), log_level="warning", lifespan="off",
    )
    server = uvicorn.Server(config)
    # uvicorn installs its own SIGTERM/SIGINT handlers (set should_exit) while it serves.
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # re-raise why it could not start
            raise SandboxError("control server stopped before it started")
        await asyncio.sleep(0.01)
    state = platform.describe() | {"ready": True, "ready_s": round(ready_s, 2)}
    _write_json_atomic(layout.dir / STATE_FILE, state)
    log.info("sandbox ready in %.2f s", ready_s)
    if chaos:
        threading.Thread(
            target=platform.run_chaos, args=(chaos, random.Random(seed)), name="chaos",
            daemon=True,
        ).start()
    await serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.daemon")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    parser.add_argument("--terminals", type=int, default=DEFAULT_TERMINALS)
    parser.add_argument("--gamedb", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--chaos", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    layout = Layout(args.dir.resolve(), args.base_port, args.terminals)
    return serve(layout, args.gamedb, args.chaos, args.seed)


if __name__ == "__main__":
    sys.exit(main())
