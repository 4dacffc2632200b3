"""Diagnosis: the evidence every runbook starts from, and the ``diagnose_target`` logic.

Recent probe history from the store and a fresh probe of every probe the target has; the
kind-specific evidence (service state and journal over SSH, console status of a terminal,
the current DNS answers) comes from the target's own adapters.
"""

from __future__ import annotations

from typing import Any

from runbooks.frame import Diagnosis, RunContext, probe_target

HISTORY = 10


async def diagnose(ctx: RunContext) -> Diagnosis:
    """What is wrong with the target now, with the evidence that shows it."""
    history = ctx.store.recent_results(ctx.target.name, limit=HISTORY)
    fresh = await probe_target(ctx)
    failing = [r for r in fresh if not r.ok]
    evidence: dict[str, Any] = {
        "probes_now": [r.model_dump(mode="json") for r in fresh],
        "recent_history": [
            {"ts": r.ts.isoformat(), "probe": r.probe_id, "ok": r.ok,
             "faults": list(r.faults), "error": r.error_message}
            for r in history
        ],
    }
    if failing:
        summary = "; ".join(
            f"{r.probe_id}: {', '.join(r.faults)} ({r.error_message or 'no detail'})"
            for r in failing
        )
    else:
        summary = f"all {len(fresh)} probe(s) of {ctx.target.name} pass now"
    return Diagnosis(summary=f"{ctx.target.name}: {summary}", evidence=evidence)
