"""The main job: everything Floorwatch needs on one machine, started in order.

inventory check -> store migration -> sandbox (example inventory only) -> Prefect server
with its UI on 127.0.0.1 -> blocks for the sandbox -> serve every deployment. Ctrl-C stops
it all in reverse order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from floorwatch import store
from floorwatch.errors import InventoryError
from floorwatch.inventory import load_inventory

HOME = Path(os.environ.get("FLOORWATCH_HOME", ".floorwatch"))


SHUTDOWN_GRACE_S = 15.0


def _bound_shutdown(grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Make Ctrl-C (or SIGTERM) stop the job within ``grace_s``: the runner waits for its
    flow run processes, and one still starting (pending on a concurrency slot) can wait a
    long time; after the grace period those processes are killed, so the runner returns
    and the server and sandbox are stopped in the ``finally`` below."""

    def reap() -> None:
        time.sleep(grace_s)
        for pid in _children(os.getpid()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"prefect.engine" in cmdline:
                    os.kill(pid, signal.SIGKILL)

    def on_signal(signum: int, _frame: object) -> None:
        threading.Thread(target=reap, name="bounded-shutdown", daemon=True).start()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


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

    box = None
    sandbox_state = None
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
    try:
        server.start()
        os.environ.update(server.env())
        print(f"Prefect UI: {server.ui_url} (it asks for the API credential in "
              f"{server.home / 'api-auth'})")
        # Prefect reads its settings at import: import it only now that they are set.
        from prefect import serve

        from deployments.automations import ensure_failure_automation
        from deployments.catalog import build_deployments

        ensure_failure_automation()  # any failed or crashed flow run is announced in chat
        if sandbox_state is not None:
            from deployments.sandbox_blocks import save_sandbox_blocks

            print(f"sandbox blocks saved: {', '.join(save_sandbox_blocks(sandbox_state))}")

        deployments = build_deployments(inventory, inventory_path)
        print(f"serving {len(deployments)} deployments; Ctrl-C stops everything")
        _bound_shutdown()
        serve(*deployments, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if box is not None:
            box.down()
    return 0
