"""Escalation: every 30 s, call the next level about incidents nobody acknowledged in time."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow

from tasks.escalation import escalate_unacknowledged_task
from tasks.inventory import cached_inventory


@flow(name="escalate-unacknowledged")
async def escalate_unacknowledged(inventory_path: str | None = None) -> list[dict[str, Any]]:
    """Climb each unresolved, unacknowledged incident a level once its level's
    acknowledgement timeout has passed, notifying that level's contact."""
    path = inventory_path or os.environ.get("FLOORWATCH_INVENTORY", "inventory.example.yaml")
    return escalate_unacknowledged_task(cached_inventory(path))
