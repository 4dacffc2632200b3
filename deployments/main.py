"""The main job: everything Floorwatch needs on one machine, started in order.

inventory check -> store migration -> sandbox (example inventory only) -> Prefect server
with its UI on 127.0.0.1 -> blocks for the sandbox -> serve every deployment. Ctrl-C stops
it all in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from floorwatch import store
from floorwatch.errors import InventoryError, SandboxError
from floorwatch.inventory import load_inventory

HOME = Path(os.environ.get("FLOORWATCH_HOME", ".floorwatch"))


DRAIN_S = 15.0  # flow runs in progress get this long to finish after Ctrl-C
REAP_AFTER_S = 15.0  # then this long to be cancelled before they are killed
# Flow run processes at once: scheduled work (sweeps, delivery, escalation) and, apart from
# it, runs started on demand (runbooks, acknowledgements, announcements). See ``runners``.
SCHEDULED_SLOTS = 5
PREFECT_DB_SOCKET_PORT = 5432  # names the socket file only: the database has no TCP port
ON_DEMAND_SLOTS = 4


def _reap_flow_run_processes(grace_s: float) -> None:
    """After ``grace_s``, kill flow run processes the runner is still waiting for (one stuck
    in start-up or ignoring its cancellation), so shutdown is bounded."""
    time.sleep(grace_s)
    for pid in _children(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"prefect.engine" in cmdline:
                if os.getpgid(pid) == pid:  # its own group: take what it started with it
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)


def split_deployments(deployments: list[Any]) -> tuple[list[Any], list[Any]]:
    """(scheduled, on demand): each kind gets its own runner and its own process slots.

    With one runner for everything (Prefect's default of 5 processes), an incident's runbook
    waited behind sweeps for a free slot (measured: 6-22 s); with one slot per deployment the
    2-core machine ran a dozen sweep processes at once and everything slowed down. Apart, the
    sweeps keep their pace and a runbook starts as soon as the runner polls.
    """
    scheduled = [d for d in deployments if getattr(d, "schedules", None)]
    return scheduled, [d for d in deployments if not getattr(d, "schedules", None)]


def _isolate_flow_run_processes() -> None:
    """Start each flow run process in its own session.

    Ctrl-C in a terminal signals the whole foreground process group. Flow run processes in
    that group would get it too and die mid-step with a traceback, reported as crashed,
    before the runner could cancel them in order. Prefect's engine starter has the option
    (its workspace starter uses it, "so a group-wide SIGTERM cannot beat the caller's
    intent"); the runner does not expose it, so the main job sets it for its runner. If a
    Prefect release drops the option, the job still runs, and says so.
    """
    import prefect.runner.runner as runner_module
    from prefect.runner._starter_engine import EngineCommandStarter

    if "isolate_process_group" not in inspect.signature(EngineCommandStarter).parameters:
        print("warning: this Prefect cannot start flow runs in their own session; Ctrl-C "
              "will reach them directly", file=sys.stderr)
        return
    runner_module.EngineCommandStarter = functools.partial(  # type: ignore[misc]
        EngineCommandStarter, isolate_process_group=True,
    )


async def _serve_until_signalled(deployments: list[Any], drain_s: float = DRAIN_S) -> None:
    """Serve ``deployments`` until SIGINT or SIGTERM, then stop the runners in order.

    Two runners share the loop: one for scheduled deployments, one for those started on
    demand (``split_deployments``). A signal only sets an event; the stop happens in the
    loop, never as a
    KeyboardInterrupt raised in the middle of whatever the loop was doing:
    1. no new flow runs are started;
    2. the flow runs in progress get up to ``drain_s`` to finish (a sweep takes a second or
       two; a runbook half-way through a failover is better finished than cut);
    3. the runners stop: what still runs is cancelled, and the schedules are paused.
    Should a flow run process still hang on, it is killed ``REAP_AFTER_S`` later; a second
    Ctrl-C interrupts at once.
    """
    from prefect.runner import Runner

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(signum: int, _frame: object = None) -> None:
        if stop.is_set():
            return
        print(f"{signal.Signals(signum).name}: stopping; flow runs in progress get up to "
              f"{drain_s:g} s to finish (a second Ctrl-C interrupts at once)",
              file=sys.stderr, flush=True)
        threading.Thread(target=_reap_flow_run_processes, args=(drain_s + REAP_AFTER_S,),
                         name="bounded-shutdown", daemon=True).start()
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        loop.call_soon_threadsafe(stop.set)

    _isolate_flow_run_processes()
    scheduled, on_demand = split_deployments(deployments)
    runners = [Runner(name="floorwatch-scheduled", pause_on_shutdown=True, limit=SCHEDULED_SLOTS),
               Runner(name="floorwatch-on-demand", pause_on_shutdown=True, limit=ON_DEMAND_SLOTS)]
    for runner, served in zip(runners, (scheduled, on_demand), strict=True):
        # A runner installs its own SIGTERM handler when it starts, one that exits the
        # process from inside the loop; route SIGTERM to the same orderly stop instead.
        runner.handle_sigterm = request_stop  # type: ignore[method-assign]
        for deployment in served:
            await runner.aadd_deployment(deployment)
    loop.add_signal_handler(signal.SIGINT, request_stop, signal.SIGINT)

    def in_progress() -> int:
        return sum(len(r._process_manager.flow_run_ids()) for r in runners if r.started)

    async def stop_when_asked() -> None:
        await stop.wait()
        while not all(r.started for r in runners):  # a signal during start-up: let it start
            await asyncio.sleep(0.1)
        for runner in runners:
            runner.stopping = True
            runner._scheduled_run_poller.stopping = True  # no new flow runs from here on
        deadline = loop.time() + drain_s
        while in_progress() and loop.time() < deadline:
            await asyncio.sleep(0.2)
        if left := in_progress():
            print(f"cancelling {left} flow run(s) still in progress", file=sys.stderr,
                  flush=True)
        await asyncio.gather(*(runner.astop() for runner in runners))

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await asyncio.gather(*(runner.start() for runner in runners))
    finally:
        watcher.cancel()


def start_prefect_database(data_dir: Path) -> tuple[Any, str | None, str]:
    """Prefect's own database: PostgreSQL when it is installed, else SQLite.

    Under the main job's load (a flow run process every few seconds, each with its task
    runs, logs and events) Prefect on SQLite logged thousands of "database is locked" errors
    in the recovery bench, with whole-minute stalls of every flow run. PostgreSQL has no
    such single writer. It listens on its Unix socket only, in its own 0700 folder, so
    nobody but its owner can connect. Returns (server or None, URL or None, description).
    ``FLOORWATCH_PREFECT_DATABASE=sqlite`` chooses SQLite.
    """
    if os.environ.get("FLOORWATCH_PREFECT_DATABASE", "").strip().lower() == "sqlite":
        return None, None, "SQLite (FLOORWATCH_PREFECT_DATABASE=sqlite)"
    from sandbox.postgres import LocalPostgres

    pg = LocalPostgres(data_dir, PREFECT_DB_SOCKET_PORT, tcp=False)
    try:
        pg.start()
    except SandboxError as exc:
        return None, None, (f"SQLite, because PostgreSQL could not start in {data_dir}: "
                            f"{str(exc).splitlines()[0]}")
    try:
        pg.create_database("prefect", exist_ok=True)
    except SandboxError:
        pg.stop()
        raise
    return pg, pg.socket_url("prefect"), f"PostgreSQL in {data_dir} (Unix socket only)"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def run_main_job(inventory_path: Path, sandbox: bool, chaos: float, port: int) -> int:
    """Run until interrupted; returns the exit code."""
    from deployments.server import PrefectServer

    try:
        inventory = load_inventory(inventory_path)
    except InventoryError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"inventory {inventory_path}: {len(inventory.targets())} targets "
          f"in {len(inventory.zones)} zones")

    # Flow runs started by the runner inherit these: the same store, home and inventory.
    os.environ["FLOORWATCH_HOME"] = str(HOME.resolve())
    os.environ["FLOORWATCH_INVENTORY"] = str(inventory_path.resolve())
    url = store.database_url()
    revision = store.upgrade(url)
    print(f"store {store.db_info(url)['url']} at revision {revision}")

    # Until the runner takes over signals, SIGTERM stops the job the way Ctrl-C does: what
    # has been started so far is stopped in the ``finally`` below.
    signal.signal(signal.SIGTERM, _interrupt)
    box = None
    sandbox_state = None
    server = None
    prefect_db = None
    try:
        if sandbox and inventory.sandbox is not None:
            from sandbox.control import Sandbox

            wanted = inventory.sandbox
            box = Sandbox(wanted.dir)
            if box.pid() is None:
                sandbox_state = box.up(base_port=wanted.base_port, terminals=wanted.terminals,
                                       chaos=chaos or None)
                print(f"sandbox in {wanted.dir} ready in {sandbox_state['ready_s']} s"
                      + (f", chaos every {chaos:g} s" if chaos else ""))
            else:
                sandbox_state = box.describe()
                box = None  # someone else's sandbox: use it, leave it running
                if sandbox_state.get("base_port") != wanted.base_port:
                    print(f"a sandbox already runs in {wanted.dir} on base port "
                          f"{sandbox_state.get('base_port')}, but the inventory describes "
                          f"base port {wanted.base_port}; stop it with `floorwatch sandbox "
                          f"down --dir {wanted.dir}`", file=sys.stderr)
                    return 1
                print(f"sandbox already running in {wanted.dir}; using it")
        elif sandbox:
            print("no sandbox: the inventory describes a platform, not the sandbox")

        prefect_db, database_url, described = start_prefect_database(HOME / "prefect-db")
        print(f"Prefect database: {described}")
        server = PrefectServer(HOME / "prefect", port=port, database_url=database_url)
        server.start()
        os.environ.update(server.env())
        print(f"Prefect UI: {server.ui_url} (it asks for the API credential in "
              f"{server.home / 'api-auth'})")
        # Prefect reads its settings at import: import it only now that they are set.
        from deployments.automations import ensure_failure_automation
        from deployments.catalog import build_deployments

        ensure_failure_automation()  # any failed or crashed flow run is announced in chat
        if sandbox_state is not None:
            from deployments.sandbox_blocks import save_sandbox_blocks

            print(f"sandbox blocks saved: {', '.join(save_sandbox_blocks(sandbox_state))}")

        deployments = build_deployments(inventory, inventory_path)
        print(f"serving {len(deployments)} deployments; Ctrl-C stops everything")
        asyncio.run(_serve_until_signalled(deployments))
    except KeyboardInterrupt:
        pass
    except SandboxError as exc:  # the sandbox or Prefect's database
        print(f"floorwatch: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up itself is not interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server is not None:
            server.stop()
        if prefect_db is not None:
            prefect_db.stop()
        if box is not None:
            box.down()
    return 0
