"""announce-flow-failure: started by the ``floorwatch-flow-failures`` automation (see
``deployments/automations.py``) for each failed or crashed flow run."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow

from tasks.flow_failures import announce_task, read_flow_failure_task
from tasks.inventory import cached_inventory


@flow(name="announce-flow-failure")
async def announce_flow_failure(
    flow_run_id: str, flow_run_name: str = "", state_name: str = "", state_message: str = "",
    inventory_path: str | None = None,
) -> list[dict[str, Any]]:
    """Announce a failed or crashed flow run in chat, with its state message and a link to
    it in the Prefect UI.

    Args:
        flow_run_id: The run's id, or its event resource id prefect.flow-run.<id>
        flow_run_name: The run's name, as the event carried it
        state_name: Failed, Crashed or TimedOut, as the event carried it
        state_message: Why, as the event carried it
        inventory_path: The inventory (default: $FLOORWATCH_INVENTORY)
    """
    path = inventory_path or os.environ.get("FLOORWATCH_INVENTORY", "inventory.example.yaml")
    failure = await read_flow_failure_task(flow_run_id, flow_run_name, state_name,
                                           state_message)
    return announce_task(cached_inventory(path), failure)
