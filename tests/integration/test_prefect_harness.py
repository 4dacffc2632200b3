"""The session Prefect harness runs flows and records them through its API."""

from __future__ import annotations

import time
import uuid

import pytest
from prefect import flow, get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import StateType
from prefect.settings import get_current_settings

pytestmark = pytest.mark.integration


@flow(name="double-number")
async def double_number(value: int) -> int:
    """Return twice the value."""
    return value * 2


@flow(name="greet-operator")
def greet_operator(name: str) -> str:
    """Return a greeting for the operator."""
    return f"hello {name}"


async def test_async_flow_returns_value_and_is_completed_in_api(
    prefect_client: PrefectClient,
) -> None:
    """An async flow returns its value and the API holds its run as Completed."""
    run_name = f"double-{uuid.uuid4().hex}"

    result = await double_number.with_options(flow_run_name=run_name)(21)

    assert result == 42
    runs = await prefect_client.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name]))
    )
    assert len(runs) == 1
    assert runs[0].state is not None
    assert runs[0].state.type == StateType.COMPLETED
    assert runs[0].parameters == {"value": 21}


def test_sync_flow_runs_without_heartbeat(prefect_harness: str) -> None:
    """A sync flow runs under the harness with heartbeats off and is recorded as Completed."""
    assert get_current_settings().flows.heartbeat_frequency is None
    started = time.monotonic()

    state = greet_operator("ops", return_state=True)

    elapsed = time.monotonic() - started
    assert state.is_completed()
    assert state.result() == "hello ops"
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    assert run.state_type == StateType.COMPLETED
    print(f"\nsync flow run took {elapsed:.2f} s")


def test_harness_api_url_is_loopback(prefect_harness: str) -> None:
    """The harness API listens on loopback only."""
    assert prefect_harness.startswith("http://127.0.0.1:")
    assert prefect_harness.endswith("/api")
