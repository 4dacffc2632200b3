"""The outbox's delivery: every few seconds, send what is due to chat, mail, Telegram and SMS,
in order per incident, retrying with backoff (see ``tasks.notify``)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from prefect import flow

from tasks.inventory import cached_inventory
from tasks.notify import INVENTORY_ENV, deliver_outbox, load_notification_channels

# Every delivery run is a flow run in its own process (about 2 s of CPU): 10 s keeps a
# 2-core demo machine free, and a message waits at most that long.
DELIVERY_INTERVAL_S = 10
DEPLOYMENT_NAME = "deliver-notifications"


@flow(name="deliver-notifications")
async def deliver_notifications(
    inventory_path: str | None = None, limit: int = 100, time_budget_s: float = 30.0
) -> dict[str, Any]:
    """Deliver the due notifications of the outbox; report what was delivered, what waits
    for a retry and what failed for good (and was reported on another channel)."""
    path = inventory_path or os.environ.get(INVENTORY_ENV, "inventory.example.yaml")
    inventory = cached_inventory(path)
    channels = await load_notification_channels(inventory)
    return await deliver_outbox(inventory, channels, limit=limit, time_budget_s=time_budget_s)


def notifications_deployment(inventory_path: str, interval_s: float = DELIVERY_INTERVAL_S) -> Any:
    """The deployment the main job serves: every ``interval_s``, never two runs at once (a
    run due while one still delivers is cancelled; the outbox's leases guard the rest)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return deliver_notifications.to_deployment(
        name=DEPLOYMENT_NAME,
        interval=timedelta(seconds=interval_s),
        parameters={"inventory_path": inventory_path},
        description="Deliver the notification outbox: chat, mail, Telegram and SMS, in order "
        "per incident, with retries and backoff.",
        tags=["floorwatch", "notifications"],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
    )
