"""Which flow implements each runbook, and which runbooks take the fast path.

The fast path: a runbook listed in ``FAST_PATH`` whose policy is automatic starts at once,
as a subflow of the sweep that opened the incident, instead of through the event, the
automation, the runner's poll and a new flow run process (1-2 s on an idle machine, 12-17 s
on a busy one, measured in bench/recovery.py). It is for failovers, where the platform's
promise is "switching in 1-2 seconds", and for service restarts, where it is "a crashed
service back within 30 s". The event is still emitted (with policy ``fast-path``, which no
deployment trigger matches), so the UI shows the incident the same way; the runbook's run
shows as a subflow of the sweep. The sweep runs it before it ends, so that sweep's next
run may be skipped (never overlapped).
"""

from __future__ import annotations

import importlib
from typing import Any

from floorwatch.catalogue import RunbookName

FLOWS: dict[RunbookName, str] = {
    RunbookName.DIAGNOSE_TARGET: "runbooks.diagnose_target:diagnose_target",
    RunbookName.RESTART_SERVICE: "runbooks.restart_service:restart_service",
    RunbookName.FAIL_OVER_SERVER: "runbooks.fail_over_server:fail_over_server",
    RunbookName.FAIL_OVER_DNS: "runbooks.fail_over_dns:fail_over_dns",
    RunbookName.RESTART_TERMINAL: "runbooks.restart_terminal:restart_terminal",
    RunbookName.REDEPLOY_CONFIG: "runbooks.redeploy_config:redeploy_config",
    RunbookName.ESCALATE: "runbooks.escalate:escalate",
}

FAST_PATH: frozenset[RunbookName] = frozenset(
    {RunbookName.FAIL_OVER_DNS, RunbookName.FAIL_OVER_SERVER, RunbookName.RESTART_SERVICE}
)
FAST_PATH_POLICY = "fast-path"


def runbook_flow(name: RunbookName | str) -> Any:
    """The Prefect flow object of runbook ``name``."""
    module, _, attr = FLOWS[RunbookName(name)].partition(":")
    return getattr(importlib.import_module(module), attr)


def deployment_name(name: RunbookName | str) -> str:
    """Runbook deployments are named like their flows: ``restart-service``."""
    return str(name).replace("_", "-")
