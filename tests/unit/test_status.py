"""The platform status table: per zone, how many targets are up, down, degraded..."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from floorwatch.inventory import parse_inventory
from floorwatch.results import failed, passed
from floorwatch.status import platform_status

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
INVENTORY = parse_inventory(
    "version: 1\n"
    "contacts: {ops: {channel: slack, address: '#ops'}}\n"
    "zones:\n"
    "  - name: core\n"
    "    escalation: [ops]\n"
    "    targets:\n"
    "      - {name: a, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 1},\n"
    "         probes: [{kind: tcp, interval: 10, timeout: 2}]}\n"
    "      - {name: b, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 2},\n"
    "         probes: [{kind: tcp, interval: 10, timeout: 2}]}\n"
    "      - {name: c, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 3},\n"
    "         probes: [{kind: tcp, interval: 10, timeout: 2}]}\n"
    "      - {name: d, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 4},\n"
    "         probes: [{kind: tcp, interval: 10, timeout: 2}]}\n"
    "  - name: hall\n"
    "    escalation: [ops]\n"
    "    targets:\n"
    "      - {name: e, kind: tcp_endpoint, connection: {host: 127.0.0.1, port: 5},\n"
    "         probes: [{kind: tcp, interval: 10, timeout: 2}]}\n"
    "maintenance:\n"
    "  - {name: refit, zones: [hall], start: 2026-11-22T02:00:00,\n"
    "     end: 2026-11-22T04:00:00, timezone: UTC}\n"
)


@dataclass(frozen=True)
class _Incident:
    id: int
    target: str
    fault_kind: str


def test_zone_rows_count_each_state_and_list_open_incidents() -> None:
    """Up, down (an unreachable fault), degraded (another fault), unknown (no fresh data),
    maintenance (inside a window) are counted per zone."""
    latest = [
        passed("a", "core", "tcp", ts=NOW - timedelta(seconds=5), latency_ms=1.0),
        failed("b", "core", "tcp", ts=NOW, faults=("service_down",), message="refused"),
        passed("c", "core", "tcp", ts=NOW - timedelta(seconds=5), latency_ms=1.0),
        passed("d", "core", "tcp", ts=NOW - timedelta(minutes=10), latency_ms=1.0),
        failed("e", "hall", "tcp", ts=NOW, faults=("service_down",), message="refused"),
    ]
    incidents = [_Incident(7, "c", "api_integration_error")]
    core, hall = platform_status(INVENTORY, latest, incidents, NOW)
    assert (core.up, core.down, core.degraded, core.unknown, core.maintenance) == (1, 1, 1, 1, 0)
    assert core.open_incidents == ("#7 c api_integration_error",)
    assert (hall.maintenance, hall.down) == (1, 0)
    assert hall.targets == 1
