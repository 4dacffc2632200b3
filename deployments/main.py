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
REAP_AFTER_S = 15.0
# Flow run processes the runner keeps for runbooks, acknowledgements and announcements on top
# of one per scheduled deployment (see ``process_limit``).
RUNBOOK_SLOTS = 4  # then this long to be cancelled before they are killed


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


def process_limit(deployments: list[Any], runbook_slots: int = RUNBOOK_SLOTS) -> int:
    """How many flow run processes the runner may run at once.

    Prefect's default is 5 for the whole runner, so on a busy platform an incident's runbook
    waited behind sweeps for a free slot (measured: 6-22 s). A scheduled deployment never
    overlaps itself (concurrency limit 1, late runs cancelled), so together they hold at most
    one process each; the limit adds ``runbook_slots`` to that, and a runbook always finds
    a slot unless that many runbooks already run.
    """
    return sum(1 for d in deployments if getattr(d, "schedules", None)) + runbook_slots


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
    """Serve ``deployments`` until SIGINT or SIGTERM, then stop the runner in order.

    A signal only sets an event; the stop happens in the runner's own loop, never as a
    KeyboardInterrupt raised in the middle of whatever the loop was doing:
    1. no new flow runs are started;
    2. the flow runs in progress get up to ``drain_s`` to finish (a sweep takes a second or
       two; a runbook half-way through a failover is better finished than cut);
    3. the runner stops: what still runs is cancelled, and the schedules are paused.
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
    runner = Runner(pause_on_shutdown=True, limit=process_limit(deployments))
    # The runner installs its own SIGTERM handler when it starts, one that exits the
    # process from inside the loop; route SIGTERM to the same orderly stop instead.
    runner.handle_sigterm = request_stop  # type: ignore[method-assign]
    loop.add_signal_handler(signal.SIGINT, request_stop, signal.SIGINT)
    for deployment in deployments:
        await runner.aadd_deployment(deployment)

    async def stop_when_asked() -> None:
        await stop.wait()
        while not runner.started:  # a signal during start-up: let it finish starting
            await asyncio.sleep(0.1)
        runner.stopping = True
        runner._scheduled_run_poller.stopping = True  # no new flow runs from here on
        deadline = loop.time() + drain_s
        while runner._process_manager.flow_run_ids() and loop.time() < deadline:
            await asyncio.sleep(0.2)
        left = len(runner._process_manager.flow_run_ids())
        if left:
            print(f"cancelling {left} flow run(s) still in progress", file=sys.stderr,
                  flush=True)
        await runner.astop()

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await runner.start()
    finally:
        watcher.cancel()


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

        server = PrefectServer(HOME / "prefect", port=port)
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
    except SandboxError as exc:
        print(f"the sandbox could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up itself is not interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server is not None:
            server.stop()
        if box is not None:
            box.down()
    return 0
