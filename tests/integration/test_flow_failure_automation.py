"""Flow failures reach chat through a Prefect automation on the session's server: a failed
runbook run is announced in its incident's thread, a crashed run platform-wide, each once,
by the announce deployment served in its own process as the main job serves it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.settings import get_current_settings
from prefect.states import Crashed, Running

from deployments.automations import FAILURE_AUTOMATION, aensure_failure_automation
from floorwatch.errors import CommandFailed
from floorwatch.results import now_utc
from floorwatch.store import NotificationRow, Store, upgrade

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANNOUNCED_WITHIN_S = 45.0  # the automation, the runner's 1 s poll and a process start

INVENTORY = """\
version: 1
contacts:
  ops-oncall: {channel: slack, address: "#ops-oncall"}
  devops: {channel: email, address: devops@example.test}
zones:
  - name: core
    escalation: [ops-oncall, devops]
    targets:
      - name: api-gateway
        kind: http_service
        connection: {url: "http://127.0.0.1:9/health"}
        probes: [{kind: http}]
"""


@flow(name="restart-service-under-test")
async def failing_runbook(target: str, incident_id: int | None = None) -> None:
    """A runbook run that fails the way a real one does: a remote command exits non-zero."""
    raise CommandFailed(target, "systemctl restart game-engine exited 1")


@flow(name="announce-flow-failure")
async def failing_announcer(flow_run_id: str) -> None:
    """A run of the announcer's own flow that fails: must not announce itself."""
    raise CommandFailed("announcer", f"cannot announce {flow_run_id}")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A fresh migrated store and a small inventory, both named in the environment the
    serving process inherits."""
    url = f"sqlite:///{tmp_path / 'floorwatch.db'}"
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY)
    monkeypatch.setenv("FLOORWATCH_DATABASE_URL", url)
    monkeypatch.setenv("FLOORWATCH_HOME", str(tmp_path))
    monkeypatch.setenv("FLOORWATCH_INVENTORY", str(inventory))
    upgrade(url)
    with Store(url) as opened:
        yield opened


@pytest.fixture
async def automation(prefect_client: PrefectClient) -> AsyncIterator[UUID]:
    """The failure automation on the session server, removed afterwards so that later
    tests' failing flows start nothing."""
    automation_id = await aensure_failure_automation()
    try:
        yield automation_id
    finally:
        for found in await prefect_client.read_automations_by_name(FAILURE_AUTOMATION):
            await prefect_client.delete_automation(found.id)


@pytest.fixture
def announcer(
    prefect_harness: str, store: Store, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`serve(announce_deployment())` in its own process, like the main job; stopped after."""
    env = dict(os.environ)
    env.update(get_current_settings().to_environment_variables(exclude_unset=True))
    env.update({"PREFECT_API_URL": prefect_harness, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                "DO_NOT_TRACK": "1"})
    log = (tmp_path / "announcer.log").open("wb")
    code = ("from prefect import serve\nfrom deployments.catalog import announce_deployment\n"
            "serve(announce_deployment(), print_starting_message=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()


async def announce_runs(client: PrefectClient) -> list[FlowRun]:
    deployment = await client.read_deployment_by_name(
        "announce-flow-failure/announce-flow-failure")
    return await client.read_flow_runs(deployment_filter=DeploymentFilter(
        id=DeploymentFilterId(any_=[deployment.id])))


async def wait_for_rows(
    store: Store, events: set[str], proc: subprocess.Popen[bytes], log: Path
) -> list[NotificationRow]:
    deadline = time.monotonic() + ANNOUNCED_WITHIN_S
    while time.monotonic() < deadline:
        rows = [n for n in store.notifications() if n.event in events]
        if {n.event for n in rows} == events:
            return rows
        if proc.poll() is not None:
            raise AssertionError(f"announcer exited {proc.returncode}:\n{log.read_text()}")
        await asyncio.sleep(0.5)
    raise AssertionError(f"no announcement of {events} within {ANNOUNCED_WITHIN_S} s; "
                         f"outbox: {store.notifications()}\n{log.read_text()[-3000:]}")


async def test_failed_and_crashed_flow_runs_are_announced_once_each(
    prefect_client: PrefectClient, automation: UUID, store: Store,
    announcer: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    """A failed runbook run is announced in its incident's thread with its state message and
    UI link; a crashed run platform-wide; the announcer's own failure starts nothing."""
    assert await aensure_failure_automation() == automation  # idempotent: still one
    assert len(await prefect_client.read_automations_by_name(FAILURE_AUTOMATION)) == 1

    now = now_utc()
    incident = store.open_incident(
        target="api-gateway", zone="core", fault_kind="service_down", severity="critical",
        summary="api-gateway answers 503", onset_at=now - timedelta(seconds=30),
        detected_at=now,
    )
    failed = await failing_runbook("api-gateway", incident.id, return_state=True)
    assert failed.is_failed()
    failed_id = str(failed.state_details.flow_run_id)

    # A crash is declared by the server (lost heartbeat, killed worker), not by the run.
    crashed_run = await prefect_client.create_flow_run(failing_runbook,
                                                       parameters={"target": "app-primary"})
    await prefect_client.set_flow_run_state(crashed_run.id, Running(), force=True)
    await prefect_client.set_flow_run_state(
        crashed_run.id, Crashed(message="flow run process killed (SIGKILL)"), force=True)
    crashed_id = str(crashed_run.id)

    rows = await wait_for_rows(store, {f"flow_failed#{failed_id}", f"flow_failed#{crashed_id}"},
                               announcer, tmp_path / "announcer.log")

    by_event = {n.event: n for n in rows}
    in_thread = by_event[f"flow_failed#{failed_id}"]
    assert (in_thread.incident_id, in_thread.channel) == (incident.id, "ops-oncall")
    assert "systemctl restart game-engine exited 1" in in_thread.payload["text"]
    assert in_thread.payload["fields"]["flow"] == "restart-service-under-test"
    assert in_thread.payload["link"].endswith(f"/runs/flow-run/{failed_id}")

    platform = by_event[f"flow_failed#{crashed_id}"]
    assert (platform.incident_id, platform.channel) == (None, "ops-oncall")
    assert platform.payload["fields"]["state"] == "Crashed"
    assert "process killed (SIGKILL)" in platform.payload["text"]

    await failing_announcer(failed_id, return_state=True)
    await asyncio.sleep(4)  # the automation answers in about a second
    runs = await announce_runs(prefect_client)
    assert len(runs) == 2, [r.parameters for r in runs]
    assert {r.parameters["flow_run_id"] for r in runs} == {
        f"prefect.flow-run.{failed_id}", f"prefect.flow-run.{crashed_id}"}
    assert len([n for n in store.notifications() if n.event.startswith("flow_failed")]) == 2


def test_repeated_failure_of_a_deployment_is_announced_once_per_hour(store: Store) -> None:
    """A scheduled deployment failing the same way every run is announced once an hour;
    another failure, another hour, or a run answering an incident are announced anew."""
    from floorwatch.inventory import load_inventory
    from tasks.flow_failures import FlowFailure, announce

    inventory = load_inventory(os.environ["FLOORWATCH_INVENTORY"])
    noon = now_utc().replace(hour=12, minute=0, second=0, microsecond=0)

    def failure(run: str, message: str = "block notify-slack missing",
                incident_id: int | None = None) -> FlowFailure:
        return FlowFailure(
            flow_run_id=run, flow_run_name=f"run-{run}", flow_name="sweep-zone",
            deployment="sweep-core-http", state_name="Failed", state_message=message,
            incident_id=incident_id, zone="core",
        )

    first = announce(store, inventory, failure("1"), noon)
    repeat = announce(store, inventory, failure("2"), noon + timedelta(minutes=20))
    other = announce(store, inventory, failure("3", "store unavailable"), noon)
    next_hour = announce(store, inventory, failure("4"), noon + timedelta(hours=1))
    assert [q.created for q in first + repeat + other + next_hour] == [True, False, True, True]
    assert repeat[0].id == first[0].id

    incident = store.open_incident(
        target="api-gateway", zone="core", fault_kind="service_down", severity="critical",
        summary="down", onset_at=noon, detected_at=noon)
    answers = [announce(store, inventory, failure(run, incident_id=incident.id), noon)
               for run in ("5", "6")]
    assert [q.created for q in answers[0] + answers[1]] == [True, True]
    assert {n.event for n in store.notifications(incident_id=incident.id)} == {
        "flow_failed#5", "flow_failed#6"}
