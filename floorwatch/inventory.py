"""The platform inventory: what Floorwatch watches, how, and who it calls.

``load_inventory`` reads a YAML file into frozen models, or raises ``InventoryError`` listing
every problem in the file, each located by line and path::

    inventory.yaml:42 zones[1].targets[3].probes[0].interval: must be > 0

Validation runs in two passes over the same document, so one mistake never hides another:

1. pydantic checks every field (types, ranges, names, unknown keys); its error locations are
   mapped back to YAML lines through the node tree that ``yaml.compose`` builds;
2. the cross-field rules (unique names, references, dependency cycles, per-kind connection
   fields, timeout within interval, financial faults) run on the plain parsed data, which
   exists even where the models could not be built.

Defaults from the file's ``defaults:`` section are applied while validating, so a loaded
``Probe`` always carries its effective interval, timeout and thresholds.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from floorwatch.catalogue import (
    ALLOWED_PROBES,
    CONNECTION_OPTIONAL,
    CONNECTION_REQUIRED,
    DEFAULT_PROTOCOL,
    FINANCIAL_FAULTS,
    FINANCIAL_RUNBOOKS,
    HTTP_KINDS,
    Channel,
    Criticality,
    FaultKind,
    Policy,
    ProbeKind,
    RunbookName,
    SerialProtocol,
    TargetKind,
    Weekday,
)
from floorwatch.errors import InventoryError, Problem, UnknownNameError

__all__ = [
    "BillAcceptorProbe",
    "Budget",
    "Connection",
    "Contact",
    "Defaults",
    "DnsProbe",
    "DnsThresholds",
    "Expect",
    "HttpExpect",
    "HttpProbe",
    "HttpThresholds",
    "Inventory",
    "MaintenanceWindow",
    "PrinterProbe",
    "Probe",
    "RemediationRule",
    "RoutingRule",
    "Slo",
    "SqlProbe",
    "SqlThresholds",
    "SshMetricsProbe",
    "SshThresholds",
    "Target",
    "TcpProbe",
    "TcpThresholds",
    "TerminalExpect",
    "TerminalProbe",
    "TerminalThresholds",
    "Thresholds",
    "UnknownNameError",
    "WeeklySchedule",
    "Zone",
    "load_inventory",
    "parse_inventory",
]

Loc: TypeAlias = tuple[str | int, ...]

SUPPORTED_VERSION = 1
MAX_WINDOW_MINUTES = 7 * 24 * 60
RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SRV", "TXT")


# -- YAML with line numbers ---------------------------------------------------------------

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


try:  # libyaml parses about ten times faster; the pure-Python parser is the fallback
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]  # same interface


class _Loader(_SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers: ``start: 13:00`` must stay a string,
    not become the integer 780."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
    ),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?"
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


@dataclass
class _Document:
    """Plain data parsed from YAML, with the line of every value and every mapping key."""

    filename: str
    data: Any = None
    value_lines: dict[Loc, int] = field(default_factory=dict)
    key_lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[tuple[Loc, Problem]] = field(default_factory=list)

    def line(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest ancestor present in the file.

        A key's own line wins over its value's: ``connection:`` is where a reader looks,
        not the first line of the mapping below it.
        """
        for end in range(len(loc), -1, -1):
            prefix = loc[:end]
            if prefix in self.key_lines:
                return self.key_lines[prefix]
            if prefix in self.value_lines:
                return self.value_lines[prefix]
        return None

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.filename, self.line(loc), _format_loc(loc), message)


def _format_loc(loc: Loc) -> str:
    """``("zones", 1, "targets", 3, "name")`` -> ``zones[1].targets[3].name``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _syntax_problem(filename: str, exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem:
            context_line = exc.context_mark.line + 1 if exc.context_mark is not None else None
            message += f" ({exc.context}" + (f" at line {context_line})" if context_line else ")")
        return Problem(filename, line, "", message)
    return Problem(filename, None, "", f"invalid YAML: {exc}")


def _compose(text: str, filename: str) -> _Document:
    """Parse ``text`` into plain data and line maps; a syntax error raises InventoryError."""
    doc = _Document(filename)
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise InventoryError([_syntax_problem(filename, exc)]) from exc
        if root is None:
            raise InventoryError([Problem(filename, 1, "", "the file is empty")])
        doc.data = _build(loader, doc, root, (), set())
    finally:
        loader.dispose()
    return doc


def _build(loader: _Loader, doc: _Document, node: yaml.Node, loc: Loc, active: set[int]) -> Any:
    """Plain data for ``node``, recording lines under ``loc``."""
    doc.value_lines[loc] = node.start_mark.line + 1
    if id(node) in active:  # an alias pointing at one of its own parents
        doc.problems.append((loc, doc.problem(loc, "recursive alias")))
        return None
    if isinstance(node, yaml.ScalarNode):
        try:
            return loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            # e.g. a timestamp that matches the pattern but not the calendar: 2026-02-30
            reason = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            doc.problems.append((loc, doc.problem(loc, f"cannot read value: {reason}")))
            return node.value
    active.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            return [
                _build(loader, doc, item, (*loc, index), active)
                for index, item in enumerate(node.value)
            ]
        if isinstance(node, yaml.MappingNode):
            return _build_mapping(loader, doc, node, loc, active)
    finally:
        active.discard(id(node))
    raise InventoryError([doc.problem(loc, f"unsupported YAML node {type(node).__name__}")])


def _build_mapping(
    loader: _Loader, doc: _Document, node: yaml.MappingNode, loc: Loc, active: set[int]
) -> dict[str, Any]:
    try:
        loader.flatten_mapping(node)  # resolves "<<: *anchor" merge keys
    except yaml.YAMLError as exc:
        doc.problems.append((loc, _syntax_problem(doc.filename, exc)))
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            doc.problems.append(
                (loc, Problem(doc.filename, key_line, _format_loc(loc), "keys must be plain names"))
            )
            continue
        # The key as written: YAML would turn `on:` into True and `1:` into 1.
        key = str(key_node.value)
        key_loc = (*loc, key)
        if key in out:
            first = doc.key_lines[key_loc]
            message = f"duplicate key {key!r} (first at line {first})"
            problem = Problem(doc.filename, key_line, _format_loc(key_loc), message)
            doc.problems.append((key_loc, problem))
            continue
        doc.key_lines[key_loc] = key_line
        out[key] = _build(loader, doc, value_node, key_loc, active)
    return out


# -- field types ----------------------------------------------------------------------------

_E = TypeVar("_E", bound=str)
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")  # seconds: JSON dumps


def _member(enum: Iterable[_E], noun: str) -> Callable[[object], object]:
    """A before-validator accepting only the enum's values, with a message naming them all."""
    values = [str(member) for member in enum]
    expected = ", ".join(values)

    def check(value: object) -> object:
        if isinstance(value, str) and value in values:
            return value
        if isinstance(value, str):
            message = f"unknown {noun} {value!r} (expected one of: {expected})"
        else:
            message = f"must be a {noun}, one of: {expected} (not {_shown(value)})"
        raise PydanticCustomError("unknown_name", message)

    return check


def _shown(value: object) -> str:
    """A YAML value as a person wrote it: text quoted, numbers as is, else what it is."""
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        return f"the date and time {value.isoformat()}"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    return "a list" if isinstance(value, list) else "a mapping"


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise PydanticCustomError(
            "name", f"{value!r} is not a valid name (lowercase letters, digits and '-')"
        )
    return value


def _check_not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty")
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PydanticCustomError(
            "time_zone", f"unknown time zone {value!r} (use an IANA name such as Europe/Malta)"
        ) from None
    return value


def _check_version(value: object) -> object:
    if value != SUPPORTED_VERSION or isinstance(value, bool):
        raise PydanticCustomError(
            "version", f"unsupported version {_shown(value)} (expected {SUPPORTED_VERSION})"
        )
    return value


def _parse_clock(value: object) -> object:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and (match := _CLOCK.fullmatch(value)):
        return time(int(match[1]), int(match[2]), int(match[3] or 0))
    raise PydanticCustomError("clock", f'must be a time of day "HH:MM", not {value!r}')


def _check_datetime_input(value: object) -> object:
    # pydantic would read a number as a Unix timestamp, and YAML reads 2026-12-01 as a date.
    if isinstance(value, datetime | str):
        return value
    raise PydanticCustomError("when", "must be a date and time such as 2026-12-01T02:00:00")


def _check_record_type(value: str) -> str:
    upper = value.upper()
    if upper not in RECORD_TYPES:
        raise PydanticCustomError(
            "rdtype", f"unknown record type {value!r} (expected one of: {', '.join(RECORD_TYPES)})"
        )
    return upper


def _check_json_path(value: str) -> str:
    if not value.startswith("$"):
        raise PydanticCustomError(
            "json_path", f"must start with '$' (such as $.status), not {value!r}"
        )
    return value


def _check_token(value: str) -> str:
    if not value or any(char.isspace() for char in value):
        raise PydanticCustomError("token", f"{value!r} must be one word, without blanks")
    return value


def _check_path_text(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise PydanticCustomError("blank", "must not be empty")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Text = Annotated[str, AfterValidator(_check_not_blank)]
Token = Annotated[str, AfterValidator(_check_token)]  # host names, DNS names
Seconds = Annotated[float, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(ge=1)]
Percent = Annotated[float, Strict(), Field(gt=0, le=100)]
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
Clock = Annotated[time, BeforeValidator(_parse_clock)]
When = Annotated[datetime, BeforeValidator(_check_datetime_input)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]
PathText = Annotated[str, BeforeValidator(_check_path_text)]

TargetKindField = Annotated[TargetKind, BeforeValidator(_member(TargetKind, "target kind"))]
CriticalityField = Annotated[Criticality, BeforeValidator(_member(Criticality, "criticality"))]
ChannelField = Annotated[Channel, BeforeValidator(_member(Channel, "channel"))]
ProtocolField = Annotated[SerialProtocol, BeforeValidator(_member(SerialProtocol, "protocol"))]
FaultKindField = Annotated[FaultKind, BeforeValidator(_member(FaultKind, "fault kind"))]
RunbookField = Annotated[RunbookName, BeforeValidator(_member(RunbookName, "runbook"))]
PolicyField = Annotated[Policy, BeforeValidator(_member(Policy, "policy"))]
WeekdayField = Annotated[Weekday, BeforeValidator(_member(Weekday, "day"))]


@dataclass(frozen=True)
class _Context:
    """What validators need beyond the data: the file's defaults and folder."""

    defaults: Defaults
    base_dir: Path | None


def _context(info: ValidationInfo) -> _Context | None:
    context = info.context
    if isinstance(context, dict):
        found = context.get("inventory")
        if isinstance(found, _Context):
            return found
    return None


# -- models ---------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Budget(_Model):
    """How many automatic actions one target may take per window before people take over."""

    max_actions: Annotated[int, Strict(), Field(ge=0)] = 3
    window: Annotated[int, Strict(), Field(gt=0)] = 3600  # seconds


class Slo(_Model):
    """An availability objective, in percent over a rolling window of days."""

    objective: Annotated[float, Strict(), Field(gt=0, lt=100)] = 99.9
    window_days: Annotated[int, Strict(), Field(gt=0)] = 30


class Defaults(_Model):
    """Probe timing, budget and SLO used wherever a target or probe does not set its own."""

    interval: Seconds = 30.0
    timeout: Seconds = 5.0
    failures_to_open: Count = 3
    successes_to_resolve: Count = 2
    budget: Budget = Budget()
    slo: Slo = Slo()


class SandboxSection(_Model):
    """The sandbox platform an inventory describes, if it describes one: the main job starts
    it there (its folder, relative to the inventory's, and its base port), so the devices,
    files and ports the inventory names are the ones the sandbox has."""

    dir: Annotated[Path, BeforeValidator(_check_path_text)]
    base_port: Annotated[int, Strict(), Field(ge=1024, le=65000)] = 18000
    terminals: Annotated[int, Strict(), Field(ge=1, le=64)] = 8

    @field_validator("dir")
    @classmethod
    def _resolve_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class Contact(_Model):
    """Someone to reach: a Slack channel, an email address, a Telegram chat or a phone."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    name: str
    channel: ChannelField
    address: Text
    # The Prefect block with the credentials for this contact's channel; None: the default
    # block of the channel kind (``floorwatch.notify.DEFAULT_BLOCKS``).
    block: Name | None = None


class RoutingRule(_Model):
    """Who hears about an incident: one that matches every filter of the rule is sent to
    its ``channels`` (contact names). An empty filter matches everything; every matching
    rule adds its channels."""

    zones: tuple[Name, ...] = ()
    severities: tuple[CriticalityField, ...] = ()
    fault_kinds: tuple[FaultKindField, ...] = ()
    channels: Annotated[tuple[Name, ...], Field(min_length=1)]

    def matches(self, zone: str | None, severity: str | None, fault_kind: str | None) -> bool:
        """Whether an incident (or, with all three None, a platform-wide message) matches."""
        return (
            (not self.zones or zone in self.zones)
            and (not self.severities or severity in self.severities)
            and (not self.fault_kinds or fault_kind in self.fault_kinds)
        )


class RemediationRule(_Model):
    """Which runbook answers a fault, and whether it may act on its own."""

    runbook: RunbookField
    policy: PolicyField


class Connection(_Model):
    """How to reach a target. Every field is optional here; which are required depends on
    the target's kind and is checked by the loader (``catalogue.CONNECTION_REQUIRED``)."""

    url: Text | None = None  # http(s) URL, or a SQLAlchemy URL for a database
    host: Token | None = None
    port: Port | None = None
    block: Name | None = None  # name of a Prefect block with settings and secrets
    device: PathText | None = None  # serial device path (absolute once loaded) or pyserial URL
    baud: Annotated[int, Strict(), Field(gt=0)] = 9600
    protocol: ProtocolField | None = None
    address: Annotated[int, Strict(), Field(ge=1, le=255)] | None = None  # ccTalk address
    ca_bundle: Annotated[Path, BeforeValidator(_check_path_text)] | None = None
    record: Token | None = None  # DNS name watched by a dns_record target
    rdtype: Annotated[str, AfterValidator(_check_record_type)] = "A"
    expected: tuple[Text, ...] = ()  # values the record should hold
    backup: tuple[Text, ...] = ()  # values it holds after a DNS failover
    services: tuple[Text, ...] = ()  # services a server runs
    service: Text | None = None  # the service (on a parent server) behind an endpoint
    standby: Text | None = None  # a server's standby server (target name)
    traffic_record: Text | None = None  # the dns_record target sending traffic to a server
    # The configuration a terminal should run (redeploy_config delivers it); relative to the
    # inventory's folder, like devices.
    config_file: Annotated[Path, BeforeValidator(_check_path_text)] | None = None

    @field_validator("device")
    @classmethod
    def _resolve_device(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A pyserial URL (socket://, rfc2217://) is not a file; leave it alone.
        if value is None or "://" in value:
            return value
        return str(_resolve(Path(value), info))

    @field_validator("ca_bundle", "config_file")
    @classmethod
    def _resolve_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @field_validator("url")
    @classmethod
    def _resolve_sqlite_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A relative SQLite file is relative to the inventory, like devices: a worker
        # started in another folder must find the same database.
        prefix = "sqlite:///"
        if value is None or not value.startswith(prefix) or value.startswith(prefix + "/"):
            return value
        path, _, query = value[len(prefix):].partition("?")
        if not path or path == ":memory:":
            return value
        resolved = str(_resolve(Path(path), info))
        return prefix + resolved + (f"?{query}" if query else "")


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """``path`` against the inventory's folder. Symlinks are kept: the sandbox's serial
    devices are stable links to pseudo-terminals that change on every start."""
    path = path.expanduser()
    context = _context(info)
    if path.is_absolute() or context is None or context.base_dir is None:
        return path
    return context.base_dir / path


def _check_http_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError("must be an absolute path such as /v1/status, without spaces")
    return value


class Expect(_Model):
    """What a probe expects to see; probe kinds without expectations use this empty one."""


class Thresholds(_Model):
    """Limits beyond which a probe result counts as a failure; empty for some probe kinds."""


class HttpExpect(Expect):
    status: Annotated[int, Strict(), Field(ge=100, le=599)] = 200
    body_contains: str | None = None
    json_path: Annotated[str, AfterValidator(_check_json_path)] | None = None
    json_equals: JsonValue = None  # compared with the value at json_path when set
    json_max: float | None = None  # the number at json_path must not exceed this


class HttpThresholds(Thresholds):
    latency_ms: Seconds | None = None
    cert_days: Annotated[int, Strict(), Field(ge=0)] | None = None


class TcpThresholds(Thresholds):
    latency_ms: Seconds | None = None


class DnsThresholds(Thresholds):
    latency_ms: Seconds | None = None


class SshThresholds(Thresholds):
    cpu_percent: Percent = 90.0
    memory_percent: Percent = 90.0
    disk_percent: Percent = 90.0
    load_per_cpu: Seconds = 4.0


class SqlThresholds(Thresholds):
    stuck_bets_minutes: Seconds = 10.0
    pending_payment_minutes: Seconds = 15.0
    payment_failure_rate: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.2
    latency_ms: Seconds | None = None


class TerminalExpect(Expect):
    config_hash: Text | None = None


class TerminalThresholds(Thresholds):
    heartbeat_stale_s: Seconds = 90.0  # the loader sets 3 x the probe's interval when absent


_TIMING_KEYS = ("interval", "timeout", "failures_to_open", "successes_to_resolve")


class Probe(_Model):
    """One periodic check of a target. Loaded probes are of the subclass for their kind,
    whose ``expect`` and ``thresholds`` have that kind's fields."""

    kind: ProbeKind
    interval: Seconds = 30.0
    timeout: Seconds = 5.0
    failures_to_open: Count = 3
    successes_to_resolve: Count = 2
    expect: Expect = Expect()
    thresholds: Thresholds = Thresholds()
    # The fault kind this probe reports when the target answers but fails its expectations;
    # None: derived from the target's kind (bad answer -> api_integration_error...). An
    # unreachable target is always reported by its kind (service_down, terminal_offline...).
    fault: FaultKindField | None = None

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        context = _context(info)
        if not isinstance(data, dict) or context is None:
            return data
        filled = dict(data)
        for key in _TIMING_KEYS:
            filled.setdefault(key, getattr(context.defaults, key))
        return filled


class HttpProbe(Probe):
    kind: Literal[ProbeKind.HTTP] = ProbeKind.HTTP
    # Request this path on the connection URL's origin instead of the URL itself, so one
    # service can have a health probe and, say, a login-failure probe.
    path: Annotated[str, AfterValidator(_check_http_path)] | None = None
    expect: HttpExpect = HttpExpect()
    thresholds: HttpThresholds = HttpThresholds()


class TcpProbe(Probe):
    kind: Literal[ProbeKind.TCP] = ProbeKind.TCP
    thresholds: TcpThresholds = TcpThresholds()


class DnsProbe(Probe):
    kind: Literal[ProbeKind.DNS] = ProbeKind.DNS
    thresholds: DnsThresholds = DnsThresholds()


class SshMetricsProbe(Probe):
    kind: Literal[ProbeKind.SSH_METRICS] = ProbeKind.SSH_METRICS
    thresholds: SshThresholds = SshThresholds()


class SqlProbe(Probe):
    kind: Literal[ProbeKind.SQL] = ProbeKind.SQL
    thresholds: SqlThresholds = SqlThresholds()


class TerminalProbe(Probe):
    kind: Literal[ProbeKind.TERMINAL] = ProbeKind.TERMINAL
    expect: TerminalExpect = TerminalExpect()
    thresholds: TerminalThresholds = TerminalThresholds()

    @model_validator(mode="before")
    @classmethod
    def _default_staleness(cls, data: Any, info: ValidationInfo) -> Any:
        """A heartbeat is stale after three missed intervals unless the file says otherwise."""
        if not isinstance(data, dict):
            return data
        thresholds = data.get("thresholds", {})
        if not isinstance(thresholds, dict) or "heartbeat_stale_s" in thresholds:
            return data
        context = _context(info)
        interval = _positive(data.get("interval", context.defaults.interval if context else 30.0))
        if interval is None:
            return data  # the bad interval is reported on its own
        return {**data, "thresholds": {**thresholds, "heartbeat_stale_s": 3 * interval}}


class BillAcceptorProbe(Probe):
    kind: Literal[ProbeKind.BILL_ACCEPTOR] = ProbeKind.BILL_ACCEPTOR


class PrinterProbe(Probe):
    kind: Literal[ProbeKind.PRINTER] = ProbeKind.PRINTER


AnyProbe = Annotated[
    HttpProbe
    | TcpProbe
    | DnsProbe
    | SshMetricsProbe
    | SqlProbe
    | TerminalProbe
    | BillAcceptorProbe
    | PrinterProbe,
    Field(discriminator="kind"),
]

_P = TypeVar("_P", bound=Probe)


class Target(_Model):
    """One monitored thing: a service, server, record, database or hall device."""

    name: Name
    kind: TargetKindField
    criticality: CriticalityField = Criticality.MEDIUM
    connection: Connection = Connection()
    depends_on: tuple[Name, ...] = ()
    slo: Slo = Slo()
    budget: Budget = Budget()
    probes: tuple[AnyProbe, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        context = _context(info)
        defaults = context.defaults if context else Defaults()
        filled = dict(data)
        filled.setdefault("slo", defaults.slo)
        filled.setdefault("budget", defaults.budget)
        kind = _enum_or_none(TargetKind, data.get("kind"))
        if kind is not None:
            if not filled.get("probes"):
                filled["probes"] = [{"kind": ALLOWED_PROBES[kind][0]}]
            connection = filled.get("connection")
            if kind in DEFAULT_PROTOCOL and isinstance(connection, dict):
                filled["connection"] = {"protocol": DEFAULT_PROTOCOL[kind], **connection}
        return filled

    def probes_of(self, kind: type[_P]) -> tuple[_P, ...]:
        """This target's probes of one class, e.g. ``target.probes_of(HttpProbe)``."""
        return tuple(probe for probe in self.probes if isinstance(probe, kind))


DEFAULT_ACK_TIMEOUT_S = 900.0


class Zone(_Model):
    """A group of targets swept together, with whom to escalate to, in order.

    ``escalation`` lists the levels, first level first; an incident nobody acknowledges
    within ``ack_timeout_s`` of reaching a level climbs to the next one."""

    name: Name
    escalation: Annotated[tuple[Name, ...], Field(min_length=1)]
    ack_timeout_s: Seconds = DEFAULT_ACK_TIMEOUT_S
    targets: tuple[Target, ...]
    remediation: dict[FaultKindField, RemediationRule] = Field(default_factory=dict)


class WeeklySchedule(_Model):
    """A window that recurs on some weekdays at a local wall-clock time."""

    days: Annotated[tuple[WeekdayField, ...], Field(min_length=1)]
    start: Clock
    duration_minutes: Annotated[int, Strict(), Field(gt=0, le=MAX_WINDOW_MINUTES)]


class MaintenanceWindow(_Model):
    """A time when faults on some targets or zones are expected and not acted upon.

    Either ``weekly`` or ``start``/``end`` (one-off) is set; naive times are in ``timezone``.
    """

    name: Name
    targets: tuple[Name, ...] = ()
    zones: tuple[Name, ...] = ()
    weekly: WeeklySchedule | None = None
    start: When | None = None
    end: When | None = None
    timezone: TimeZoneName

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def covers(self, target: str, zone: str) -> bool:
        """Whether this window applies to ``target``, which lives in ``zone``."""
        return target in self.targets or zone in self.zones

    def active_at(self, ts: datetime) -> bool:
        """Whether the window is open at the aware instant ``ts``."""
        if ts.tzinfo is None:
            raise ValueError(f"active_at needs an aware datetime, got naive {ts.isoformat()}")
        if self.weekly is not None:
            return _weekly_active(self.weekly, self.tz, ts)
        if self.start is None or self.end is None:
            return False
        return _aware(self.start, self.tz) <= ts < _aware(self.end, self.tz)


def _aware(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def _weekly_active(weekly: WeeklySchedule, tz: ZoneInfo, ts: datetime) -> bool:
    # Each opening is placed on the local calendar, so 03:00 stays 03:00 across a DST change,
    # while the duration is elapsed time. A window lasts at most a week, so an opening that
    # covers ts began on ts's local day or one of the seven before it.
    today = ts.astimezone(tz).date()
    day_numbers = {day.number for day in weekly.days}
    duration = timedelta(minutes=weekly.duration_minutes)
    for back in range(8):
        day = today - timedelta(days=back)
        if day.weekday() not in day_numbers:
            continue
        opens = datetime.combine(day, weekly.start, tzinfo=tz).astimezone(UTC)
        if opens <= ts < opens + duration:
            return True
    return False


class Inventory(_Model):
    """The whole platform as Floorwatch sees it. Lookups are by name and run in O(1)."""

    version: Annotated[int, BeforeValidator(_check_version)]
    defaults: Defaults = Defaults()
    contacts: dict[Name, Contact] = Field(default_factory=dict)
    zones: Annotated[tuple[Zone, ...], Field(min_length=1)]
    maintenance: tuple[MaintenanceWindow, ...] = ()
    remediation: dict[FaultKindField, RemediationRule] = Field(default_factory=dict)
    routing: tuple[RoutingRule, ...] = ()
    # Set only in an inventory of the sandbox platform (``inventory.example.yaml``).
    sandbox: SandboxSection | None = None

    _targets: dict[str, Target] = PrivateAttr(default_factory=dict)
    _zone_of: dict[str, Zone] = PrivateAttr(default_factory=dict)
    _zones: dict[str, Zone] = PrivateAttr(default_factory=dict)
    _children: dict[str, list[Target]] = PrivateAttr(default_factory=dict)

    @field_validator("contacts", mode="before")
    @classmethod
    def _name_contacts(cls, value: Any) -> Any:
        # A contact's name is its key; a `name:` written inside is reported by the loader.
        if not isinstance(value, dict):
            return value
        return {
            key: {**contact, "name": key} if isinstance(contact, dict) else contact
            for key, contact in value.items()
        }

    def model_post_init(self, context: Any, /) -> None:
        for zone in self.zones:
            self._zones.setdefault(zone.name, zone)
            for target in zone.targets:
                self._targets.setdefault(target.name, target)
                self._zone_of.setdefault(target.name, zone)
        for target in self._targets.values():
            for parent in target.depends_on:
                self._children.setdefault(parent, []).append(target)

    def targets(self) -> tuple[Target, ...]:
        """Every target, zone by zone, in file order."""
        return tuple(self._targets.values())

    def target(self, name: str) -> Target:
        """The target called ``name``; UnknownNameError if there is none."""
        try:
            return self._targets[name]
        except KeyError:
            raise UnknownNameError(f"unknown target {name!r}") from None

    def zone(self, name: str) -> Zone:
        """The zone called ``name``; UnknownNameError if there is none."""
        try:
            return self._zones[name]
        except KeyError:
            raise UnknownNameError(f"unknown zone {name!r}") from None

    def zone_of(self, name: str) -> Zone:
        """The zone holding target ``name``."""
        self.target(name)
        return self._zone_of[name]

    def parents(self, name: str) -> tuple[Target, ...]:
        """The targets ``name`` depends on."""
        return tuple(self._targets[parent] for parent in self.target(name).depends_on)

    def children(self, name: str) -> tuple[Target, ...]:
        """The targets that depend on ``name``, in file order."""
        self.target(name)
        return tuple(self._children.get(name, ()))

    def remediation_for(self, zone_name: str, fault_kind: str) -> RemediationRule | None:
        """The rule for a fault in a zone: the zone's own rule first, then the global one."""
        kind = _enum_or_none(FaultKind, fault_kind)
        if kind is None:
            raise UnknownNameError(f"unknown fault kind {fault_kind!r}")
        zone = self.zone(zone_name)
        return zone.remediation.get(kind) or self.remediation.get(kind)

    def escalation(self, zone_name: str) -> tuple[Contact, ...]:
        """The zone's contacts, first level first."""
        return tuple(self.contacts[name] for name in self.zone(zone_name).escalation)

    def sweep_groups(self) -> dict[tuple[str, ProbeKind], tuple[Target, ...]]:
        """Targets to sweep together: (zone name, probe kind) -> targets with such a probe."""
        groups: dict[tuple[str, ProbeKind], list[Target]] = {}
        for zone in self.zones:
            for target in zone.targets:
                for kind in dict.fromkeys(probe.kind for probe in target.probes):
                    groups.setdefault((zone.name, kind), []).append(target)
        return {key: tuple(targets) for key, targets in groups.items()}

    def sweep_interval(self, zone: str, probe_kind: ProbeKind | str) -> float:
        """How often the sweep of (``zone``, ``probe_kind``) runs: its shortest probe interval."""
        intervals = [
            probe.interval
            for target in self.zone(zone).targets
            for probe in target.probes
            if probe.kind == probe_kind
        ]
        if not intervals:
            raise UnknownNameError(f"zone {zone!r} has no {probe_kind} probe")
        return min(intervals)

    def windows_for(self, name: str) -> tuple[MaintenanceWindow, ...]:
        """The maintenance windows that name target ``name`` or its zone."""
        zone = self.zone_of(name).name
        return tuple(window for window in self.maintenance if window.covers(name, zone))

    def in_maintenance(self, name: str, ts: datetime) -> bool:
        """Whether target ``name`` is inside one of its maintenance windows at ``ts``."""
        return any(window.active_at(ts) for window in self.windows_for(name))


# -- pydantic errors -> located problems ------------------------------------------------------

_TYPE_MESSAGES = {
    "missing": "required",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "datetime_type": "must be a date and time such as 2026-12-01T02:00:00",
    "datetime_parsing": "must be a date and time such as 2026-12-01T02:00:00",
    "datetime_from_date_parsing": "must be a date and time such as 2026-12-01T02:00:00",
    "path_type": "must be a path",
    "union_tag_not_found": "required",
}
_BOUND_MESSAGES = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _error_loc(error: ErrorDetails, data: Any) -> Loc:
    """Turn pydantic's loc into a path through the YAML data.

    pydantic inserts steps that are not in the file: the tag of the probe union (``http``)
    and ``[key]`` for a bad mapping key. Walking the data tells them apart from real keys.
    """
    loc: list[str | int] = []
    current = data
    steps = error["loc"]
    for index, step in enumerate(steps):
        if step == "[key]":
            continue
        if isinstance(current, dict):
            if (
                index > 0
                and isinstance(steps[index - 1], int)
                and len(loc) >= 2
                and loc[-2] == "probes"
                and step == current.get("kind")
            ):
                continue  # the union tag, always right after the probe's index
            loc.append(step)
            current = current.get(str(step))
        elif isinstance(current, list) and isinstance(step, int):
            loc.append(step)
            current = current[step] if 0 <= step < len(current) else None
        else:
            loc.append(step)
            current = None
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("kind")
    return tuple(loc)


def _error_message(error: ErrorDetails) -> str:
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if kind == "union_tag_invalid":
        expected = ", ".join(ProbeKind)
        return f"unknown probe kind {context.get('tag')!r} (expected one of: {expected})"
    if kind in _BOUND_MESSAGES:
        key, sign = _BOUND_MESSAGES[kind]
        bound = context.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "must be > 0", not "> 0.0", for a float field
        return f"must be {sign} {bound}"
    if kind == "too_short":
        minimum = context.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    message = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message[:1].lower() + message[1:]


# -- cross-field checks on the plain data -----------------------------------------------------

_EnumT = TypeVar("_EnumT", TargetKind, ProbeKind, FaultKind, RunbookName, Channel)


def _enum_or_none(enum: type[_EnumT], value: object) -> _EnumT | None:
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            return None
    return None


def _positive(value: object) -> float | None:
    """``value`` if it is a number above zero (YAML's true/false excluded), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _items(value: object) -> Iterator[tuple[int, dict[str, Any]]]:
    """The mappings in a list, with their indexes; anything else is pydantic's to report."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield index, item


def _strings(value: object) -> Iterator[tuple[int, str]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield index, item


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


_SQL_URL = re.compile(r"[a-z][a-z0-9_]*(\+[a-z0-9_]+)?://.*")


class _Checker:
    """The rules that span several fields or entries, run on the plain parsed data."""

    def __init__(self, doc: _Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.zone_lines: dict[str, int | None] = {}
        self.target_lines: dict[str, int | None] = {}
        self.window_lines: dict[str, int | None] = {}
        self.depends: dict[str, list[tuple[Loc, str]]] = {}
        self.dependency_entries: list[tuple[Loc, str]] = []
        # connection fields naming other targets: (loc, name, the kind it must have)
        self.reference_entries: list[tuple[Loc, str, TargetKind]] = []
        self.target_kinds: dict[str, str] = {}

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(self.doc.problem(loc, message))

    def run(self) -> list[Problem]:
        data: dict[str, Any] = self.doc.data
        contacts = data.get("contacts")
        # No contacts section means no contacts; a malformed one is reported by pydantic and
        # its names cannot be trusted, so escalation is not checked against it.
        known_contacts = (
            set(contacts) if isinstance(contacts, dict) else set() if contacts is None else None
        )
        self._check_contacts(contacts)
        defaults = data.get("defaults")
        inherited = self._inherited_timing(defaults)
        if isinstance(defaults, dict):
            self._check_timing(defaults, ("defaults",), dict(_builtin_timing()), "built-in default")
        for zone_index, zone in _items(data.get("zones")):
            self._check_zone(zone, ("zones", zone_index), known_contacts, inherited)
        self._check_dependencies()
        self._check_remediation(data.get("remediation"), ("remediation",))
        for window_index, window in _items(data.get("maintenance")):
            self._check_window(window, ("maintenance", window_index))
        for rule_index, rule in _items(data.get("routing")):
            self._check_routing_rule(rule, ("routing", rule_index), known_contacts)
        return self.problems

    def _first(self, seen: dict[str, int | None], name: str, loc: Loc, noun: str) -> bool:
        """Record the first ``name``; report a later one with the first's line."""
        if name in seen:
            first = seen[name]
            where = f" (first defined at line {first})" if first is not None else ""
            self.add(loc, f"duplicate {noun} {name!r}{where}")
            return False
        seen[name] = self.doc.line(loc)
        return True

    def _check_contacts(self, contacts: object) -> None:
        if not isinstance(contacts, dict):
            return
        for name, contact in contacts.items():
            if not isinstance(contact, dict):
                continue
            loc: Loc = ("contacts", name)
            if "name" in contact:
                self.add((*loc, "name"), "unknown key 'name' (a contact's name is its key)")
            channel = _enum_or_none(Channel, contact.get("channel"))
            address = contact.get("address")
            if not isinstance(address, str):
                continue
            if channel is Channel.EMAIL and "@" not in address:
                self.add((*loc, "address"), f"{address!r} is not an email address")
            if channel is Channel.SMS and not re.fullmatch(r"\+[0-9]{6,15}", address):
                self.add(
                    (*loc, "address"), f"{address!r} is not a phone number like +35699123456"
                )

    def _inherited_timing(self, defaults: object) -> dict[str, object]:
        """The timing probes inherit; a bad default is left out (it is reported itself)."""
        timing: dict[str, object] = dict(_builtin_timing())
        if isinstance(defaults, dict):
            for key in ("interval", "timeout"):
                if key in defaults:
                    value = defaults[key]
                    timing[key] = _positive(value)
        return timing

    def _check_timing(
        self, mapping: dict[str, Any], loc: Loc, inherited: dict[str, object], source: str
    ) -> None:
        interval = _positive(mapping.get("interval", inherited.get("interval")))
        timeout = _positive(mapping.get("timeout", inherited.get("timeout")))
        if interval is None or timeout is None or timeout <= interval:
            return
        if "timeout" in mapping:
            self.add((*loc, "timeout"), f"must be <= interval ({_seconds(interval)})")
        elif "interval" in mapping:
            self.add(
                (*loc, "interval"),
                f"must be >= timeout ({_seconds(timeout)}, {source})",
            )

    def _check_zone(
        self,
        zone: dict[str, Any],
        loc: Loc,
        known_contacts: set[str] | None,
        inherited: dict[str, object],
    ) -> None:
        name = zone.get("name")
        if isinstance(name, str):
            self._first(self.zone_lines, name, (*loc, "name"), "zone name")
        if known_contacts is not None:
            for index, contact in _strings(zone.get("escalation")):
                if contact not in known_contacts:
                    known = ", ".join(sorted(known_contacts)) or "none"
                    self.add(
                        (*loc, "escalation", index),
                        f"unknown contact {contact!r} (known: {known})",
                    )
        self._check_remediation(zone.get("remediation"), (*loc, "remediation"))
        for target_index, target in _items(zone.get("targets")):
            self._check_target(target, (*loc, "targets", target_index), inherited)

    def _check_target(
        self, target: dict[str, Any], loc: Loc, inherited: dict[str, object]
    ) -> None:
        entries = [
            ((*loc, "depends_on", index), parent)
            for index, parent in _strings(target.get("depends_on"))
        ]
        self.dependency_entries.extend(entries)
        name = target.get("name")
        if isinstance(name, str) and isinstance(target.get("kind"), str):
            self.target_kinds.setdefault(name, target["kind"])
        connection = target.get("connection")
        if isinstance(connection, dict):
            for key, wanted in (("standby", TargetKind.SERVER),
                                ("traffic_record", TargetKind.DNS_RECORD)):
                if isinstance(connection.get(key), str):
                    self.reference_entries.append(
                        ((*loc, "connection", key), connection[key], wanted)
                    )
        if isinstance(name, str) and self._first(
            self.target_lines, name, (*loc, "name"), "target name"
        ):
            self.depends[name] = entries  # the dependency graph follows first definitions
        kind = _enum_or_none(TargetKind, target.get("kind"))
        connection = target.get("connection", {})
        if kind is not None and isinstance(connection, dict):
            self._check_connection(kind, connection, (*loc, "connection"))
        for probe_index, probe in _items(target.get("probes")):
            probe_loc: Loc = (*loc, "probes", probe_index)
            probe_kind = _enum_or_none(ProbeKind, probe.get("kind"))
            if kind is not None and probe_kind is not None:
                allowed = ALLOWED_PROBES[kind]
                if probe_kind not in allowed:
                    self.add(
                        (*probe_loc, "kind"),
                        f"probe kind {probe_kind.value!r} is not allowed for target kind "
                        f"{kind.value!r} (allowed: {', '.join(allowed)})",
                    )
            self._check_timing(probe, probe_loc, inherited, "inherited")
            expect = probe.get("expect")
            if isinstance(expect, dict) and "json_path" not in expect:
                for key in ("json_equals", "json_max"):
                    if key in expect:
                        self.add((*probe_loc, "expect", key), "needs json_path")

    def _check_connection(self, kind: TargetKind, connection: dict[str, Any], loc: Loc) -> None:
        required = CONNECTION_REQUIRED[kind]
        for key in required:
            if connection.get(key) is None:
                self.add((*loc, key), f"required for kind {kind.value}")
            elif connection[key] == []:
                self.add((*loc, key), f"must list at least one value for kind {kind.value}")
        used = (*required, *CONNECTION_OPTIONAL[kind])
        for key in connection:
            if key in Connection.model_fields and key not in used:
                self.add(
                    (*loc, key), f"not used by kind {kind.value} (it uses: {', '.join(used)})"
                )
        url = connection.get("url")
        if isinstance(url, str) and url.strip():
            if kind in HTTP_KINDS and not _is_http_url(url):
                self.add((*loc, "url"), f"{url!r} is not an http(s) URL")
            if kind is TargetKind.DATABASE and not _SQL_URL.fullmatch(url):
                self.add(
                    (*loc, "url"),
                    f"{url!r} is not a SQLAlchemy URL such as postgresql+psycopg://host/db",
                )
        if kind is TargetKind.DNS_RECORD:
            self._check_record_values(connection, loc)

    def _check_record_values(self, connection: dict[str, Any], loc: Loc) -> None:
        rdtype = connection.get("rdtype", "A")
        version = {"A": 4, "AAAA": 6}.get(rdtype.upper()) if isinstance(rdtype, str) else None
        if version is None:
            return
        for key in ("expected", "backup"):
            for index, value in _strings(connection.get(key)):
                try:
                    address = ipaddress.ip_address(value)
                except ValueError:
                    address = None
                if address is None or address.version != version:
                    self.add((*loc, key, index), f"{value!r} is not an IPv{version} address")

    def _check_dependencies(self) -> None:
        for loc, parent in self.dependency_entries:
            if parent not in self.target_lines:
                self.add(loc, f"depends on unknown target {parent!r}")
        for loc, name, kind in self.reference_entries:
            if name not in self.target_lines:
                self.add(loc, f"unknown target {name!r}")
            elif self.target_kinds.get(name) != kind:
                self.add(loc, f"{name!r} is a {self.target_kinds.get(name)}, not a {kind}")
        # Depth-first search in file order, iterative so that a long chain of dependencies
        # cannot exhaust the stack. Each edge back into the current path closes one cycle,
        # reported once, at the depends_on entry that closes it.
        on_path, done = 1, 2
        state: dict[str, int] = {}
        for root in self.depends:
            if root in state:
                continue
            state[root] = on_path
            path = [root]
            stack = [iter(self.depends[root])]
            while stack:
                for loc, parent in stack[-1]:
                    if parent not in self.target_lines:
                        continue
                    if state.get(parent) == on_path:
                        cycle = [*path[path.index(parent) :], parent]
                        self.add(loc, "dependency cycle: " + " -> ".join(cycle))
                    elif parent not in state:
                        state[parent] = on_path
                        path.append(parent)
                        stack.append(iter(self.depends.get(parent, ())))
                        break
                else:
                    stack.pop()
                    state[path.pop()] = done

    def _check_remediation(self, rules: object, loc: Loc) -> None:
        if not isinstance(rules, dict):
            return
        for fault, rule in rules.items():
            kind = _enum_or_none(FaultKind, fault)
            if kind not in FINANCIAL_FAULTS or not isinstance(rule, dict):
                continue
            runbook = _enum_or_none(RunbookName, rule.get("runbook"))
            if runbook is not None and runbook not in FINANCIAL_RUNBOOKS:
                allowed = " or ".join(sorted(FINANCIAL_RUNBOOKS))
                self.add(
                    (*loc, fault, "runbook"),
                    f"financial faults are never fixed automatically: {fault} may only use "
                    f"{allowed}, not {runbook.value}",
                )

    def _check_window(self, window: dict[str, Any], loc: Loc) -> None:
        name = window.get("name")
        if isinstance(name, str):
            self._first(self.window_lines, name, (*loc, "name"), "window name")
        if not window.get("targets") and not window.get("zones"):
            self.add(loc, "needs targets or zones (or both)")
        for index, target in _strings(window.get("targets")):
            if target not in self.target_lines:
                self.add((*loc, "targets", index), f"unknown target {target!r}")
        for index, zone in _strings(window.get("zones")):
            if zone not in self.zone_lines:
                self.add((*loc, "zones", index), f"unknown zone {zone!r}")
        # `start:` with no value is YAML null: as good as absent, and reported as such.
        weekly = window.get("weekly") is not None
        one_off = window.get("start") is not None or window.get("end") is not None
        if weekly and one_off:
            self.add((*loc, "weekly"), "a window is weekly or one-off (start/end), not both")
        elif not weekly and not one_off:
            self.add(loc, "needs weekly, or start and end")
        elif one_off:
            for key, other in (("start", "end"), ("end", "start")):
                if window.get(key) is None:
                    self.add((*loc, key), f"required with {other}")
            self._check_order(window, loc)

    def _check_routing_rule(
        self, rule: dict[str, Any], loc: Loc, known_contacts: set[str] | None
    ) -> None:
        for index, zone in _strings(rule.get("zones")):
            if zone not in self.zone_lines:
                self.add((*loc, "zones", index), f"unknown zone {zone!r}")
        if known_contacts is None:
            return  # a malformed contacts section is reported on its own
        for index, contact in _strings(rule.get("channels")):
            if contact not in known_contacts:
                known = ", ".join(sorted(known_contacts)) or "none"
                self.add((*loc, "channels", index), f"unknown contact {contact!r} (known: {known})")

    def _check_order(self, window: dict[str, Any], loc: Loc) -> None:
        start, end = window.get("start"), window.get("end")
        if not (isinstance(start, datetime) and isinstance(end, datetime)):
            return
        timezone = window.get("timezone")
        try:
            tz = ZoneInfo(timezone) if isinstance(timezone, str) else None
        except (ZoneInfoNotFoundError, ValueError, OSError):
            tz = None
        if tz is not None:
            start, end = _aware(start, tz), _aware(end, tz)
        elif (start.tzinfo is None) != (end.tzinfo is None):
            return  # cannot compare without the zone, which is reported already
        if start >= end:
            self.add((*loc, "end"), f"must be after start ({window['start'].isoformat()})")


def _builtin_timing() -> Iterator[tuple[str, object]]:
    builtin = Defaults()
    yield "interval", builtin.interval
    yield "timeout", builtin.timeout


# -- public entry points -------------------------------------------------------------------------


def parse_inventory(
    text: str, filename: str = "inventory.yaml", base_dir: Path | None = None
) -> Inventory:
    """Validate inventory YAML ``text``; problems name ``filename``.

    Relative device, CA bundle and config file paths are resolved against ``base_dir`` (the
    current directory when None). Raises InventoryError listing every problem, in file order.
    """
    doc = _compose(text, filename)
    if not isinstance(doc.data, dict):
        found = type(doc.data).__name__
        message = f"the top level must be a mapping with version and zones, not {found}"
        raise InventoryError([doc.problem((), message)])
    problems = [problem for _loc, problem in doc.problems]
    composed = {loc for loc, _problem in doc.problems}
    context = _Context(_file_defaults(doc.data.get("defaults")), base_dir or Path.cwd())
    inventory: Inventory | None = None
    try:
        inventory = Inventory.model_validate(doc.data, context={"inventory": context})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = _error_loc(error, doc.data)
            if loc in composed and error["type"] != "extra_forbidden":
                continue  # already reported when the YAML value was read
            if error["type"] == "too_short" and _length(doc.data, loc) >= _min_length(error):
                continue  # pydantic counts only the valid items; the bad ones are reported
            problems.append(doc.problem(loc, _error_message(error)))
    problems.extend(_Checker(doc).run())
    if problems or inventory is None:
        raise InventoryError(sorted(problems, key=lambda p: p.line or 0))
    return inventory


def _min_length(error: ErrorDetails) -> int:
    minimum = (error.get("ctx") or {}).get("min_length", 1)
    return minimum if isinstance(minimum, int) else 1


def _length(data: Any, loc: Loc) -> int:
    """How many items the list at ``loc`` holds in the file (0 if it is not a list)."""
    for step in loc:
        if isinstance(data, dict) and isinstance(step, str):
            data = data.get(step)
        elif isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data):
            data = data[step]
        else:
            return 0
    return len(data) if isinstance(data, list) else 0


def _file_defaults(raw: object) -> Defaults:
    """The file's defaults, or the built-in ones when they are invalid (and reported)."""
    try:
        return Defaults.model_validate(raw if raw is not None else {})
    except ValidationError:
        return Defaults()


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read and validate the inventory file at ``path``; raises InventoryError."""
    filename = os.fspath(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InventoryError([Problem(filename, None, "", f"cannot read: {reason}")]) from exc
    except UnicodeDecodeError as exc:
        raise InventoryError(
            [Problem(filename, None, "", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
        ) from exc
    return parse_inventory(text, filename=filename, base_dir=file.absolute().parent)
