"""The main job: everything Floorwatch needs on one machine, started in order.

inventory check -> store migration -> sandbox (example inventory only) -> Prefect server
with its UI on 127.0.0.1 -> blocks for the sandbox -> serve every deployment. Ctrl-C stops
it all in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from floorwatch import store
from floorwatch.errors import InventoryError
from floorwatch.inventory import load_inventory

HOME = Path(os.environ.get("FLOORWATCH_HOME", ".floorwatch"))


SHUTDOWN_GRACE_S = 15.0


def _reap_flow_run_processes(grace_s: float) -> None:
    """After ``grace_s``, kill flow run processes the runner is still waiting for (one still
    starting, pending on a concurrency slot, can wait a long time), so shutdown is bounded."""
    time.sleep(grace_s)
    for pid in _children(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"prefect.engine" in cmdline:
                os.kill(pid, signal.SIGKILL)


async def _serve_until_signalled(deployments: list[Any], grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Serve ``deployments`` until SIGINT or SIGTERM, then stop the runner in its own loop.

    A signal only sets an event: the runner is stopped with ``astop()`` (its flow runs are
    cancelled and its schedules paused), never by a KeyboardInterrupt raised in the middle of
    whatever the loop was doing. After ``grace_s`` the flow run processes still alive are
    killed, and a second Ctrl-C interrupts at once.
    """
    from prefect.runner import Runner

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(signum: int, _frame: object = None) -> None:
        if stop.is_set():
            return
        print(f"{signal.Signals(signum).name}: stopping (a second Ctrl-C interrupts at once)",
              file=sys.stderr, flush=True)
        threading.Thread(target=_reap_flow_run_processes, args=(grace_s,),
                         name="bounded-shutdown", daemon=True).start()
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        loop.call_soon_threadsafe(stop.set)

    runner = Runner(pause_on_shutdown=True)
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
        if sandbox:
            from sandbox.control import Sandbox

            box = Sandbox(HOME / "sandbox")
            if box.pid() is None:
                sandbox_state = box.up(chaos=chaos or None)
                print(f"sandbox ready in {sandbox_state['ready_s']} s"
                      + (f", chaos every {chaos:g} s" if chaos else ""))
            else:
                sandbox_state = box.describe()
                box = None  # someone else's sandbox: use it, leave it running
                print("sandbox already running; using it")

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
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up itself is not interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server is not None:
            server.stop()
        if box is not None:
            box.down()
    return 0
