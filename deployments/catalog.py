"""Every deployment the main job serves, built from the inventory."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from floorwatch.inventory import Inventory


def build_deployments(inventory: Inventory, inventory_path: Path) -> list[Any]:
    """The deployments for one inventory (RunnerDeployment objects for ``prefect.serve``)."""
    from flows.housekeeping import check_inventory

    path = str(inventory_path.resolve())
    return [
        check_inventory.to_deployment(
            name="check-inventory",
            interval=timedelta(hours=1),
            parameters={"inventory_path": path},
            description="Validate the inventory and publish the platform summary.",
            tags=["floorwatch", "housekeeping"],
        ),
    ]
