"""Detection: from recent probe results to incidents to open and resolve. Pure and deterministic.

``detect(inventory, history, open_incidents, now)`` reads each target's recent results and the
incidents the store holds open, and returns ``Decisions``: incidents to open, incidents to
resolve, results ignored because of maintenance, and a state per target for the dashboard.
It does no I/O and never reads the clock: ``now`` is a parameter, so the same input always
gives the same output, whatever the order of the ``history`` mapping.

Series and faults
    Results are grouped into series, one per (target, probe_id), ordered by time. For a fault
    kind F, a result of a series is *failing-F* when F is in its faults, a *success* when it is
    ok, and *neutral* otherwise (it failed with other faults): a neutral result neither
    extends nor breaks a failing-F streak. Each series uses the thresholds of the probe that
    produced it (``failures_to_open``, ``successes_to_resolve``); a probe id the target does not
    declare (a probe since removed from the inventory) uses the inventory's defaults.

Opening
    (target, F) opens when the newest ``failures_to_open`` non-neutral results of some series
    are all failing-F and no incident is open for (target, F). One decision per (target, F),
    however many series see F; its ``onset_at`` is the first result of the earliest failing
    streak and its evidence every failing-F result of the streaks. One result naming two
    faults (stuck bets and delayed payments) can open two incidents.

Resolving
    An open incident (target, F) resolves when every series of the target that holds a
    failing-F result in the history ends with ``successes_to_resolve`` consecutive successes
    (hysteresis: one success is not enough with the default of two). When no series shows F
    any more (it failed before the visible history), every series of the target must end so.
    Neutral results never resolve anything: they break a run of successes. ``recovered_at`` is
    the first success of the final run (the latest such start over the series).

Flapping
    A series *changes state* when a result's ok differs from the one before it. A series with
    at least ``flap_changes`` changes within ``flap_window`` before ``now`` is flapping: the
    target gets ONE ``flapping`` incident (if none is open) and that series opens no per-fault
    incident while it flaps, so a bouncing service does not churn incidents. A flapping
    incident resolves once every series of the target has had no change for a full
    ``flap_window`` and ends in success; the history must reach back that far to prove it.
    ``flapping`` is detection's own verdict: a probe result naming it opens nothing by itself.

Maintenance
    Results taken while ``inventory.in_maintenance(target, ts)`` are returned in ``excluded``
    and open nothing. A window also restarts the count: failures before it never add up with
    failures after it, since work often starts a few minutes before the window does. A target
    in maintenance at ``now`` opens nothing. Incidents already open can still resolve, and a
    success in maintenance counts as proof of recovery.

Holds
    A target held at run time (``on_hold``, for example a primary fenced by a failover) opens
    nothing, and neither does anything that depends on it, directly or not: its probes fail
    on purpose. Results are kept and count as they are; open incidents can still resolve.

Dependencies
    Targets are processed parents first (``depends_on``). When a parent has an incident open
    (held by the store and not resolving now, or opened in this pass) of an *unreachable* kind
    (service_down, provider_outage, terminal_offline, cash_device_fault; an overloaded
    server is not unreachable), a child's open is still returned, with
    ``suppressed_by=(parent, fault)`` and the parent's ``parent_incident_id`` when the store
    holds one: the flow records it linked and
    starts no runbook. With several parents down, the first in ``depends_on`` order wins, and
    its first fault in name order.

States
    ``maintenance`` (in a window at ``now``), else ``down`` (an unreachable-kind incident open
    after this pass, or a series whose newest result names an unreachable-kind fault), else
    ``degraded`` (any other incident open, or a series whose newest result failed), else ``up``
    (the newest result of every series ok), else ``unknown`` (no results and nothing open).

``history`` may hold targets the inventory does not (ignored) and miss some (no decision for
them); incidents of targets the inventory does not hold are left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from floorwatch.catalogue import FaultKind
from floorwatch.inventory import Inventory, MaintenanceWindow, Target
from floorwatch.results import ProbeResult, probe_id

__all__ = [
    "UNREACHABLE_FAULTS",
    "Decisions",
    "DetectionConfig",
    "OpenDecision",
    "OpenIncident",
    "ResolveDecision",
    "detect",
    "is_unreachable",
]

# Faults that mean the target cannot be reached at all, so its dependants fail with it.
UNREACHABLE_FAULTS: frozenset[str] = frozenset(
    {
        FaultKind.SERVICE_DOWN,
        FaultKind.PROVIDER_OUTAGE,
        FaultKind.TERMINAL_OFFLINE,
        FaultKind.CASH_DEVICE_FAULT,
    }
)

FLAPPING = str(FaultKind.FLAPPING)


@dataclass(frozen=True)
class OpenIncident:
    """A not-resolved incident from the store."""

    id: int
    target: str
    fault_kind: str
    opened_at: datetime
    parent_incident_id: int | None = None


@dataclass(frozen=True)
class DetectionConfig:
    """Tunables of detection that the inventory does not carry per probe."""

    flap_changes: int = 4  # state changes within flap_window that mean flapping
    flap_window: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.flap_changes < 1:
            raise ValueError(f"flap_changes must be >= 1, not {self.flap_changes}")
        if self.flap_window <= timedelta(0):
            raise ValueError(f"flap_window must be positive, not {self.flap_window}")


@dataclass(frozen=True)
class OpenDecision:
    """Open an incident for (target, fault_kind)."""

    target: str
    zone: str
    fault_kind: str
    severity: str  # the target's criticality: critical, high, medium or low
    onset_at: datetime  # ts of the first failing result of the streak
    detected_at: datetime  # now
    summary: str  # "api-gateway: service_down after 3 failed http probes: connection refused"
    evidence: tuple[ProbeResult, ...]  # the failing streak
    suppressed_by: tuple[str, str] | None = None  # (parent target, parent fault) when it is down
    parent_incident_id: int | None = None  # that parent's incident, when the store holds it


@dataclass(frozen=True)
class ResolveDecision:
    """Resolve the open incident ``incident_id``."""

    incident_id: int
    target: str
    fault_kind: str
    recovered_at: datetime  # ts of the first success of the resolving streak
    evidence: tuple[ProbeResult, ...]


@dataclass(frozen=True)
class Decisions:
    """Everything one detection pass decided."""

    opens: tuple[OpenDecision, ...]
    resolves: tuple[ResolveDecision, ...]
    excluded: tuple[ProbeResult, ...]  # results ignored because of maintenance
    states: dict[str, str]  # target -> up, down, degraded, maintenance or unknown


def is_unreachable(target: Target, fault_kind: str) -> bool:
    """Whether ``fault_kind`` on ``target`` means it cannot be reached (children fail too).

    Only faults of reachability count, for servers too: an overloaded server still serves,
    and its children's own faults must not be hidden behind it (measured: a busy machine
    opened infrastructure_overload on both servers and silenced a hung game engine).
    """
    del target  # the same rule for every kind
    return fault_kind in UNREACHABLE_FAULTS


# -- series ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """The results of one probe of one target, oldest first, with that probe's thresholds."""

    probe_id: str
    failures_to_open: int
    successes_to_resolve: int
    results: tuple[ProbeResult, ...]

    @property
    def label(self) -> str:
        """How a person names the probe: ``http``, or ``http /v1/sessions/stats``."""
        return self.probe_id.replace(":", " ", 1)

    def failing_streak(self, fault: str) -> tuple[ProbeResult, ...]:
        """The newest failing-``fault`` results up to the newest success (neutrals skipped)."""
        streak: list[ProbeResult] = []
        for result in reversed(self.results):
            if fault in result.faults:
                streak.append(result)
            elif result.ok:
                break
        return tuple(reversed(streak))

    def success_run(self) -> tuple[ProbeResult, ...]:
        """The newest consecutive successes (empty when the newest result failed)."""
        count = 0
        for result in reversed(self.results):
            if not result.ok:
                break
            count += 1
        return self.results[len(self.results) - count :]

    def changes(self) -> list[datetime]:
        """When the series changed state: ts of each result whose ok differs from the last."""
        return [
            later.ts
            for earlier, later in zip(self.results, self.results[1:], strict=False)
            if earlier.ok != later.ok
        ]


def _sort_key(result: ProbeResult) -> tuple[datetime, str, bool, tuple[str, ...], str]:
    # Fully ordered, so that results sharing a timestamp cannot make the output depend on
    # the order the caller passed them in.
    return (result.ts, result.probe_id, result.ok, result.faults, result.error_message or "")


def _series(
    target: Target, defaults: tuple[int, int], results: Iterable[ProbeResult]
) -> list[_Series]:
    """One series per probe id, in probe id order, each with its probe's thresholds."""
    probes: dict[str, tuple[int, int]] = {}
    for probe in target.probes:
        key = probe_id(probe.kind, getattr(probe, "path", None))
        probes.setdefault(key, (probe.failures_to_open, probe.successes_to_resolve))
    grouped: dict[str, list[ProbeResult]] = {}
    for result in results:
        grouped.setdefault(result.probe_id, []).append(result)
    return [
        _Series(key, *probes.get(key, defaults), results=tuple(grouped[key]))
        for key in sorted(grouped)
    ]


def _in_windows(windows: Sequence[MaintenanceWindow], ts: datetime) -> bool:
    return any(window.active_at(ts) for window in windows)


# -- the pass ----------------------------------------------------------------------------------


def _parents_first(inventory: Inventory) -> list[Target]:
    """Every target, each after the targets it depends on, otherwise in file order."""
    order: list[Target] = []
    seen: set[str] = set()
    for root in inventory.targets():
        if root.name in seen:
            continue
        seen.add(root.name)
        # Iterative depth-first search, so that a long dependency chain cannot exhaust the stack.
        stack = [(root, iter(inventory.parents(root.name)))]
        while stack:
            node, parents = stack[-1]
            for parent in parents:
                if parent.name not in seen:
                    seen.add(parent.name)
                    stack.append((parent, iter(inventory.parents(parent.name))))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


@dataclass
class _Pass:
    """State shared while targets are processed in dependency order."""

    inventory: Inventory
    now: datetime
    config: DetectionConfig
    held: dict[str, dict[str, list[OpenIncident]]]  # target -> fault -> open incidents, by id
    on_hold: frozenset[str] = frozenset()  # held targets and everything depending on them
    opens: list[OpenDecision] = field(default_factory=list)
    resolves: list[ResolveDecision] = field(default_factory=list)
    excluded: list[ProbeResult] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    # target -> fault -> the held incident's id (None when opened in this pass), once processed
    open_after: dict[str, dict[str, int | None]] = field(default_factory=dict)

    def run(self, history: Mapping[str, Sequence[ProbeResult]]) -> None:
        for target in _parents_first(self.inventory):
            results = history.get(target.name)
            self.target(target, results if results is not None else ())

    def target(self, target: Target, given: Sequence[ProbeResult]) -> None:
        name = target.name
        for result in given:
            if result.target != name:
                raise ValueError(
                    f"history[{name!r}] holds a result of target {result.target!r} "
                    f"({result.probe_id} at {result.ts.isoformat()})"
                )
        results = sorted(given, key=_sort_key)
        windows = self.inventory.windows_for(name)
        inside = [r for r in results if windows and _in_windows(windows, r.ts)]
        self.excluded.extend(inside)
        # Only results after the last maintenance may open incidents (see the module doc).
        last_inside = inside[-1].ts if inside else None
        fresh = [r for r in results if last_inside is None or r.ts > last_inside]
        defaults = self.inventory.defaults
        thresholds = (defaults.failures_to_open, defaults.successes_to_resolve)
        every = _series(target, thresholds, results)
        openable = _series(target, thresholds, fresh)

        held = dict(sorted(self.held.get(name, {}).items()))
        still_open: dict[str, int | None] = {}
        for fault, incidents in held.items():
            recovery = self.resolve(fault, every)
            if recovery is None:
                still_open[fault] = incidents[0].id
                continue
            # The store should hold one per (target, fault); if it holds more, all recover.
            for incident in incidents:
                self.resolves.append(
                    ResolveDecision(
                        incident.id, name, fault, recovery.recovered_at, recovery.evidence
                    )
                )

        in_maintenance = bool(windows) and _in_windows(windows, self.now)
        if not in_maintenance and name not in self.on_hold:
            for decision in self.open(target, openable, held):
                self.opens.append(decision)
                still_open.setdefault(decision.fault_kind, None)
        self.open_after[name] = still_open
        self.states[name] = self.state(target, every, still_open, in_maintenance)

    # -- resolving

    def resolve(self, fault: str, every: list[_Series]) -> _Recovery | None:
        """How (target, fault) recovered, or None while it has not."""
        if not every:
            return None  # never resolve without evidence
        if fault == FLAPPING:
            return self.resolve_flapping(every)
        showing = [series for series in every if any(fault in r.faults for r in series.results)]
        runs: list[tuple[ProbeResult, ...]] = []
        for series in showing or every:
            run = series.success_run()
            if len(run) < series.successes_to_resolve:
                return None
            runs.append(run)
        return _Recovery.of(runs)

    def resolve_flapping(self, every: list[_Series]) -> _Recovery | None:
        runs: list[tuple[ProbeResult, ...]] = []
        for series in every:
            run = series.success_run()
            # A run of successes starts at the last change, or at the first visible result.
            if not run or self.now - run[0].ts < self.config.flap_window:
                return None
            runs.append(run)
        return _Recovery.of(runs)

    # -- opening

    def open(
        self, target: Target, openable: list[_Series], held: Mapping[str, object]
    ) -> list[OpenDecision]:
        decisions: list[OpenDecision] = []
        since = self.now - self.config.flap_window
        flapping: list[tuple[_Series, list[datetime]]] = []
        steady: list[_Series] = []
        for series in openable:
            recent = [ts for ts in series.changes() if ts >= since]
            if len(recent) >= self.config.flap_changes:
                flapping.append((series, recent))
            else:
                steady.append(series)
        if flapping and FLAPPING not in held:
            decisions.append(self.flapping(target, flapping))

        faults = sorted({f for s in steady for r in s.results for f in r.faults} - {FLAPPING})
        for fault in faults:
            if fault in held:
                continue
            streaks = [
                (series, streak)
                for series in steady
                if len(streak := series.failing_streak(fault)) >= series.failures_to_open
            ]
            if streaks:
                decisions.append(self.fault(target, fault, streaks))
        return decisions

    def flapping(
        self, target: Target, flapping: list[tuple[_Series, list[datetime]]]
    ) -> OpenDecision:
        since = self.now - self.config.flap_window
        onset = min(changes[0] for _series, changes in flapping)
        evidence = sorted(
            (r for series, _changes in flapping for r in series.results if r.ts >= since),
            key=_sort_key,
        )
        minutes = self.config.flap_window.total_seconds() / 60
        parts = [f"{len(changes)} state changes of {series.label}" for series, changes in flapping]
        summary = f"{target.name}: flapping, {' and '.join(parts)} within {minutes:g} min"
        return self.decision(target, FLAPPING, onset, summary, tuple(evidence))

    def fault(
        self, target: Target, fault: str, streaks: list[tuple[_Series, tuple[ProbeResult, ...]]]
    ) -> OpenDecision:
        streaks = sorted(streaks, key=lambda item: (item[1][0].ts, item[0].probe_id))
        evidence = tuple(sorted((r for _s, streak in streaks for r in streak), key=_sort_key))
        parts = [
            f"{len(streak)} failed {series.label} probe{'s' if len(streak) != 1 else ''}"
            for series, streak in streaks
        ]
        summary = f"{target.name}: {fault} after {' and '.join(parts)}"
        message = evidence[-1].error_message
        if message:
            summary += f": {message}"
        return self.decision(target, fault, streaks[0][1][0].ts, summary, evidence)

    def decision(
        self,
        target: Target,
        fault: str,
        onset: datetime,
        summary: str,
        evidence: tuple[ProbeResult, ...],
    ) -> OpenDecision:
        suppressed_by, parent_id = self.parent_down(target)
        if suppressed_by is not None:
            summary += f" (suppressed: {suppressed_by[0]} is {suppressed_by[1]})"
        return OpenDecision(
            target=target.name,
            zone=self.inventory.zone_of(target.name).name,
            fault_kind=fault,
            severity=str(target.criticality),
            onset_at=onset,
            detected_at=self.now,
            summary=summary,
            evidence=evidence,
            suppressed_by=suppressed_by,
            parent_incident_id=parent_id,
        )

    def parent_down(self, target: Target) -> tuple[tuple[str, str] | None, int | None]:
        """The first parent fault that makes ``target`` unreachable, and its incident id."""
        for parent in self.inventory.parents(target.name):
            faults = self.open_after.get(parent.name, {})
            for fault in sorted(faults):
                if is_unreachable(parent, fault):
                    return (parent.name, fault), faults[fault]
        return None, None

    # -- state

    @staticmethod
    def state(
        target: Target, every: list[_Series], still_open: Mapping[str, object], maintenance: bool
    ) -> str:
        if maintenance:
            return "maintenance"
        newest = [series.results[-1] for series in every]
        if not newest and not still_open:
            return "unknown"
        if any(is_unreachable(target, fault) for fault in still_open) or any(
            is_unreachable(target, fault) for result in newest for fault in result.faults
        ):
            return "down"
        if still_open or not all(result.ok for result in newest):
            return "degraded"
        return "up"


@dataclass(frozen=True)
class _Recovery:
    recovered_at: datetime
    evidence: tuple[ProbeResult, ...]

    @classmethod
    def of(cls, runs: list[tuple[ProbeResult, ...]]) -> _Recovery:
        """Recovered when the last series to recover did; the runs are the evidence."""
        evidence = tuple(sorted((r for run in runs for r in run), key=_sort_key))
        return cls(max(run[0].ts for run in runs), evidence)


def held_and_dependents(inventory: Inventory, on_hold: Collection[str]) -> frozenset[str]:
    """The held targets and every target depending on one of them, directly or not. Names
    the inventory does not know (a hold on a target since removed) are ignored."""
    known = {t.name for t in inventory.targets()}
    found: set[str] = set()
    todo = [name for name in on_hold if name in known]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(child.name for child in inventory.children(name))
    return frozenset(found)


def detect(
    inventory: Inventory,
    history: Mapping[str, Sequence[ProbeResult]],
    open_incidents: Sequence[OpenIncident],
    now: datetime,
    config: DetectionConfig = DetectionConfig(),
    on_hold: Collection[str] = (),
) -> Decisions:
    """Decide which incidents to open and resolve from each target's recent results.

    ``history`` maps a target to its recent results (all its probes), reaching back further
    than ``config.flap_window``; ``open_incidents`` are the incidents the store holds open;
    ``on_hold`` the targets held at run time. See the module docstring for the rules. Raises
    ValueError for a naive ``now`` or a result filed under another target's name.
    """
    if now.tzinfo is None:
        raise ValueError(f"detect needs an aware now, got naive {now.isoformat()}")
    held: dict[str, dict[str, list[OpenIncident]]] = {}
    for incident in sorted(open_incidents, key=lambda i: i.id):
        by_fault = held.setdefault(incident.target, {})
        by_fault.setdefault(incident.fault_kind, []).append(incident)
    run = _Pass(inventory, now, config, held, held_and_dependents(inventory, on_hold))
    run.run(history)
    states = {target.name: run.states[target.name] for target in inventory.targets()}
    return Decisions(tuple(run.opens), tuple(run.resolves), tuple(run.excluded), states)
