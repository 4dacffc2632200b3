"""The inventory that describes a sandbox: ``inventory.example.yaml`` is this rendering for
the default folder and ports, and tests render one for their own sandbox.

Only names, addresses and paths come from here; secrets stay out of the inventory: SSH hosts
and the DNS zone are named by block (``sandbox-app-primary``, ``sandbox-dns``), which the main
job saves from the running sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from floorwatch.protocols.console import config_hash
from sandbox import topology as t
from sandbox.topology import Layout

# Probe intervals are chosen for one 2-core machine running the whole demo: every sweep is
# a Prefect flow run in its own process (about 2 s of CPU), so the demo makes about 18 runs
# a minute. Production inventories choose their own; bench/recovery.py uses 5 s.
HEADER = """\
# Floorwatch inventory of the sandbox platform (the simulated gaming platform that
# `floorwatch sandbox up` starts on 127.0.0.1). Rendered by sandbox/inventory.py for the
# default folder (.floorwatch/sandbox) and base port ({base_port}); a test checks that this
# file and the rendering agree. Paths are relative to this file's folder.
"""

SSH_BLOCK_PREFIX = "sandbox-"
DNS_BLOCK = "sandbox-dns"

REMEDIATION: dict[str, dict[str, str]] = {
    "service_down": {"runbook": "restart_service", "policy": "automatic"},
    "api_integration_error": {"runbook": "diagnose_target", "policy": "automatic"},
    "provider_outage": {"runbook": "escalate", "policy": "automatic"},
    "infrastructure_overload": {"runbook": "diagnose_target", "policy": "automatic"},
    "security_alert": {"runbook": "escalate", "policy": "automatic"},
    "certificate_expiring": {"runbook": "escalate", "policy": "automatic"},
    "terminal_offline": {"runbook": "restart_terminal", "policy": "automatic"},
    "terminal_hung": {"runbook": "restart_terminal", "policy": "automatic"},
    "cash_device_fault": {"runbook": "restart_terminal", "policy": "approval"},
    "delivery_failure": {"runbook": "redeploy_config", "policy": "automatic"},
    # Money is never "fixed" by automation: diagnose and hand to people.
    "stuck_bets": {"runbook": "escalate", "policy": "automatic"},
    "settlement_mismatch": {"runbook": "escalate", "policy": "automatic"},
    "payment_processing_delay": {"runbook": "escalate", "policy": "automatic"},
    "flapping": {"runbook": "diagnose_target", "policy": "automatic"},
}


def _rel(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return str(path)
    return os.path.relpath(path, relative_to)


def _http_target(layout: Layout, name: str, kind: str, criticality: str,
                 relative_to: Path | None, interval: int = 30, **extra: Any) -> dict[str, Any]:
    _, tls = t.HTTP_SERVICES[name]
    scheme = "https" if tls else "http"
    connection: dict[str, Any] = {"url": f"{scheme}://{t.HOST}:{layout.http_port(name)}/health"}
    if tls:
        connection["ca_bundle"] = _rel(layout.dir / "http" / "tls" / "ca.pem", relative_to)
    thresholds: dict[str, Any] = {"latency_ms": 1000}
    if tls:
        thresholds["cert_days"] = 14
    return {
        "name": name,
        "kind": kind,
        "criticality": criticality,
        "connection": connection,
        "probes": [{
            "kind": "http", "interval": interval, "timeout": 3,
            "expect": {"status": 200, "json_path": "$.status", "json_equals": "ok"},
            "thresholds": thresholds,
        }],
        **extra,
    }


def _with_login_watch(target: dict[str, Any]) -> dict[str, Any]:
    """A second probe on the user service: a spike of failed logins is a security alert."""
    target["probes"].append({
        "kind": "http", "path": "/v1/sessions/stats", "interval": 15, "timeout": 3,
        "fault": "security_alert",
        "expect": {"status": 200, "json_path": "$.failed_logins_5m", "json_max": 50},
    })
    return target


def inventory_document(layout: Layout, relative_to: Path | None = None) -> dict[str, Any]:
    """The inventory of the sandbox in ``layout`` as plain data, ready for YAML."""
    servers = [
        {
            "name": server,
            "kind": "server",
            "criticality": "critical" if server == "app-primary" else "high",
            "connection": {
                "host": t.HOST, "port": layout.ssh_port(server),
                "block": f"{SSH_BLOCK_PREFIX}{server}",
                "services": list(t.SERVER_SERVICES[server]),
                # The gateway's DNS name points at the primary; failover moves it.
                **({"standby": "app-standby", "traffic_record": "gateway-dns"}
                   if server == "app-primary" else {}),
            },
            "probes": [{"kind": "ssh_metrics", "interval": 60, "timeout": 10}],
        }
        for server in t.SERVERS
    ]
    # The game engine answers HTTP: a hung engine (accepting, never answering) is caught by
    # the request's timeout, where a bare TCP connect would still succeed.
    engines = [
        {
            "name": f"{server}-game-engine",
            "kind": "http_service",
            "criticality": "critical" if server == "app-primary" else "high",
            "connection": {
                "url": f"http://{t.HOST}:{layout.port(ports['game-engine'] or 0)}/health",
                "service": "game-engine",
            },
            "depends_on": [server],
            "probes": [{"kind": "http", "interval": 15, "timeout": 2}],
        }
        for server, ports in t.SERVER_SERVICES.items()
    ]
    gamedb_url = "sqlite:///" + _rel(layout.dir / "gamedb" / "gamedb.sqlite", relative_to)
    online_core = [
        _http_target(layout, "api-gateway", "http_service", "critical", relative_to, 15,
                     depends_on=["app-primary-game-engine"],
                     slo={"objective": 99.95, "window_days": 30}),
        _with_login_watch(
            _http_target(layout, "user-service", "http_service", "high", relative_to, 15)
        ),
        *servers,
        *engines,
        {
            "name": t.GAMEDB_NAME,
            "kind": "database",
            "criticality": "critical",
            "connection": {"url": gamedb_url},
            "probes": [{"kind": "sql", "interval": 60, "timeout": 10}],
        },
    ]
    dns_zone = [{
        "name": "gateway-dns",
        "kind": "dns_record",
        "criticality": "critical",
        "connection": {
            "host": t.HOST, "port": layout.dns_port, "block": DNS_BLOCK,
            "record": t.DNS_GATEWAY_NAME, "rdtype": "A",
            "expected": list(t.DNS_PRIMARY_ADDRESSES), "backup": list(t.DNS_BACKUP_ADDRESSES),
        },
        "probes": [{"kind": "dns", "interval": 15, "timeout": 2}],
    }]
    hall: list[dict[str, Any]] = []
    for i in range(1, layout.terminals + 1):
        terminal = t.terminal_name(i)
        hall.append({
            "name": terminal,
            "kind": "terminal",
            "criticality": "medium",
            "connection": {"device": _rel(layout.device(terminal, "console"), relative_to),
                           "config_file": _rel(t.TERMINAL_CONFIG_FILE, relative_to)},
            "probes": [{"kind": "terminal", "interval": 30, "timeout": 4,
                        "expect": {"config_hash": config_hash(t.EXPECTED_CONFIG)}}],
        })
        for device, kind, role, extra in (
            (t.bill_acceptor_name(i), "bill_acceptor", "cctalk",
             {"address": t.CCTALK_BILL_ADDRESS}),
            (t.printer_name(i), "printer", "escpos", {}),
        ):
            hall.append({
                "name": device,
                "kind": kind,
                "criticality": "low",
                "connection": {"device": _rel(layout.device(device, role), relative_to), **extra},
                "depends_on": [terminal],
                "probes": [{"kind": kind, "interval": 60, "timeout": 3}],
            })
    return {
        "version": 1,
        "defaults": {
            "interval": 30, "timeout": 5, "failures_to_open": 3, "successes_to_resolve": 2,
            "budget": {"max_actions": 3, "window": 3600},
            "slo": {"objective": 99.9, "window_days": 30},
        },
        "contacts": {
            "ops-oncall": {"channel": "slack", "address": "#ops-oncall"},
            "devops": {"channel": "email", "address": "devops@sandbox.test"},
            "backend": {"channel": "telegram", "address": "-1001234567890"},
            "integrations": {"channel": "email", "address": "integrations@sandbox.test"},
            "payments-desk": {"channel": "email", "address": "payments@sandbox.test"},
            "hall-technicians": {"channel": "sms", "address": "+35699000000"},
        },
        "zones": [
            {"name": "online-core", "escalation": ["ops-oncall", "devops", "backend"],
             "targets": online_core},
            {"name": "dns", "escalation": ["ops-oncall", "devops"],
             "remediation": {"service_down": {"runbook": "fail_over_dns",
                                              "policy": "automatic"}},
             "targets": dns_zone},
            {"name": "providers", "escalation": ["ops-oncall", "integrations"],
             "targets": [
                 _http_target(layout, "provider-alpha", "game_provider", "high", relative_to),
                 _http_target(layout, "provider-beta", "game_provider", "high", relative_to),
             ]},
            {"name": "payments", "escalation": ["ops-oncall", "payments-desk", "backend"],
             "targets": [_http_target(layout, "payment-gateway", "payment_provider",
                                      "critical", relative_to,
                                      slo={"objective": 99.95, "window_days": 30})]},
            {"name": t.HALL, "escalation": ["hall-technicians", "ops-oncall"],
             "targets": hall},
        ],
        "remediation": REMEDIATION,
        "maintenance": [
            {"name": "game-db-weekly-vacuum", "targets": [t.GAMEDB_NAME],
             "weekly": {"days": ["sun"], "start": "04:00", "duration_minutes": 30},
             "timezone": "Europe/Malta"},
            {"name": "hall-1-refit", "zones": [t.HALL],
             "start": "2026-12-01T02:00:00", "end": "2026-12-01T04:00:00",
             "timezone": "Europe/Malta"},
        ],
        # The main job starts this sandbox, here, for this inventory.
        "sandbox": {"dir": _rel(layout.dir, relative_to), "base_port": layout.base_port,
                    "terminals": layout.terminals},
    }


def render_inventory(layout: Layout, relative_to: Path | None = None) -> str:
    """The sandbox's inventory as YAML text; paths relative to ``relative_to`` if given."""
    body = yaml.safe_dump(
        inventory_document(layout, relative_to), sort_keys=False, default_flow_style=False,
        width=100,
    )
    return HEADER.format(base_port=layout.base_port) + body


def example_layout(root: Path) -> Layout:
    """The layout ``inventory.example.yaml`` describes: the main job's sandbox under ``root``."""
    return Layout(root / ".floorwatch" / "sandbox")


if __name__ == "__main__":
    # Regenerate inventory.example.yaml after changing the sandbox's topology.
    repo = Path(__file__).resolve().parent.parent
    (repo / "inventory.example.yaml").write_text(
        render_inventory(example_layout(repo), relative_to=repo)
    )
    print(f"wrote {repo / 'inventory.example.yaml'}")
