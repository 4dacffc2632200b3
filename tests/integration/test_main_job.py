"""The main job against a real `prefect server start`: it migrates the store, serves the
deployments, runs one on request, and stops everything on Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from sandbox.topology import free_base_port

ROOT = Path(__file__).resolve().parents[2]


def _api(client: httpx.Client, method: str, path: str, body: object = None) -> httpx.Response:
    """One API call; a busy SQLite-backed server answers 503 for a moment, and Prefect's
    own client retries those, so this does too."""
    for _ in range(20):
        response = client.request(method, path, json=body)
        if response.status_code != 503:
            return response
        time.sleep(0.5)
    return response


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_main_job_serves_deployments_runs_one_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals,
) -> None:
    """`floorwatch run` serves check-inventory on a local Prefect server; a run requested
    through the API completes with its artifact, and SIGINT or SIGTERM stops it in order,
    with no traceback and no server behind. The Ctrl-C run refuses the sandbox with
    --no-sandbox; the SIGTERM run has an inventory without a `sandbox:` section, so no
    sandbox is started for it at all."""
    if stop_signal == signal.SIGINT:
        inventory = ROOT / "inventory.example.yaml"
        flags = ["--no-sandbox"]
    else:
        document = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
        del document["sandbox"]
        inventory = tmp_path / "platform.yaml"
        inventory.write_text(yaml.safe_dump(document, sort_keys=False))
        flags = []
    # Not pytest's tmp_path (0700): Prefect's PostgreSQL runs as the postgres user, which
    # must reach its data folder in the job's home.
    home = Path(tempfile.mkdtemp(prefix="fw-main-"))
    os.chmod(home, 0o711)
    port = free_base_port(span=1)
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k != "FLOORWATCH_DATABASE_URL"}
    env["FLOORWATCH_HOME"] = str(home)
    log = (tmp_path / "main.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "floorwatch.cli", "run", *flags, "--port", str(port),
         "--inventory", str(inventory)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        auth_file = home / "prefect" / "api-auth"
        user, _, password = _wait_for(
            lambda: auth_file.exists() and auth_file.read_text().strip(), 60, "the API credential"
        ).partition(":")
        assert oct(auth_file.stat().st_mode & 0o777) == "0o600"
        with httpx.Client(base_url=api, timeout=10, auth=(user, password)) as client:
            def deployment() -> dict | None:  # type: ignore[type-arg]
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "main.log").read_text())
                try:
                    r = client.get("/deployments/name/check-inventory/check-inventory")
                except httpx.HTTPError:
                    return None
                return r.json() if r.status_code == 200 else None

            dep = _wait_for(deployment, 120, "the check-inventory deployment")
            # The API is protected: without the credential the server refuses.
            refused = httpx.get(f"{api}/deployments/name/check-inventory/check-inventory",
                                timeout=10)
            assert refused.status_code == 401
            assert dep["parameters"]["inventory_path"] == str(inventory)

            created = _api(client, "POST", f"/deployments/{dep['id']}/create_flow_run", {})
            assert created.status_code == 201, created.text
            run = created.json()

            def finished() -> dict | None:  # type: ignore[type-arg]
                state = _api(client, "GET", f"/flow_runs/{run['id']}").json()["state"]
                return state if state["type"] in {"COMPLETED", "FAILED", "CRASHED"} else None

            state = _wait_for(finished, 60, "the flow run to finish")
            assert state["type"] == "COMPLETED", state
            artifacts = _api(client, "POST", "/artifacts/filter",
                             {"artifacts": {"key": {"any_": ["platform-inventory"]}}}).json()
            assert artifacts
            assert "35 targets" in artifacts[0]["data"]

            # The schedules work: a sweep runs by itself (nothing answers: no sandbox here,
            # so it records failures, and still completes).
            def scheduled_sweep() -> list | None:  # type: ignore[type-arg]
                runs = _api(client, "POST", "/flow_runs/filter", {
                    "flows": {"name": {"any_": ["sweep-zone"]}},
                    "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                    "limit": 1,
                })
                return runs.json() if runs.status_code == 200 and runs.json() else None

            _wait_for(scheduled_sweep, 90, "a scheduled sweep to complete")

        store = home / "floorwatch.db"
        assert store.exists()
    finally:
        # Ctrl-C in a terminal (and a service manager's stop) signals the whole process
        # group, not only the main process.
        os.killpg(proc.pid, stop_signal)
        try:
            proc.wait(timeout=75)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    output = (tmp_path / "main.log").read_text()
    assert "Prefect UI: http://127.0.0.1:" in output
    assert f"Prefect database: PostgreSQL in {home / 'prefect-db'}" in output, output
    assert not (home / "prefect-db" / "postmaster.pid").exists()  # stopped with the job
    shutil.rmtree(home, ignore_errors=True)
    assert "sandbox in " not in output, output
    assert "sandbox already running" not in output, output
    assert ("no sandbox: the inventory describes a platform" in output) == (not flags), output
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=2)
    # The signal stops the runner in order (its schedules paused). Nothing fails while
    # serving, and the stop itself raises nothing. Only a flow run still going when the drain
    # time is up is cancelled, and Prefect's engine in that run's process may then print how
    # it was terminated; the job says so first.
    serving, stopped, stopping = output.partition(f"{stop_signal.name}: stopping")
    assert stopped, output
    assert "Traceback" not in serving, output
    assert "All deployments have been paused!" in stopping, output
    if "Traceback" in stopping:
        assert "flow run(s) still in progress" in stopping.split("Traceback")[0], output


@pytest.mark.slow
def test_prefect_server_does_not_outlive_a_killed_main_job(tmp_path: Path) -> None:
    """A main job killed outright (SIGKILL: no clean-up runs) takes its Prefect server with
    it: the server asked the kernel for a signal when its parent dies."""
    port = free_base_port(span=1)
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from deployments.server import PrefectServer\n"
        f"PrefectServer(Path({str(tmp_path / 'prefect')!r}), port={port}).start()\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "up"
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code in (
            200, 401)
    finally:
        parent.kill()
        parent.wait(timeout=10)

    def server_gone() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
        except httpx.HTTPError:
            return True
        return False

    _wait_for(server_gone, 30, "the orphaned Prefect server to stop")
