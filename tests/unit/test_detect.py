"""Detection turns hand-built probe histories into incidents to open and resolve: thresholds,
hysteresis, deduplication, flapping, maintenance and dependency suppression."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from floorwatch.detect import (
    Decisions,
    DetectionConfig,
    OpenIncident,
    detect,
)
from floorwatch.inventory import Inventory, parse_inventory
from floorwatch.results import ProbeResult, failed, passed

# api is listed before the server it depends on, so that "parents first" is not file order.
INVENTORY = """\
version: 1
contacts:
  ops: {channel: slack, address: "#ops"}
zones:
  - name: core
    escalation: [ops]
    targets:
      - name: api
        kind: http_service
        criticality: critical
        connection: {url: "http://127.0.0.1:9/health"}
        depends_on: [app-1]
        probes: [{kind: http}, {kind: tcp}]
      - name: lobby
        kind: http_service
        criticality: low
        connection: {url: "http://127.0.0.1:9/lobby"}
        depends_on: [api]
      - name: app-1
        kind: server
        criticality: high
        connection: {host: 127.0.0.1, port: 22, block: app-1-ssh}
      - name: login
        kind: http_service
        connection: {url: "http://127.0.0.1:9/health"}
        probes:
          - {kind: http}
          - {kind: http, path: /v1/sessions/stats, fault: security_alert, failures_to_open: 2}
      - name: game-db
        kind: database
        connection: {url: "postgresql+psycopg://127.0.0.1/game"}
  - name: payments
    escalation: [ops]
    targets:
      - name: wallet
        kind: payment_provider
        criticality: high
        connection: {url: "http://127.0.0.1:9/wallet"}
maintenance:
  - name: wallet-upgrade
    targets: [wallet]
    start: 2026-03-02T12:30:00
    end: 2026-03-02T13:00:00
    timezone: UTC
"""

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)
WINDOW_START, WINDOW_END = 60, 120  # steps of the wallet's maintenance window
ZONES = {"wallet": "payments"}


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return parse_inventory(INVENTORY)


def at(step: int) -> datetime:
    """The time of probe step ``step``: every 30 s from T0."""
    return T0 + step * STEP


def ok(target: str, step: int, probe: str = "http") -> ProbeResult:
    return passed(
        target, ZONES.get(target, "core"), probe.split(":")[0], ts=at(step), latency_ms=4.0,
        probe=probe,
    )


def bad(
    target: str, step: int, *faults: str, probe: str = "http",
    message: str = "connection refused",
) -> ProbeResult:
    return failed(
        target, ZONES.get(target, "core"), probe.split(":")[0], ts=at(step),
        faults=faults or ("service_down",), message=message, probe=probe,
    )


def history(*results: ProbeResult) -> dict[str, list[ProbeResult]]:
    grouped: dict[str, list[ProbeResult]] = {}
    for result in results:
        grouped.setdefault(result.target, []).append(result)
    return grouped


def incident(id_: int, target: str, fault: str = "service_down") -> OpenIncident:
    return OpenIncident(id=id_, target=target, fault_kind=fault, opened_at=T0)


def run(
    inventory: Inventory, results: Iterable[ProbeResult],
    incidents: Sequence[OpenIncident] = (), now: datetime | None = None,
) -> Decisions:
    """detect() with ``now`` one second after the newest result unless given."""
    results = list(results)
    if now is None:
        now = max(r.ts for r in results) + timedelta(seconds=1)
    return detect(inventory, history(*results), incidents, now)


def opened(decisions: Decisions) -> list[tuple[str, str]]:
    return [(d.target, d.fault_kind) for d in decisions.opens]


# -- thresholds --------------------------------------------------------------------------------


def test_two_failures_open_nothing_and_the_third_opens_one_incident(inventory: Inventory) -> None:
    """Two consecutive failures open nothing; the third opens one incident with its streak."""
    results = [ok("api", 0), bad("api", 1), bad("api", 2)]
    assert run(inventory, results).opens == ()

    decisions = run(inventory, [*results, bad("api", 3)])
    (decision,) = decisions.opens
    assert (decision.target, decision.zone, decision.fault_kind, decision.severity) == (
        "api", "core", "service_down", "critical",
    )
    assert decision.onset_at == at(1)
    assert decision.detected_at == at(3) + timedelta(seconds=1)
    assert decision.summary == "api: service_down after 3 failed http probes: connection refused"
    assert decision.evidence == (*results[1:], bad("api", 3))
    assert decision.suppressed_by is None
    assert decision.parent_incident_id is None
    assert decisions.resolves == ()


def test_threshold_comes_from_the_probe_that_produced_the_series(inventory: Inventory) -> None:
    """A probe with failures_to_open 2 opens after two; an undeclared probe id uses defaults."""
    stats = "http:/v1/sessions/stats"
    two = [
        bad("login", i, "security_alert", probe=stats, message="412 failed logins") for i in (0, 1)
    ]
    (decision,) = run(inventory, two).opens
    assert decision.summary == (
        "login: security_alert after 2 failed http /v1/sessions/stats probes: 412 failed logins"
    )

    legacy = [bad("login", i, probe="http:/old") for i in (0, 1)]
    assert run(inventory, legacy).opens == ()
    assert opened(run(inventory, [*legacy, bad("login", 2, probe="http:/old")])) == [
        ("login", "service_down")
    ]


def test_neutral_results_neither_extend_nor_break_a_streak(inventory: Inventory) -> None:
    """Failures with another fault are skipped: F, other, F, other, F opens F only."""
    other = "api_integration_error"
    results = [
        bad("api", 0), bad("api", 1, other), bad("api", 2), bad("api", 3, other), bad("api", 4),
    ]
    (decision,) = run(inventory, results).opens
    assert decision.fault_kind == "service_down"
    assert decision.onset_at == at(0)
    assert [r.ts for r in decision.evidence] == [at(0), at(2), at(4)]


def test_a_success_breaks_a_failing_streak(inventory: Inventory) -> None:
    """F, F, ok, F opens nothing: the success restarts the count."""
    results = [bad("api", 0), bad("api", 1), ok("api", 2), bad("api", 3), bad("api", 4)]
    assert run(inventory, results).opens == ()


# -- hysteresis ----------------------------------------------------------------------------------


def test_one_success_keeps_an_incident_open_and_two_resolve_it(inventory: Inventory) -> None:
    """With successes_to_resolve 2, one success resolves nothing; two resolve at the first."""
    held = [incident(5, "api")]
    failing = [bad("api", i) for i in range(3)]
    one = run(inventory, [*failing, ok("api", 3)], held)
    assert (one.opens, one.resolves) == ((), ())

    two = run(inventory, [*failing, ok("api", 3), ok("api", 4)], held)
    (resolve,) = two.resolves
    assert (resolve.incident_id, resolve.target, resolve.fault_kind) == (5, "api", "service_down")
    assert resolve.recovered_at == at(3)
    assert resolve.evidence == (ok("api", 3), ok("api", 4))
    assert two.opens == ()


def test_neutral_results_never_resolve_an_incident(inventory: Inventory) -> None:
    """An incident stays open through other faults, and a neutral result breaks the successes."""
    held = [incident(5, "api")]
    other = "api_integration_error"
    neutral = [bad("api", i) for i in range(3)] + [bad("api", i, other) for i in range(3, 6)]
    assert run(inventory, neutral, held).resolves == ()
    broken = [bad("api", 0), ok("api", 1), bad("api", 2, other), ok("api", 3)]
    assert run(inventory, broken, held).resolves == ()


def test_incident_whose_failures_left_the_history_resolves_on_successes(
    inventory: Inventory,
) -> None:
    """No failing result visible and every series ending in successes resolves the incident."""
    held = [incident(9, "api")]
    (resolve,) = run(inventory, [ok("api", 0), ok("api", 1)], held).resolves
    assert (resolve.incident_id, resolve.recovered_at) == (9, at(0))
    assert run(inventory, [ok("api", 0)], held).resolves == ()
    assert run(inventory, [ok("lobby", 0)], held).resolves == ()  # no evidence about api


# -- deduplication -------------------------------------------------------------------------------


def test_an_open_incident_is_not_reopened(inventory: Inventory) -> None:
    """A target still failing with an incident held open gets no new decision."""
    decisions = run(inventory, [bad("api", i) for i in range(6)], [incident(5, "api")])
    assert (decisions.opens, decisions.resolves) == ((), ())
    assert decisions.states["api"] == "down"


def test_two_probes_seeing_the_same_fault_give_one_decision(inventory: Inventory) -> None:
    """HTTP and TCP both failing service_down open one incident carrying both streaks."""
    http = [bad("api", i) for i in range(3)]
    tcp = [bad("api", i, probe="tcp", message="timed out") for i in range(1, 4)]
    (decision,) = run(inventory, [*http, *tcp]).opens
    assert decision.onset_at == at(0)
    assert len(decision.evidence) == 6
    assert decision.summary == (
        "api: service_down after 3 failed http probes and 3 failed tcp probes: timed out"
    )


def test_incident_seen_by_two_probes_resolves_when_both_recover(inventory: Inventory) -> None:
    """Every series that showed the fault must recover; recovery is when the last one did."""
    held = [incident(5, "api")]
    http = [bad("api", 0), ok("api", 1), ok("api", 2), ok("api", 3)]
    tcp_down = [bad("api", i, probe="tcp") for i in range(4)]
    assert run(inventory, [*http, *tcp_down], held).resolves == ()
    tcp_up = [bad("api", 0, probe="tcp"), bad("api", 1, probe="tcp"),
              ok("api", 2, probe="tcp"), ok("api", 3, probe="tcp")]
    (resolve,) = run(inventory, [*http, *tcp_up], held).resolves
    assert resolve.recovered_at == at(2)
    assert len(resolve.evidence) == 5


def test_one_result_naming_two_faults_opens_both(inventory: Inventory) -> None:
    """SQL results showing stuck bets and delayed payments open one incident for each."""
    faults = ("stuck_bets", "payment_processing_delay")
    results = [
        bad("game-db", i, *faults, probe="sql", message="4 bets open > 10 min") for i in range(3)
    ]
    decisions = run(inventory, results)
    assert opened(decisions) == [
        ("game-db", "payment_processing_delay"), ("game-db", "stuck_bets"),
    ]
    assert all(d.severity == "medium" and len(d.evidence) == 3 for d in decisions.opens)
    assert decisions.states["game-db"] == "degraded"


# -- flapping ------------------------------------------------------------------------------------


def test_flapping_series_opens_one_flapping_incident_instead_of_fault_incidents(
    inventory: Inventory,
) -> None:
    """Four state changes within ten minutes open one flapping incident and no service_down."""
    pattern = [True, True, False, False, True, False, False, True, False, False, False]
    results = [ok("api", i) if up else bad("api", i) for i, up in enumerate(pattern)]
    (decision,) = run(inventory, results).opens
    assert decision.fault_kind == "flapping"
    assert decision.onset_at == at(2)  # the first change
    assert decision.summary == "api: flapping, 5 state changes of http within 10 min"
    assert len(decision.evidence) == len(results)


def test_flapping_target_does_not_churn_and_resolves_after_a_stable_window(
    inventory: Inventory,
) -> None:
    """Sweep by sweep, a bouncing target gets one flapping incident, no fault incident, and
    that incident resolves once the target has been up for a full window."""
    pattern = (
        [True] * 6
        + [False, False, True] * 3  # flaps before three failures in a row occur
        + [False, False, False, True, True] * 4  # would open and resolve service_down each time
        + [True] * 30
    )
    last_change = len(pattern) - 32  # the first success of the last cycle
    results: list[ProbeResult] = []
    held: list[OpenIncident] = []
    events: list[tuple[int, str, str]] = []
    for step, up in enumerate(pattern):
        results.append(ok("api", step) if up else bad("api", step))
        decisions = run(inventory, results, held)
        for decision in decisions.opens:
            events.append((step, "open", decision.fault_kind))
            held.append(incident(len(events), "api", decision.fault_kind))
        for resolve in decisions.resolves:
            events.append((step, "resolve", resolve.fault_kind))
            assert resolve.recovered_at == at(last_change)
            held = [i for i in held if i.id != resolve.incident_id]
    flap_opened_at = 6 + 5  # the fourth change: ok, F, F, ok, F, F, ok
    assert events == [
        (flap_opened_at, "open", "flapping"),
        (last_change + 20, "resolve", "flapping"),  # 20 steps of 30 s: ten minutes up
    ]


def test_flapping_window_and_count_are_configurable(inventory: Inventory) -> None:
    """Changes older than the window do not count; a higher flap_changes needs more."""
    pattern = [True, False, True, False, True] + [True] * 4
    results = [ok("api", i) if up else bad("api", i) for i, up in enumerate(pattern)]
    now = at(len(pattern))
    assert opened(detect(inventory, history(*results), (), now)) == [("api", "flapping")]
    short = DetectionConfig(flap_window=timedelta(minutes=2))
    assert detect(inventory, history(*results), (), now, short).opens == ()
    more = DetectionConfig(flap_changes=5)
    assert detect(inventory, history(*results), (), now, more).opens == ()
    with pytest.raises(ValueError, match="flap_changes must be >= 1"):
        DetectionConfig(flap_changes=0)


# -- maintenance ---------------------------------------------------------------------------------


def test_failures_in_maintenance_open_nothing_and_are_returned_excluded(
    inventory: Inventory,
) -> None:
    """Nothing opens while a target is in maintenance; its results there come back excluded."""
    inside = [bad("wallet", i) for i in range(WINDOW_START, WINDOW_START + 5)]
    before = [ok("wallet", WINDOW_START - 1)]
    decisions = run(inventory, [*before, *inside])
    assert decisions.opens == ()
    assert decisions.excluded == tuple(inside)
    assert decisions.states["wallet"] == "maintenance"

    just_before = [bad("wallet", i) for i in range(WINDOW_START - 3, WINDOW_START)]
    assert run(inventory, just_before, now=at(WINDOW_START) + timedelta(seconds=1)).opens == ()


def test_outage_overlapping_the_window_start_never_adds_up(inventory: Inventory) -> None:
    """Failures just before a window and just after it do not add up to an incident."""
    before = [bad("wallet", WINDOW_START - 2), bad("wallet", WINDOW_START - 1)]
    inside = [bad("wallet", i) for i in range(WINDOW_START, WINDOW_END)]
    assert run(inventory, [*before, *inside]).opens == ()

    after = [bad("wallet", WINDOW_END), bad("wallet", WINDOW_END + 1)]
    decisions = run(inventory, [*before, *inside, *after])
    assert decisions.opens == ()
    assert len(decisions.excluded) == WINDOW_END - WINDOW_START

    third = bad("wallet", WINDOW_END + 2)
    (decision,) = run(inventory, [*before, *inside, *after, third]).opens
    assert decision.onset_at == at(WINDOW_END)
    assert (decision.zone, decision.fault_kind) == ("payments", "service_down")


def test_incident_open_before_maintenance_resolves_inside_it(inventory: Inventory) -> None:
    """An incident already open resolves on successes seen during the window."""
    held = [incident(3, "wallet")]
    results = [bad("wallet", WINDOW_START - 1), ok("wallet", WINDOW_START + 1),
               ok("wallet", WINDOW_START + 2)]
    decisions = run(inventory, results, held)
    (resolve,) = decisions.resolves
    assert (resolve.incident_id, resolve.recovered_at) == (3, at(WINDOW_START + 1))
    assert decisions.excluded == tuple(results[1:])


# -- dependencies --------------------------------------------------------------------------------


def test_child_of_a_down_parent_opens_suppressed_and_linked(inventory: Inventory) -> None:
    """With the parent's service_down held open, the child's open names it and its id."""
    parent = [bad("app-1", i, probe="ssh_metrics") for i in range(3)]
    child = [bad("api", i) for i in range(3)]
    (decision,) = run(inventory, [*child, *parent], [incident(7, "app-1")]).opens
    assert decision.target == "api"
    assert decision.suppressed_by == ("app-1", "service_down")
    assert decision.parent_incident_id == 7
    assert decision.summary.endswith("(suppressed: app-1 is service_down)")


def test_parent_and_child_failing_in_one_pass_open_parent_first(inventory: Inventory) -> None:
    """Parent and child failing together: the parent opens first, the child suppressed by it."""
    parent = [bad("app-1", i, probe="ssh_metrics") for i in range(3)]
    child = [bad("api", i) for i in range(3)]
    grandchild = [bad("lobby", i) for i in range(3)]
    decisions = run(inventory, [*grandchild, *child, *parent])
    assert opened(decisions) == [
        ("app-1", "service_down"), ("api", "service_down"), ("lobby", "service_down"),
    ]
    app, api, lobby = decisions.opens
    assert app.suppressed_by is None
    assert (api.suppressed_by, api.parent_incident_id) == (("app-1", "service_down"), None)
    assert (lobby.suppressed_by, lobby.parent_incident_id) == (("api", "service_down"), None)


def test_only_unreachable_parents_suppress_children(inventory: Inventory) -> None:
    """A parent with a wrong answer or an overload does not suppress; an outage does."""
    api = [bad("api", i, "api_integration_error", message="bad json") for i in range(3)]
    lobby = [bad("lobby", i) for i in range(3)]
    decisions = run(inventory, [*api, *lobby])
    assert [d.suppressed_by for d in decisions.opens] == [None, None]

    overload = [bad("app-1", i, "infrastructure_overload", probe="ssh_metrics") for i in range(3)]
    decisions = run(inventory, [*overload, *api])
    assert decisions.opens[1].suppressed_by is None

    down = [bad("app-1", i, "service_down", probe="ssh_metrics") for i in range(3)]
    decisions = run(inventory, [*down, *api])
    assert decisions.opens[1].suppressed_by == ("app-1", "service_down")


def test_parent_resolving_in_the_same_pass_does_not_suppress(inventory: Inventory) -> None:
    """A parent incident that resolves in this pass no longer suppresses its children."""
    parent = [bad("app-1", 0, probe="ssh_metrics"), ok("app-1", 1, probe="ssh_metrics"),
              ok("app-1", 2, probe="ssh_metrics")]
    child = [bad("api", i) for i in range(3)]
    decisions = run(inventory, [*parent, *child], [incident(7, "app-1")])
    assert [r.incident_id for r in decisions.resolves] == [7]
    (decision,) = decisions.opens
    assert decision.suppressed_by is None


# -- states, bad input, determinism ---------------------------------------------------------------


# -- holds -------------------------------------------------------------------------------------


def test_a_held_server_and_what_runs_on_it_open_nothing(inventory: Inventory) -> None:
    """app-1 is held (a fenced primary): neither it nor api (on it) nor lobby (on api) opens,
    while login, failing the same way, does; a hold on an unknown name is ignored."""
    failing = [bad(t, i, probe="ssh_metrics" if t == "app-1" else "http")
               for t in ("app-1", "api", "lobby", "login") for i in range(3)]
    now = at(2) + timedelta(seconds=1)
    decisions = detect(inventory, history(*failing), [], now, on_hold={"app-1", "gone"})
    assert opened(decisions) == [("login", "service_down")]
    assert decisions.states["app-1"] == "down"  # the dashboard still tells the truth
    unheld = detect(inventory, history(*failing), [], now)
    assert sorted(opened(unheld)) == [("api", "service_down"), ("app-1", "service_down"),
                                      ("lobby", "service_down"), ("login", "service_down")]


def test_an_incident_open_on_a_held_target_still_resolves(inventory: Inventory) -> None:
    results = [bad("api", 0), ok("api", 1), ok("api", 2)]
    decisions = detect(inventory, history(*results), [incident(4, "api")],
                       at(2) + timedelta(seconds=1), on_hold={"app-1"})
    assert [(r.incident_id, r.target) for r in decisions.resolves] == [(4, "api")]


def test_states_summarise_each_target_for_the_dashboard(inventory: Inventory) -> None:
    """up, down, degraded, maintenance and unknown, for every target in the inventory."""
    results = [
        ok("api", 0), ok("api", 1, probe="tcp"),
        bad("app-1", 1, "infrastructure_overload", probe="ssh_metrics"),
        bad("login", 1, "api_integration_error"),
        ok("wallet", WINDOW_START),
        ok("not-in-inventory", 1),
    ]
    decisions = run(inventory, results)
    assert decisions.states == {
        "api": "up", "lobby": "unknown", "app-1": "degraded", "login": "degraded",
        "game-db": "unknown", "wallet": "maintenance",
    }
    held = run(inventory, results, [incident(4, "lobby", "delivery_failure")])
    assert held.states["lobby"] == "degraded"


def test_bad_input_is_refused_with_a_clear_error(inventory: Inventory) -> None:
    """A naive now and a result filed under another target raise ValueError naming them."""
    with pytest.raises(ValueError, match="naive"):
        detect(inventory, {}, (), datetime(2026, 3, 2, 12, 0))
    with pytest.raises(ValueError, match="history\\['api'\\] holds a result of target 'lobby'"):
        detect(inventory, {"api": [ok("lobby", 0)]}, (), at(1))


def test_same_input_gives_same_decisions_whatever_the_order(inventory: Inventory) -> None:
    """Twice the same input, or the same input reordered, gives equal decisions."""
    results = [
        *[bad("app-1", i, probe="ssh_metrics") for i in range(3)],
        *[bad("api", i) for i in range(4)],
        *[bad("api", i, probe="tcp") for i in range(4)],
        *[bad("game-db", i, "stuck_bets", "payment_processing_delay", probe="sql")
          for i in range(3)],
        *[ok("login", i) for i in range(2)],
        *[bad("wallet", i) for i in range(WINDOW_START - 3, WINDOW_START + 2)],
    ]
    held = [incident(2, "login"), incident(1, "game-db", "stuck_bets")]
    now = at(WINDOW_START + 3)
    first = detect(inventory, history(*results), held, now)
    assert first == detect(inventory, history(*results), held, now)

    shuffled = list(results)
    random.Random(7).shuffle(shuffled)
    reordered = dict(reversed(history(*shuffled).items()))
    assert first == detect(inventory, reordered, list(reversed(held)), now)
    assert opened(first) == [
        ("app-1", "service_down"), ("api", "service_down"),
        ("game-db", "payment_processing_delay"),  # stuck_bets is held open already
    ]
    assert [r.incident_id for r in first.resolves] == [2]
