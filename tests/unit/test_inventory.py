"""The inventory loader: valid files load with defaults applied, bad ones fail with every
problem located by file, line and path."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from floorwatch.catalogue import (
    ALLOWED_PROBES,
    Channel,
    FaultKind,
    Policy,
    ProbeKind,
    RunbookName,
    SerialProtocol,
    TargetKind,
)
from floorwatch.errors import InventoryError, Problem
from floorwatch.inventory import (
    HttpProbe,
    Inventory,
    MaintenanceWindow,
    SshThresholds,
    TerminalProbe,
    UnknownNameError,
    load_inventory,
    parse_inventory,
)

CASES = Path(__file__).parent / "inventory_cases"
PLATFORM = CASES / "platform.yaml"

# Seven lines every error case starts with; its first target begins on line 8.
HEAD = """\
version: 1
contacts:
  ops: {channel: slack, address: "#ops"}
zones:
  - name: core
    escalation: [ops]
    targets:
"""


def problems(text: str) -> list[str]:
    """The located problems parse_inventory reports for ``text``, as printed."""
    with pytest.raises(InventoryError) as caught:
        parse_inventory(textwrap.dedent(text))
    return [str(problem) for problem in caught.value.problems]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def platform() -> Inventory:
    return load_inventory(PLATFORM)


# -- a valid inventory ------------------------------------------------------------------------


def test_realistic_inventory_loads_every_zone_and_target(platform: Inventory) -> None:
    """The example platform loads with both zones and all thirteen targets in file order."""
    assert [zone.name for zone in platform.zones] == ["online-core", "hall-1"]
    assert [target.name for target in platform.targets()] == [
        "api-gateway", "provider-alpha", "provider-beta", "payment-gateway", "user-service",
        "app-primary", "app-standby", "api-dns", "game-db",
        "hall-1-t01", "hall-1-t01-bill", "hall-1-t01-printer", "hall-1-t02",
    ]
    assert platform.version == 1
    assert [window.name for window in platform.maintenance] == ["weekly-db", "hall-refit"]


def test_target_without_probes_gets_default_probe_with_inventory_defaults(
    platform: Inventory,
) -> None:
    """A target with no probes gets its kind's first allowed probe, timed by the defaults."""
    (probe,) = platform.target("provider-alpha").probes
    assert isinstance(probe, HttpProbe)
    assert (probe.interval, probe.timeout, probe.failures_to_open, probe.successes_to_resolve) == (
        30.0, 5.0, 3, 2,
    )
    assert probe.expect.status == 200
    (server_probe,) = platform.target("app-standby").probes
    assert server_probe.kind is ALLOWED_PROBES[TargetKind.SERVER][0] is ProbeKind.SSH_METRICS


def test_probe_fields_override_defaults_and_keep_unset_ones(platform: Inventory) -> None:
    """Probe settings override the defaults field by field; thresholds keep their own defaults."""
    http, tcp = platform.target("api-gateway").probes
    assert isinstance(http, HttpProbe)
    assert (http.interval, http.timeout, http.failures_to_open) == (10.0, 2.0, 3)
    assert http.expect.json_path == "$.status"
    assert http.expect.json_equals == "ok"
    assert http.thresholds.latency_ms == 800.0
    assert http.thresholds.cert_days is None
    assert (tcp.kind, tcp.interval) == (ProbeKind.TCP, 30.0)
    (ssh,) = platform.target("app-primary").probes
    assert ssh.thresholds == SshThresholds(cpu_percent=85, load_per_cpu=2.5)
    assert ssh.thresholds.memory_percent == 90.0


def test_terminal_heartbeat_goes_stale_after_three_intervals_by_default(
    platform: Inventory,
) -> None:
    """heartbeat_stale_s defaults to three times the probe's interval unless set."""
    (t01,) = platform.target("hall-1-t01").probes
    (t02,) = platform.target("hall-1-t02").probes
    assert isinstance(t01, TerminalProbe)
    assert isinstance(t02, TerminalProbe)
    assert t01.thresholds.heartbeat_stale_s == 60.0  # interval 20
    assert t02.thresholds.heartbeat_stale_s == 45.0  # set in the file
    assert t01.expect.config_hash == "9f2c1e"


def test_target_slo_budget_and_connection_defaults_apply(platform: Inventory) -> None:
    """SLO and budget come from defaults unless overridden; serial protocols follow the kind."""
    assert platform.target("api-gateway").slo.objective == 99.95
    assert platform.target("user-service").slo.objective == 99.9
    assert platform.target("payment-gateway").budget.max_actions == 1
    assert platform.target("user-service").budget.window == 3600
    assert platform.target("user-service").criticality == "medium"
    protocols = [platform.target(name).connection for name in (
        "hall-1-t01", "hall-1-t01-bill", "hall-1-t01-printer")]
    assert [c.protocol for c in protocols] == [
        SerialProtocol.CONSOLE, SerialProtocol.CCTALK, SerialProtocol.ESCPOS,
    ]
    assert [c.baud for c in protocols] == [9600, 9600, 19200]
    assert platform.target("hall-1-t01-bill").connection.address == 40
    dns = platform.target("api-dns").connection
    assert (dns.record, dns.rdtype, dns.expected, dns.backup) == (
        "api.play.sandbox.test.", "A", ("127.0.10.1",), ("127.0.10.2",),
    )
    assert platform.target("app-primary").connection.services == ("game-engine", "session-worker")


def test_escalation_returns_contacts_in_level_order(platform: Inventory) -> None:
    """A zone's escalation resolves contact names to contacts, first level first."""
    contacts = platform.escalation("hall-1")
    assert [(c.name, c.channel, c.address) for c in contacts] == [
        ("hall-tech", Channel.TELEGRAM, "123456789"),
        ("ops-oncall", Channel.SLACK, "#ops-oncall"),
        ("duty-manager", Channel.SMS, "+35699123456"),
    ]


def test_remediation_prefers_the_zone_rule_then_the_global_one(platform: Inventory) -> None:
    """remediation_for looks in the zone first, then globally, and answers None if neither."""
    zone_rule = platform.remediation_for("online-core", FaultKind.INFRASTRUCTURE_OVERLOAD)
    assert zone_rule is not None
    assert (zone_rule.runbook, zone_rule.policy) == (RunbookName.FAIL_OVER_SERVER, Policy.APPROVAL)
    global_rule = platform.remediation_for("hall-1", "terminal_hung")
    assert global_rule is not None
    assert global_rule.runbook is RunbookName.RESTART_TERMINAL
    assert platform.remediation_for("hall-1", FaultKind.INFRASTRUCTURE_OVERLOAD) is None
    with pytest.raises(UnknownNameError, match="unknown fault kind 'meltdown'"):
        platform.remediation_for("hall-1", "meltdown")


def test_parents_and_children_follow_depends_on(platform: Inventory) -> None:
    """parents() lists what a target depends on; children() what depends on it."""
    assert [t.name for t in platform.parents("hall-1-t01-bill")] == ["hall-1-t01"]
    assert [t.name for t in platform.children("hall-1-t01")] == [
        "hall-1-t01-bill", "hall-1-t01-printer",
    ]
    assert [t.name for t in platform.children("api-gateway")] == ["hall-1-t01", "hall-1-t02"]
    assert platform.parents("app-primary") == ()
    assert platform.zone_of("hall-1-t02").name == "hall-1"


def test_unknown_names_raise_lookup_errors_naming_them(platform: Inventory) -> None:
    """Asking for a target or zone the inventory lacks raises a LookupError naming it."""
    with pytest.raises(LookupError, match=r"^unknown target 'nope'$"):
        platform.target("nope")
    with pytest.raises(UnknownNameError, match=r"^unknown zone 'hall-9'$"):
        platform.escalation("hall-9")
    with pytest.raises(UnknownNameError, match=r"^unknown target 'nope'$"):
        platform.children("nope")


def test_loaded_models_are_frozen(platform: Inventory) -> None:
    """Loaded models refuse assignment."""
    with pytest.raises(ValidationError, match="frozen"):
        platform.target("api-gateway").name = "renamed"  # type: ignore[misc]


def test_sweep_groups_gather_targets_by_zone_and_probe_kind(platform: Inventory) -> None:
    """Each (zone, probe kind) maps to the zone's targets with such a probe, in file order."""
    groups = {
        (zone, str(kind)): [t.name for t in targets]
        for (zone, kind), targets in platform.sweep_groups().items()
    }
    assert groups == {
        ("online-core", "http"): [
            "api-gateway", "provider-alpha", "provider-beta", "payment-gateway", "user-service",
        ],
        ("online-core", "tcp"): ["api-gateway"],
        ("online-core", "ssh_metrics"): ["app-primary", "app-standby"],
        ("online-core", "dns"): ["api-dns"],
        ("online-core", "sql"): ["game-db"],
        ("hall-1", "terminal"): ["hall-1-t01", "hall-1-t02"],
        ("hall-1", "bill_acceptor"): ["hall-1-t01-bill"],
        ("hall-1", "printer"): ["hall-1-t01-printer"],
    }


def test_target_with_two_probes_of_one_kind_is_swept_once() -> None:
    """A target with two probes of the same kind appears once in that kind's sweep group."""
    inventory = parse_inventory(HEAD + textwrap.indent(textwrap.dedent("""\
        - name: web
          kind: http_service
          connection: {url: http://127.0.0.1:8000/}
          probes:
            - {kind: http}
            - {kind: http, expect: {status: 204}}
        """), "      "))
    assert [t.name for t in inventory.sweep_groups()[("core", ProbeKind.HTTP)]] == ["web"]


def test_loaded_inventory_survives_a_json_round_trip(platform: Inventory) -> None:
    """A dumped inventory validates back to an equal one, as Prefect parameters need."""
    dumped = platform.model_dump_json()
    assert Inventory.model_validate_json(dumped) == platform
    target = platform.target("hall-1-t01")
    assert type(target).model_validate_json(target.model_dump_json()) == target


def test_every_single_line_deletion_loads_or_fails_with_located_problems() -> None:
    """Deleting any one line of the valid file never crashes the loader or loses a line."""
    lines = PLATFORM.read_text().splitlines()
    reports: list[list[Problem]] = []
    for index in range(len(lines)):
        try:
            parse_inventory("\n".join(lines[:index] + lines[index + 1 :]))
        except InventoryError as exc:
            reports.append(exc.problems)
    assert len(reports) > len(lines) // 2  # most lines matter
    assert all(report for report in reports)
    assert [p for report in reports for p in report if p.line is None] == []


# -- paths ----------------------------------------------------------------------------------


def test_relative_device_paths_resolve_against_the_inventory_folder(tmp_path: Path) -> None:
    """Relative device and CA paths join the file's folder; symlinks and URLs stay as written."""
    folder = tmp_path / "site"
    (folder / "dev").mkdir(parents=True)
    (folder / "dev" / "t01.console").symlink_to("/dev/null")
    path = folder / "inventory.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent("""\
        - {name: t01, kind: terminal, connection: {device: dev/t01.console}}
        - {name: t02, kind: terminal, connection: {device: /dev/ttyS1}}
        - {name: t03, kind: terminal, connection: {device: "socket://127.0.0.1:7000"}}
        - name: web
          kind: http_service
          connection: {url: "https://127.0.0.1:8443/", ca_bundle: certs/ca.pem}
        """), "      "))
    inventory = load_inventory(path)
    assert inventory.target("t01").connection.device == str(folder / "dev" / "t01.console")
    assert inventory.target("t02").connection.device == "/dev/ttyS1"
    assert inventory.target("t03").connection.device == "socket://127.0.0.1:7000"
    assert inventory.target("web").connection.ca_bundle == folder / "certs" / "ca.pem"
    elsewhere = parse_inventory(path.read_text(), base_dir=tmp_path / "other")
    assert elsewhere.target("t01").connection.device == str(tmp_path / "other/dev/t01.console")


def test_terminal_config_file_resolves_against_the_inventory_folder(tmp_path: Path) -> None:
    """A terminal's config_file joins the file's folder like a device; other kinds refuse it."""
    folder = tmp_path / "site"
    folder.mkdir()
    path = folder / "inventory.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent("""\
        - name: t01
          kind: terminal
          connection: {device: /dev/ttyS0, config_file: conf/t01.conf}
        - {name: t02, kind: terminal, connection: {device: /dev/ttyS1, config_file: /etc/t.conf}}
        - {name: t03, kind: terminal, connection: {device: /dev/ttyS2}}
        """), "      "))
    inventory = load_inventory(path)
    assert inventory.target("t01").connection.config_file == folder / "conf" / "t01.conf"
    assert inventory.target("t02").connection.config_file == Path("/etc/t.conf")
    assert inventory.target("t03").connection.config_file is None
    text = HEAD + """\
      - {name: p1, kind: printer, connection: {device: /dev/ttyS3, config_file: p.conf}}
"""
    assert problems(text) == [
        "inventory.yaml:8 zones[0].targets[0].connection.config_file: not used by kind printer "
        "(it uses: device, baud, protocol, block)",
    ]


def test_missing_file_is_one_problem_naming_the_path_as_given(tmp_path: Path) -> None:
    """A file that cannot be read is an InventoryError with a single problem."""
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(InventoryError) as caught:
        load_inventory(str(missing))
    assert [str(p) for p in caught.value.problems] == [
        f"{missing}: cannot read: No such file or directory"
    ]


def test_problems_name_the_file_as_passed_to_the_loader(tmp_path: Path) -> None:
    """Problems carry the path exactly as the caller spelt it, and str() lists them all."""
    (tmp_path / "bad.yaml").write_text("version: 2\nzones: []\n")
    as_given = f"{tmp_path}/./bad.yaml"
    with pytest.raises(InventoryError) as caught:
        load_inventory(as_given)
    assert str(caught.value) == (
        "2 problems in inventory\n"
        f"  {as_given}:1 version: unsupported version 2 (expected 1)\n"
        f"  {as_given}:2 zones: must not be empty"
    )


# -- one check each -----------------------------------------------------------------------------


def test_yaml_syntax_error_reports_the_parser_line() -> None:
    """A YAML syntax error is one problem at the line the parser stopped."""
    text = HEAD + "      - name: api\n     kind: http_service\n"
    assert problems(text) == [
        "inventory.yaml:9: invalid YAML: did not find expected key "
        "(while parsing a block mapping at line 5)"
    ]


def test_top_level_that_is_not_a_mapping_is_refused() -> None:
    """A file whose top level is a list is one problem on line 1."""
    assert problems("- version: 1\n- zones: []\n") == [
        "inventory.yaml:1: the top level must be a mapping with version and zones, not list"
    ]


def test_empty_file_is_refused() -> None:
    """A file with nothing but comments is one problem."""
    assert problems("# nothing yet\n") == ["inventory.yaml:1: the file is empty"]


def test_unknown_keys_are_reported_on_their_own_line_at_every_level() -> None:
    """Misspelt keys at the top, in a target, a probe and its expect block are each named."""
    text = HEAD + """\
      - name: api
        kind: http_service
        conection: {url: http://127.0.0.1:8000/}
        probes:
          - kind: http
            intervall: 10
            expect: {status: 200, body_contain: ok}
remediaton: {}
"""
    assert problems(text) == [
        "inventory.yaml:8 zones[0].targets[0].connection.url: required for kind http_service",
        "inventory.yaml:10 zones[0].targets[0].conection: unknown key 'conection'",
        "inventory.yaml:13 zones[0].targets[0].probes[0].intervall: unknown key 'intervall'",
        "inventory.yaml:14 zones[0].targets[0].probes[0].expect.body_contain: "
        "unknown key 'body_contain'",
        "inventory.yaml:15 remediaton: unknown key 'remediaton'",
    ]


def test_thresholds_are_checked_against_the_probe_kind() -> None:
    """A threshold that belongs to another probe kind is an unknown key for this one."""
    text = HEAD + """\
      - name: app
        kind: server
        connection: {host: 127.0.0.1, port: 22, block: app-ssh}
        probes:
          - kind: ssh_metrics
            thresholds:
              cpu_percent: 80
              latency_ms: 100
"""
    assert problems(text) == [
        "inventory.yaml:15 zones[0].targets[0].probes[0].thresholds.latency_ms: "
        "unknown key 'latency_ms'"
    ]


def test_unknown_target_kind_lists_the_known_kinds() -> None:
    """An unknown target kind is named along with every known one."""
    text = HEAD + "      - {name: web, kind: webserver, connection: {url: http://x/}}\n"
    assert problems(text) == [
        "inventory.yaml:8 zones[0].targets[0].kind: unknown target kind 'webserver' "
        "(expected one of: http_service, tcp_endpoint, dns_record, server, database, "
        "game_provider, payment_provider, terminal, bill_acceptor, printer)"
    ]


def test_unknown_probe_kind_lists_the_known_kinds() -> None:
    """An unknown probe kind is reported on the probe's kind line."""
    text = HEAD + """\
      - name: web
        kind: http_service
        connection: {url: "http://127.0.0.1:8000/"}
        probes:
          - interval: 10
            kind: ping
"""
    assert problems(text) == [
        "inventory.yaml:13 zones[0].targets[0].probes[0].kind: unknown probe kind 'ping' "
        "(expected one of: http, tcp, dns, ssh_metrics, sql, terminal, bill_acceptor, printer)"
    ]


def test_probe_kind_not_allowed_for_the_target_kind() -> None:
    """A known probe kind the target kind does not allow is refused, listing the allowed."""
    text = HEAD + """\
      - name: web
        kind: http_service
        connection: {url: "http://127.0.0.1:8000/"}
        probes:
          - kind: sql
"""
    assert problems(text) == [
        "inventory.yaml:12 zones[0].targets[0].probes[0].kind: probe kind 'sql' is not allowed "
        "for target kind 'http_service' (allowed: http, tcp)"
    ]


def test_connection_fields_required_and_unused_depend_on_the_kind() -> None:
    """Each kind's required connection fields must be there, and no field it does not use."""
    text = HEAD + """\
      - name: api-dns
        kind: dns_record
        connection:
          host: 127.0.0.1
          port: 53
          expected: []
          url: http://127.0.0.1/
      - {name: db, kind: database, connection: {url: "not a url"}}
"""
    assert problems(text) == [
        "inventory.yaml:10 zones[0].targets[0].connection.record: required for kind dns_record",
        "inventory.yaml:13 zones[0].targets[0].connection.expected: "
        "must list at least one value for kind dns_record",
        "inventory.yaml:14 zones[0].targets[0].connection.url: not used by kind dns_record "
        "(it uses: host, port, record, expected, rdtype, backup, block)",
        "inventory.yaml:15 zones[0].targets[1].connection.url: 'not a url' is not a "
        "SQLAlchemy URL such as postgresql+psycopg://host/db",
    ]


def test_duplicate_target_name_reports_the_second_and_the_first_line() -> None:
    """Target names are unique across zones; the repeat names where the first is."""
    text = HEAD + """\
      - {name: web, kind: http_service, connection: {url: "http://127.0.0.1:1/"}}
  - name: edge
    escalation: [ops]
    targets:
      - {name: web, kind: http_service, connection: {url: "http://127.0.0.1:2/"}}
"""
    assert problems(text) == [
        "inventory.yaml:12 zones[1].targets[0].name: duplicate target name 'web' "
        "(first defined at line 8)"
    ]


def test_duplicate_zone_name_reports_the_second() -> None:
    """Zone names are unique."""
    text = HEAD + """\
      - {name: web, kind: http_service, connection: {url: "http://127.0.0.1:1/"}}
  - name: core
    escalation: [ops]
    targets: []
"""
    assert problems(text) == [
        "inventory.yaml:9 zones[1].name: duplicate zone name 'core' (first defined at line 5)"
    ]


def test_dependency_on_a_missing_target_is_named() -> None:
    """depends_on must name existing targets."""
    text = HEAD + """\
      - name: web
        kind: http_service
        connection: {url: "http://127.0.0.1:1/"}
        depends_on:
          - app-primary
"""
    assert problems(text) == [
        "inventory.yaml:12 zones[0].targets[0].depends_on[0]: "
        "depends on unknown target 'app-primary'"
    ]


def test_dependency_cycle_is_named_once_where_it_closes() -> None:
    """A cycle through three targets is reported once, spelt out, at the closing entry."""
    text = HEAD + """\
      - {name: a, kind: tcp_endpoint, connection: {host: h, port: 1}, depends_on: [b]}
      - {name: b, kind: tcp_endpoint, connection: {host: h, port: 2}, depends_on: [c]}
      - {name: c, kind: tcp_endpoint, connection: {host: h, port: 3}, depends_on: [a]}
      - {name: d, kind: tcp_endpoint, connection: {host: h, port: 4}, depends_on: [d]}
"""
    assert problems(text) == [
        "inventory.yaml:10 zones[0].targets[2].depends_on[0]: dependency cycle: a -> b -> c -> a",
        "inventory.yaml:11 zones[0].targets[3].depends_on[0]: dependency cycle: d -> d",
    ]


def test_non_positive_interval_and_timeout_are_refused() -> None:
    """Intervals and timeouts must be above zero, in defaults and in probes."""
    text = """\
version: 1
defaults:
  interval: 0
contacts: {ops: {channel: slack, address: "#ops"}}
zones:
  - name: core
    escalation: [ops]
    targets:
      - name: web
        kind: http_service
        connection: {url: "http://127.0.0.1:1/"}
        probes:
          - {kind: http, interval: -5, timeout: 0}
"""
    assert problems(text) == [
        "inventory.yaml:3 defaults.interval: must be > 0",
        "inventory.yaml:13 zones[0].targets[0].probes[0].interval: must be > 0",
        "inventory.yaml:13 zones[0].targets[0].probes[0].timeout: must be > 0",
    ]


def test_timeout_longer_than_interval_is_refused() -> None:
    """A timeout longer than its interval is refused, also when one of them is inherited."""
    text = """\
version: 1
defaults: {interval: 30, timeout: 10}
contacts: {ops: {channel: slack, address: "#ops"}}
zones:
  - name: core
    escalation: [ops]
    targets:
      - name: web
        kind: http_service
        connection: {url: "http://127.0.0.1:1/"}
        probes:
          - kind: http
            interval: 10
            timeout: 15
          - kind: tcp
            interval: 5
"""
    assert problems(text) == [
        "inventory.yaml:14 zones[0].targets[0].probes[0].timeout: must be <= interval (10 s)",
        "inventory.yaml:16 zones[0].targets[0].probes[1].interval: "
        "must be >= timeout (10 s, inherited)",
    ]


def test_default_timeout_longer_than_default_interval_is_refused() -> None:
    """The defaults section obeys the same timeout rule as probes."""
    text = HEAD.replace("version: 1\n", "version: 1\ndefaults: {interval: 5, timeout: 10}\n")
    text += "      - {name: h, kind: tcp_endpoint, connection: {host: h, port: 1}}\n"
    assert problems(text) == [
        "inventory.yaml:2 defaults.timeout: must be <= interval (5 s)"
    ]


def test_http_expectations_are_checked() -> None:
    """json_equals needs a json_path, a json_path starts with $, a status is an HTTP status."""
    text = (
        HEAD
        + """\
      - name: web
        kind: http_service
        connection: {url: "http://127.0.0.1:1/"}
        probes:
          - kind: http
            expect:
              status: 700
              json_path: status
          - kind: http
            expect: {json_equals: ok}
"""
    )
    assert problems(text) == [
        "inventory.yaml:14 zones[0].targets[0].probes[0].expect.status: must be <= 599",
        "inventory.yaml:15 zones[0].targets[0].probes[0].expect.json_path: "
        "must start with '$' (such as $.status), not 'status'",
        "inventory.yaml:17 zones[0].targets[0].probes[1].expect.json_equals: needs json_path",
    ]


def test_contact_addresses_must_fit_their_channel() -> None:
    """An email contact needs an address with @, an SMS contact an international number."""
    text = """\
version: 1
contacts:
  ops: {channel: email, address: ops.example.test}
  night: {channel: sms, address: "99123456"}
  pager: {channel: pager, address: "42"}
zones:
  - name: core
    escalation: [ops, night]
    targets: []
"""
    assert problems(text) == [
        "inventory.yaml:3 contacts.ops.address: 'ops.example.test' is not an email address",
        "inventory.yaml:4 contacts.night.address: '99123456' is not a phone number like "
        "+35699123456",
        "inventory.yaml:5 contacts.pager.channel: unknown channel 'pager' "
        "(expected one of: slack, email, telegram, sms)",
    ]


def test_unknown_runbook_is_named() -> None:
    """A remediation rule naming no known runbook is refused."""
    text = HEAD + """\
      - {name: web, kind: http_service, connection: {url: "http://127.0.0.1:1/"}}
remediation:
  service_down:
    runbook: reboot_everything
    policy: automatic
"""
    assert problems(text) == [
        "inventory.yaml:11 remediation.service_down.runbook: unknown runbook 'reboot_everything' "
        "(expected one of: diagnose_target, restart_service, fail_over_server, fail_over_dns, "
        "restart_terminal, redeploy_config, escalate)"
    ]


def test_unknown_fault_kind_is_reported_on_its_key_in_a_zone() -> None:
    """A zone's remediation may only map known fault kinds."""
    text = HEAD + """\
      - {name: web, kind: http_service, connection: {url: "http://127.0.0.1:1/"}}
    remediation:
      meltdown: {runbook: escalate, policy: automatic}
"""
    assert problems(text) == [
        "inventory.yaml:10 zones[0].remediation.meltdown: unknown fault kind 'meltdown' "
        "(expected one of: service_down, api_integration_error, payment_processing_delay, "
        "provider_outage, infrastructure_overload, security_alert, terminal_offline, "
        "terminal_hung, cash_device_fault, stuck_bets, settlement_mismatch, delivery_failure, "
        "certificate_expiring, flapping)"
    ]


def test_financial_fault_mapped_to_an_acting_runbook_is_refused() -> None:
    """Financial faults may only be diagnosed or escalated, never acted upon."""
    text = HEAD + """\
      - {name: web, kind: http_service, connection: {url: "http://127.0.0.1:1/"}}
remediation:
  stuck_bets: {runbook: escalate, policy: automatic}
  settlement_mismatch: {runbook: restart_service, policy: approval}
"""
    assert problems(text) == [
        "inventory.yaml:11 remediation.settlement_mismatch.runbook: financial faults are never "
        "fixed automatically: settlement_mismatch may only use diagnose_target or escalate, "
        "not restart_service"
    ]


def test_unknown_contact_in_escalation_is_named() -> None:
    """Escalation levels must be contacts defined under contacts."""
    text = """\
version: 1
contacts:
  ops: {channel: slack, address: "#ops"}
  devops: {channel: email, address: devops@example.test}
zones:
  - name: core
    escalation: [ops, night-shift]
    targets: []
"""
    assert problems(text) == [
        "inventory.yaml:7 zones[0].escalation[1]: unknown contact 'night-shift' "
        "(known: devops, ops)"
    ]
    without_contacts = "version: 1\nzones:\n  - {name: core, escalation: [ops], targets: []}\n"
    assert problems(without_contacts) == [
        "inventory.yaml:3 zones[0].escalation[0]: unknown contact 'ops' (known: none)"
    ]


def test_bad_time_zone_is_refused() -> None:
    """A maintenance window's time zone must be an IANA name."""
    text = HEAD + """\
      - {name: db, kind: database, connection: {url: "sqlite:///games.db"}}
maintenance:
  - name: nightly
    targets: [db]
    weekly: {days: [mon, tue], start: "02:00", duration_minutes: 30}
    timezone: Europe/Atlantis
"""
    assert problems(text) == [
        "inventory.yaml:13 maintenance[0].timezone: unknown time zone 'Europe/Atlantis' "
        "(use an IANA name such as Europe/Malta)"
    ]


def test_maintenance_naming_unknown_target_or_zone_is_refused() -> None:
    """A window's targets and zones must exist."""
    text = HEAD + """\
      - {name: db, kind: database, connection: {url: "sqlite:///games.db"}}
maintenance:
  - name: refit
    targets: [db, cache]
    zones: [hall-9]
    start: 2026-12-01T02:00:00
    end: 2026-12-01T04:00:00
    timezone: UTC
"""
    assert problems(text) == [
        "inventory.yaml:11 maintenance[0].targets[1]: unknown target 'cache'",
        "inventory.yaml:12 maintenance[0].zones[0]: unknown zone 'hall-9'",
    ]


def test_one_off_window_must_end_after_it_starts() -> None:
    """A one-off window whose end is not after its start is refused."""
    text = HEAD + """\
      - {name: db, kind: database, connection: {url: "sqlite:///games.db"}}
maintenance:
  - name: refit
    targets: [db]
    start: 2026-12-01T04:00:00
    end: 2026-12-01T04:00:00
    timezone: Europe/Malta
"""
    assert problems(text) == [
        "inventory.yaml:13 maintenance[0].end: must be after start (2026-12-01T04:00:00)"
    ]


def test_window_must_be_weekly_or_one_off_but_not_both() -> None:
    """A window with both a weekly schedule and start/end, or neither, is refused."""
    text = HEAD + """\
      - {name: db, kind: database, connection: {url: "sqlite:///games.db"}}
maintenance:
  - name: both
    targets: [db]
    weekly: {days: [sun], start: "03:00", duration_minutes: 60}
    start: 2026-12-01T02:00:00
    end: 2026-12-01T04:00:00
    timezone: UTC
  - name: neither
    targets: [db]
    timezone: UTC
"""
    assert problems(text) == [
        "inventory.yaml:12 maintenance[0].weekly: a window is weekly or one-off (start/end), "
        "not both",
        "inventory.yaml:16 maintenance[1]: needs weekly, or start and end",
    ]


def test_unquoted_clock_time_is_not_read_as_a_base_60_number() -> None:
    """``start: 13:00`` means 13:00, not YAML 1.1's integer 780."""
    text = HEAD + """\
      - {name: db, kind: database, connection: {url: "sqlite:///games.db"}}
maintenance:
  - name: w
    targets: [db]
    weekly: {days: [sat], start: 13:00, duration_minutes: 5}
    timezone: UTC
"""
    (window,) = parse_inventory(text).maintenance
    assert window.weekly is not None
    assert window.weekly.start.isoformat() == "13:00:00"


def test_duplicate_yaml_key_is_reported_with_the_first_line() -> None:
    """A key written twice in one mapping is a problem, not a silent overwrite."""
    text = HEAD + """\
      - name: web
        kind: http_service
        connection: {url: "http://127.0.0.1:1/"}
        kind: tcp_endpoint
"""
    assert problems(text) == [
        "inventory.yaml:11 zones[0].targets[0].kind: duplicate key 'kind' (first at line 9)"
    ]


def test_many_mistakes_are_all_reported_in_line_order() -> None:
    """A file with mistakes of many kinds reports every one of them, in file order."""
    text = """\
version: 1
contacts:
  ops: {channel: slack, address: "#ops"}
zones:
  - name: online
    escalation: [ops, boss]
    targets:
      - name: api
        kind: webserver
        connection: {url: "http://127.0.0.1:1/"}
        depends_on: [ghost]
      - name: app
        kind: server
        connection: {host: 127.0.0.1, port: 70000, block: app-ssh}
        probes:
          - kind: ssh_metrics
            interval: 10
            timeout: 30
            thresholds: {cpu_percnt: 80}
      - name: api
        kind: tcp_endpoint
        connection: {host: 127.0.0.1, port: 80}
remediation:
  stuck_bets: {runbook: restart_service, policy: automatic}
  service_down: {runbook: reboot_everything, policy: automatic}
maintenance:
  - name: refit
    zones: [online]
    start: 2026-12-01T04:00:00
    end: 2026-12-01T02:00:00
    timezone: Mars/Olympus
"""
    found = problems(text)
    assert found == [
        "inventory.yaml:6 zones[0].escalation[1]: unknown contact 'boss' (known: ops)",
        "inventory.yaml:9 zones[0].targets[0].kind: unknown target kind 'webserver' "
        "(expected one of: http_service, tcp_endpoint, dns_record, server, database, "
        "game_provider, payment_provider, terminal, bill_acceptor, printer)",
        "inventory.yaml:11 zones[0].targets[0].depends_on[0]: depends on unknown target 'ghost'",
        "inventory.yaml:14 zones[0].targets[1].connection.port: must be <= 65535",
        "inventory.yaml:18 zones[0].targets[1].probes[0].timeout: must be <= interval (10 s)",
        "inventory.yaml:19 zones[0].targets[1].probes[0].thresholds.cpu_percnt: "
        "unknown key 'cpu_percnt'",
        "inventory.yaml:20 zones[0].targets[2].name: duplicate target name 'api' "
        "(first defined at line 8)",
        "inventory.yaml:24 remediation.stuck_bets.runbook: financial faults are never fixed "
        "automatically: stuck_bets may only use diagnose_target or escalate, not restart_service",
        "inventory.yaml:25 remediation.service_down.runbook: unknown runbook 'reboot_everything' "
        "(expected one of: diagnose_target, restart_service, fail_over_server, fail_over_dns, "
        "restart_terminal, redeploy_config, escalate)",
        "inventory.yaml:30 maintenance[0].end: must be after start (2026-12-01T04:00:00)",
        "inventory.yaml:31 maintenance[0].timezone: unknown time zone 'Mars/Olympus' "
        "(use an IANA name such as Europe/Malta)",
    ]


# -- maintenance windows in time ----------------------------------------------------------------


def _window(**fields: object) -> MaintenanceWindow:
    return MaintenanceWindow.model_validate({"name": "w", "targets": ["db"], **fields})


def test_weekly_window_crossing_midnight_stays_open_into_the_next_day() -> None:
    """A Saturday 23:00 two-hour window is open at Sunday 00:30 and closed at 01:00."""
    window = _window(
        weekly={"days": ["sat"], "start": "23:00", "duration_minutes": 120}, timezone="UTC"
    )
    assert not window.active_at(utc("2026-12-05T22:59:59"))
    assert window.active_at(utc("2026-12-05T23:00:00"))
    assert window.active_at(utc("2026-12-06T00:30:00"))
    assert not window.active_at(utc("2026-12-06T01:00:00"))
    assert not window.active_at(utc("2026-12-04T23:30:00"))  # a Friday


def test_weekly_window_crossing_the_end_of_the_week_wraps_to_monday() -> None:
    """A Sunday 23:30 hour-long window is still open early on Monday."""
    window = _window(
        weekly={"days": ["sun"], "start": "23:30", "duration_minutes": 60}, timezone="UTC"
    )
    assert window.active_at(utc("2026-12-07T00:15:00"))
    assert not window.active_at(utc("2026-12-07T00:30:00"))


def test_weekly_window_keeps_its_local_time_across_daylight_saving_changes() -> None:
    """Sunday 03:00 in Malta is 02:00 UTC before the spring change and 01:00 UTC after it."""
    window = _window(
        weekly={"days": ["sun"], "start": "03:00", "duration_minutes": 60},
        timezone="Europe/Malta",
    )
    # Winter time (UTC+1), the week before the change.
    assert window.active_at(utc("2026-03-22T02:30:00"))
    assert not window.active_at(utc("2026-03-22T01:30:00"))
    # The change happens at 01:00 UTC on 29 March; 03:00 local is now 01:00 UTC.
    assert window.active_at(utc("2026-03-29T01:30:00"))
    assert not window.active_at(utc("2026-03-29T02:30:00"))
    # Back to winter time on 25 October: 03:00 local is 02:00 UTC again.
    assert window.active_at(utc("2026-10-25T02:30:00"))
    assert not window.active_at(utc("2026-10-25T01:30:00"))


def test_one_off_window_reads_naive_times_in_its_time_zone() -> None:
    """Naive start and end are local to the window's zone; the end is exclusive."""
    window = _window(
        start="2026-12-01T02:00:00", end="2026-12-01T04:00:00", timezone="Europe/Malta"
    )
    assert not window.active_at(utc("2026-12-01T00:59:59"))
    assert window.active_at(utc("2026-12-01T01:00:00"))
    assert window.active_at(utc("2026-12-01T02:59:59"))
    assert not window.active_at(utc("2026-12-01T03:00:00"))


def test_active_at_refuses_a_naive_instant() -> None:
    """active_at needs an aware datetime; a naive one is a ValueError, not a guess."""
    window = _window(start="2026-12-01T02:00:00", end="2026-12-01T04:00:00", timezone="UTC")
    with pytest.raises(ValueError, match="aware datetime"):
        window.active_at(datetime(2026, 12, 1, 3))


def test_targets_are_in_maintenance_through_their_zone_or_their_name(
    platform: Inventory,
) -> None:
    """in_maintenance honours windows naming the target and windows naming its zone."""
    refit = utc("2026-12-01T03:00:00")
    assert platform.in_maintenance("hall-1-t01-printer", refit)
    assert not platform.in_maintenance("game-db", refit)
    assert platform.in_maintenance("game-db", utc("2026-12-06T02:30:00"))  # Sunday 03:30 Malta
    assert [w.name for w in platform.windows_for("game-db")] == ["weekly-db"]


def test_http_probe_path_fault_and_json_max_load() -> None:
    """An HTTP probe may name its own path, a JSON limit and the fault it reports."""
    inventory = parse_inventory(
        "version: 1\n"
        "contacts: {ops: {channel: slack, address: '#ops'}}\n"
        "zones:\n"
        "  - name: core\n"
        "    escalation: [ops]\n"
        "    targets:\n"
        "      - name: users\n"
        "        kind: http_service\n"
        "        connection: {url: 'http://127.0.0.1:1/health'}\n"
        "        probes:\n"
        "          - kind: http\n"
        "            path: /v1/sessions/stats\n"
        "            fault: security_alert\n"
        "            expect: {json_path: $.failed_logins_5m, json_max: 50}\n"
    )
    probe = inventory.target("users").probes[0]
    assert probe.path == "/v1/sessions/stats"
    assert probe.fault == "security_alert"
    assert probe.expect.json_max == 50


def test_json_max_without_json_path_is_refused() -> None:
    """json_max compares the value at json_path, so it needs one."""
    with pytest.raises(InventoryError) as err:
        parse_inventory(
            "version: 1\n"
            "contacts: {ops: {channel: slack, address: '#ops'}}\n"
            "zones:\n"
            "  - name: core\n"
            "    escalation: [ops]\n"
            "    targets:\n"
            "      - name: users\n"
            "        kind: http_service\n"
            "        connection: {url: 'http://127.0.0.1:1/health'}\n"
            "        probes:\n"
            "          - kind: http\n"
            "            expect: {json_max: 50}\n"
        )
    assert [str(p) for p in err.value.problems] == [
        "inventory.yaml:12 zones[0].targets[0].probes[0].expect.json_max: needs json_path"
    ]


def test_sweep_interval_is_the_shortest_probe_interval_of_the_group() -> None:
    """A zone's sweep of one probe kind runs as often as its most frequent probe needs."""
    inventory = parse_inventory(
        "version: 1\n"
        "contacts: {ops: {channel: slack, address: '#ops'}}\n"
        "zones:\n"
        "  - name: core\n"
        "    escalation: [ops]\n"
        "    targets:\n"
        "      - name: a\n"
        "        kind: tcp_endpoint\n"
        "        connection: {host: 127.0.0.1, port: 1}\n"
        "        probes: [{kind: tcp, interval: 20, timeout: 2}]\n"
        "      - name: b\n"
        "        kind: tcp_endpoint\n"
        "        connection: {host: 127.0.0.1, port: 2}\n"
        "        probes: [{kind: tcp, interval: 5, timeout: 2}]\n"
    )
    assert inventory.sweep_interval("core", "tcp") == 5
    with pytest.raises(LookupError, match="no dns probe"):
        inventory.sweep_interval("core", "dns")


def test_failover_references_must_name_targets_of_the_right_kind() -> None:
    """A server's standby must be a server and its traffic record a dns_record."""
    with pytest.raises(InventoryError) as err:
        parse_inventory(
            "version: 1\n"
            "contacts: {ops: {channel: slack, address: '#ops'}}\n"
            "zones:\n"
            "  - name: core\n"
            "    escalation: [ops]\n"
            "    targets:\n"
            "      - name: app-1\n"
            "        kind: server\n"
            "        connection: {host: 127.0.0.1, port: 22, block: app-1, standby: app-9,\n"
            "                     traffic_record: app-1}\n"
        )
    assert [str(p) for p in err.value.problems] == [
        "inventory.yaml:9 zones[0].targets[0].connection.standby: unknown target 'app-9'",
        "inventory.yaml:10 zones[0].targets[0].connection.traffic_record: "
        "'app-1' is a server, not a dns_record",
    ]


def test_relative_sqlite_url_is_relative_to_the_inventory(tmp_path: Path) -> None:
    """A database URL naming a relative SQLite file resolves against the inventory folder."""
    inventory = parse_inventory(
        "version: 1\n"
        "contacts: {ops: {channel: slack, address: '#ops'}}\n"
        "zones:\n"
        "  - name: core\n"
        "    escalation: [ops]\n"
        "    targets:\n"
        "      - name: db\n"
        "        kind: database\n"
        "        connection: {url: 'sqlite:///state/game.db'}\n"
        "      - name: pg\n"
        "        kind: database\n"
        "        connection: {url: 'postgresql+psycopg://u@127.0.0.1:5432/game'}\n",
        base_dir=tmp_path,
    )
    assert inventory.target("db").connection.url == f"sqlite:///{tmp_path}/state/game.db"
    assert inventory.target("pg").connection.url == "postgresql+psycopg://u@127.0.0.1:5432/game"


# -- the sandbox section --------------------------------------------------------------------


def test_sandbox_section_resolves_against_the_inventory_folder(tmp_path: Path) -> None:
    """An inventory of the sandbox says where the sandbox lives; a platform's has no section."""
    path = tmp_path / "site" / "inventory.yaml"
    path.parent.mkdir()
    path.write_text(HEAD + "      - {name: web, kind: http_service,"
                    " connection: {url: 'http://127.0.0.1:8080/'}}\n"
                    "sandbox: {dir: .floorwatch/sandbox, base_port: 19000}\n")
    section = load_inventory(path).sandbox
    assert section is not None
    assert (section.dir, section.base_port, section.terminals) == (
        tmp_path / "site" / ".floorwatch" / "sandbox", 19000, 8)
    assert parse_inventory(HEAD + "      - {name: web, kind: http_service,"
                           " connection: {url: 'http://127.0.0.1:8080/'}}\n").sandbox is None


def test_bad_sandbox_section_is_located() -> None:
    """A port the sandbox cannot use, a missing folder or an unknown key is refused in place."""
    target = "  - {name: web, kind: http_service, connection: {url: 'http://127.0.0.1:8080/'}}\n"
    found = problems(HEAD + textwrap.indent(target, "    ") + textwrap.dedent("""\
        sandbox:
          base_port: 80
          terminal: 4
        """))
    assert found == [
        "inventory.yaml:9 sandbox.dir: required",
        "inventory.yaml:10 sandbox.base_port: must be >= 1024",
        "inventory.yaml:11 sandbox.terminal: unknown key 'terminal'",
    ], found
