"""Announcing a failed or crashed flow run in chat: read what the server knows about the run,
then queue one message for it in the outbox.

A run that answers an incident (a runbook started with ``incident_id``) is announced in that
incident's thread; any other run is a platform-wide message, routed to its zone when it has
a ``zone`` parameter (the sweeps do). The outbox key makes a run announced twice (the
automation fired again, the announcer was retried) go out once.

A scheduled deployment that keeps failing the same way (a sweep every 15 s against a broken
block) must not flood chat: the platform-wide key is the deployment, the failure's state and
message and the hour, so the same failure of the same deployment is announced once per hour
(``REPEAT_WINDOW``); every run stays failed in the UI, and the announcer's result says which
were repeats. Runs answering an incident are each announced: each is one remediation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from floorwatch.errors import StoreError
from floorwatch.inventory import Inventory
from floorwatch.notify import Message, clip, route
from floorwatch.results import now_utc
from floorwatch.store import Store
from tasks.notify import Enqueued, enqueue, flow_run_link, notify_incident_event

RESOURCE_PREFIX: Final = "prefect.flow-run."
FAILURE_EVENT: Final = "flow_failed"
MESSAGE_MAX: Final = 1500  # a traceback's last lines are enough in chat; the UI has the rest
REPEAT_WINDOW: Final = "%Y%m%d%H"  # one announcement per deployment and failure per hour


@dataclass(frozen=True)
class FlowFailure:
    """A failed or crashed flow run, as people need to see it."""

    flow_run_id: str
    flow_run_name: str
    flow_name: str
    deployment: str | None
    state_name: str
    state_message: str
    incident_id: int | None = None
    zone: str | None = None

    @property
    def link(self) -> str | None:
        return flow_run_link(self.flow_run_id)

    def event(self, now: datetime) -> str:
        """The outbox event: per run, or for a deployment's repeated failure per hour."""
        if self.incident_id is not None or self.deployment is None:
            return f"{FAILURE_EVENT}#{self.flow_run_id}"
        same = "\0".join((self.flow_name, self.deployment, self.state_name, self.state_message))
        digest = hashlib.sha256(same.encode()).hexdigest()[:16]
        return f"{FAILURE_EVENT}#{digest}.{now.strftime(REPEAT_WINDOW)}"

    def text(self) -> str:
        where = f" (deployment {self.deployment})" if self.deployment else ""
        message = clip(self.state_message.strip() or "no message", MESSAGE_MAX)
        return f"Flow run {self.flow_run_name} of {self.flow_name}{where} is " \
               f"{self.state_name or 'Failed'}: {message}"

    def fields(self) -> dict[str, str]:
        shown = {"flow": self.flow_name, "flow run": self.flow_run_name,
                 "state": self.state_name or "Failed"}
        if self.deployment:
            shown["deployment"] = self.deployment
        return shown


def parse_flow_run_id(value: str) -> UUID:
    """The flow run id in ``value``: a UUID, or an event resource id
    ``prefect.flow-run.<uuid>``; ``ValueError`` naming the value otherwise."""
    text = value.strip().removeprefix(RESOURCE_PREFIX)
    try:
        return UUID(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a flow run id (a UUID or {RESOURCE_PREFIX}<uuid>)")\
            from None


def _as_int(value: object) -> int | None:
    """An incident id parameter, which templated triggers may pass as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


async def read_flow_failure(
    flow_run_id: str, flow_run_name: str = "", state_name: str = "", state_message: str = ""
) -> FlowFailure:
    """What the Prefect API knows about the run; the event's values (given) fill any gap."""
    from prefect import get_client

    run_id = parse_flow_run_id(flow_run_id)
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
        flow = await client.read_flow(run.flow_id)
        deployment = (await client.read_deployment(run.deployment_id)).name \
            if run.deployment_id else None
    state = run.state
    parameters: dict[str, Any] = dict(run.parameters or {})
    zone = parameters.get("zone")
    return FlowFailure(
        flow_run_id=str(run_id),
        flow_run_name=run.name or flow_run_name or str(run_id),
        flow_name=flow.name,
        deployment=deployment,
        state_name=(state.name if state is not None and state.name else state_name),
        state_message=(state.message if state is not None and state.message
                       else state_message),
        incident_id=_as_int(parameters.get("incident_id")),
        zone=zone if isinstance(zone, str) else None,
    )


def announce(
    store: Store, inventory: Inventory, failure: FlowFailure, now: datetime | None = None
) -> list[Enqueued]:
    """Queue the announcement: in the incident's thread when the run answers one, else
    platform-wide (to the run's zone when it has one the inventory knows). Rows whose
    ``created`` is False were announced already (a repeat)."""
    moment = now or now_utc()
    if failure.incident_id is not None:
        try:
            incident = store.get_incident(failure.incident_id)
        except StoreError:
            incident = None  # an id from a bad parameter: announced platform-wide instead
        if incident is not None:
            data = {"flow_run_id": failure.flow_run_id, **failure.fields()}
            return notify_incident_event(store, inventory, incident, failure.event(moment),
                                         failure.text(), data=data)
    # A zone parameter the inventory does not know (renamed since) is no reason to stay silent.
    zone = failure.zone if failure.zone in {z.name for z in inventory.zones} else None
    channels = route(inventory, zone, severity="high")
    message = Message(event=failure.event(moment), title=f"Flow run failed: {failure.flow_name}",
                      text=failure.text(), severity="high", zone=zone,
                      link=failure.link, fields=failure.fields())
    return enqueue(store, message, channels)


@task(name="read-flow-failure", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
async def read_flow_failure_task(
    flow_run_id: str, flow_run_name: str, state_name: str, state_message: str
) -> FlowFailure:
    """Read the failed run from the Prefect API (retried: the server may be busy)."""
    return await read_flow_failure(flow_run_id, flow_run_name, state_name, state_message)


@task(name="announce-flow-failure", cache_policy=NO_CACHE)
def announce_task(inventory: Inventory, failure: FlowFailure) -> list[dict[str, Any]]:
    """Queue the announcement in the configured store's outbox."""
    with Store() as store:
        queued = announce(store, inventory, failure)
    return [q._asdict() for q in queued]
