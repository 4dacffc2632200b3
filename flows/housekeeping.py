"""Housekeeping flows: keep the configuration honest."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.inventory import publish_inventory_summary, validate_inventory


@flow(name="check-inventory", log_prints=True)
async def check_inventory(inventory_path: str) -> dict[str, Any]:
    """Validate the inventory file and publish its summary to the UI."""
    summary = validate_inventory(inventory_path)
    await publish_inventory_summary(inventory_path, summary)
    return summary
