"""Probe results: what one check of one target saw, and the fault kinds it points at.

A probe never raises for a broken target: it returns a failed ``ProbeResult`` whose
``faults`` name what is wrong in the platform's incident vocabulary. Detection works per
(target, fault kind) over these results.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from floorwatch.catalogue import FaultKind, ProbeKind, TargetKind
from floorwatch.errors import (
    AdapterError,
    CommandFailed,
    ConnectError,
    ProbeTimeout,
    ProtocolError,
)


class ProbeResult(BaseModel):
    """One probe outcome. ``ok`` is True exactly when ``faults`` is empty."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = Field(min_length=1)
    zone: str = Field(min_length=1)
    probe_kind: str = Field(min_length=1)
    # Which of the target's probes: the kind, plus the path for an HTTP probe with its own
    # (``http:/v1/sessions/stats``). Detection keeps one series per (target, probe_id).
    probe_id: str = ""
    ts: AwareDatetime
    ok: bool
    latency_ms: float | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    faults: tuple[str, ...] = ()
    error_class: str | None = None
    error_message: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_probe_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("probe_id") and data.get("probe_kind"):
            return {**data, "probe_id": str(data["probe_kind"])}
        return data

    @model_validator(mode="after")
    def _ok_means_no_fault(self) -> ProbeResult:
        if self.ok == bool(self.faults):
            raise ValueError(
                "a result is ok exactly when it names no fault "
                f"(ok={self.ok}, faults={list(self.faults)})"
            )
        return self


def now_utc() -> datetime:
    return datetime.now(UTC)


def probe_id(probe_kind: ProbeKind | str, path: str | None = None) -> str:
    """The id of a target's probe: its kind, plus its own HTTP path when it has one."""
    return f"{probe_kind}:{path}" if path else str(probe_kind)


def passed(
    target: str, zone: str, probe_kind: ProbeKind | str, *, ts: datetime,
    latency_ms: float | None, values: dict[str, Any] | None = None, probe: str = "",
) -> ProbeResult:
    """A result with nothing wrong."""
    return ProbeResult(
        target=target, zone=zone, probe_kind=str(probe_kind), probe_id=probe, ts=ts, ok=True,
        latency_ms=latency_ms, values=values or {},
    )


def failed(
    target: str, zone: str, probe_kind: ProbeKind | str, *, ts: datetime,
    faults: tuple[FaultKind | str, ...], message: str, error_class: str | None = None,
    latency_ms: float | None = None, values: dict[str, Any] | None = None, probe: str = "",
) -> ProbeResult:
    """A result naming what is wrong; ``error_class`` is the Floorwatch error class name
    for failures of the I/O itself, None for a target that answered but is unhealthy."""
    return ProbeResult(
        target=target, zone=zone, probe_kind=str(probe_kind), probe_id=probe, ts=ts, ok=False,
        latency_ms=latency_ms, values=values or {}, faults=tuple(str(f) for f in faults),
        error_class=error_class, error_message=message[:2000],
    )


# The fault an unreachable target points at, by its kind: a provider that does not answer
# is a provider outage, a terminal is offline, a cash device faulty; the rest are down.
UNREACHABLE_FAULT: dict[TargetKind, FaultKind] = {
    TargetKind.GAME_PROVIDER: FaultKind.PROVIDER_OUTAGE,
    TargetKind.TERMINAL: FaultKind.TERMINAL_OFFLINE,
    TargetKind.BILL_ACCEPTOR: FaultKind.CASH_DEVICE_FAULT,
    TargetKind.PRINTER: FaultKind.CASH_DEVICE_FAULT,
}

# The fault a target that answers wrongly points at.
BAD_ANSWER_FAULT: dict[TargetKind, FaultKind] = {
    TargetKind.GAME_PROVIDER: FaultKind.PROVIDER_OUTAGE,
    TargetKind.TERMINAL: FaultKind.TERMINAL_OFFLINE,
    TargetKind.BILL_ACCEPTOR: FaultKind.CASH_DEVICE_FAULT,
    TargetKind.PRINTER: FaultKind.CASH_DEVICE_FAULT,
}


def fault_for_error(kind: TargetKind, error: AdapterError) -> FaultKind:
    """The fault kind an I/O failure of a target of ``kind`` points at."""
    if isinstance(error, (ConnectError, ProbeTimeout)):
        return UNREACHABLE_FAULT.get(kind, FaultKind.SERVICE_DOWN)
    if isinstance(error, (ProtocolError, CommandFailed)):
        return BAD_ANSWER_FAULT.get(kind, FaultKind.API_INTEGRATION_ERROR)
    return UNREACHABLE_FAULT.get(kind, FaultKind.SERVICE_DOWN)
