"""The closed vocabularies Floorwatch speaks: target, probe, fault, runbook and policy names.

Pure constants. The inventory validates against them, detection and runbooks dispatch on
them, so a name exists here before it exists anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class TargetKind(StrEnum):
    """What a monitored target is."""

    HTTP_SERVICE = "http_service"
    TCP_ENDPOINT = "tcp_endpoint"
    DNS_RECORD = "dns_record"
    SERVER = "server"
    DATABASE = "database"
    GAME_PROVIDER = "game_provider"
    PAYMENT_PROVIDER = "payment_provider"
    TERMINAL = "terminal"
    BILL_ACCEPTOR = "bill_acceptor"
    PRINTER = "printer"


class ProbeKind(StrEnum):
    """How a target is checked."""

    HTTP = "http"
    TCP = "tcp"
    DNS = "dns"
    SSH_METRICS = "ssh_metrics"
    SQL = "sql"
    TERMINAL = "terminal"
    BILL_ACCEPTOR = "bill_acceptor"
    PRINTER = "printer"


class FaultKind(StrEnum):
    """What detection can say is wrong with a target."""

    SERVICE_DOWN = "service_down"
    API_INTEGRATION_ERROR = "api_integration_error"
    PAYMENT_PROCESSING_DELAY = "payment_processing_delay"
    PROVIDER_OUTAGE = "provider_outage"
    INFRASTRUCTURE_OVERLOAD = "infrastructure_overload"
    SECURITY_ALERT = "security_alert"
    TERMINAL_OFFLINE = "terminal_offline"
    TERMINAL_HUNG = "terminal_hung"
    CASH_DEVICE_FAULT = "cash_device_fault"
    STUCK_BETS = "stuck_bets"
    SETTLEMENT_MISMATCH = "settlement_mismatch"
    DELIVERY_FAILURE = "delivery_failure"
    CERTIFICATE_EXPIRING = "certificate_expiring"
    FLAPPING = "flapping"


class RunbookName(StrEnum):
    """The runbook flows an incident can start."""

    DIAGNOSE_TARGET = "diagnose_target"
    RESTART_SERVICE = "restart_service"
    FAIL_OVER_SERVER = "fail_over_server"
    FAIL_OVER_DNS = "fail_over_dns"
    RESTART_TERMINAL = "restart_terminal"
    REDEPLOY_CONFIG = "redeploy_config"
    ESCALATE = "escalate"


class Policy(StrEnum):
    """Who decides that a runbook may act."""

    AUTOMATIC = "automatic"  # acts at once, within the target's budget
    APPROVAL = "approval"  # acts after a person approves in chat or the UI
    MANUAL = "manual"  # never starts by itself; a person runs it from the UI


class Criticality(StrEnum):
    """How much a target matters to the business."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Channel(StrEnum):
    """How a contact is reached."""

    SLACK = "slack"
    EMAIL = "email"
    TELEGRAM = "telegram"
    SMS = "sms"


class SerialProtocol(StrEnum):
    """The line protocol spoken on a serial device."""

    CONSOLE = "console"
    CCTALK = "cctalk"
    ESCPOS = "escpos"


class Weekday(StrEnum):
    """Days of a weekly maintenance window, in ``datetime.weekday()`` order."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """0 for Monday ... 6 for Sunday, as ``datetime.weekday()`` counts."""
        return list(Weekday).index(self)


TARGET_KINDS: tuple[TargetKind, ...] = tuple(TargetKind)
PROBE_KINDS: tuple[ProbeKind, ...] = tuple(ProbeKind)
FAULT_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)
RUNBOOKS: tuple[RunbookName, ...] = tuple(RunbookName)
POLICIES: tuple[Policy, ...] = tuple(Policy)

_T = TargetKind
_P = ProbeKind

# Probe kinds each target kind allows; the first is the default probe of a target without any.
ALLOWED_PROBES: Mapping[TargetKind, tuple[ProbeKind, ...]] = MappingProxyType(
    {
        _T.HTTP_SERVICE: (_P.HTTP, _P.TCP),
        _T.GAME_PROVIDER: (_P.HTTP, _P.TCP),
        _T.PAYMENT_PROVIDER: (_P.HTTP, _P.TCP),
        _T.TCP_ENDPOINT: (_P.TCP,),
        _T.DNS_RECORD: (_P.DNS,),
        _T.SERVER: (_P.SSH_METRICS, _P.TCP),
        _T.DATABASE: (_P.SQL, _P.TCP),
        _T.TERMINAL: (_P.TERMINAL,),
        _T.BILL_ACCEPTOR: (_P.BILL_ACCEPTOR,),
        _T.PRINTER: (_P.PRINTER,),
    }
)

HTTP_KINDS: frozenset[TargetKind] = frozenset(
    {_T.HTTP_SERVICE, _T.GAME_PROVIDER, _T.PAYMENT_PROVIDER}
)
SERIAL_KINDS: frozenset[TargetKind] = frozenset({_T.TERMINAL, _T.BILL_ACCEPTOR, _T.PRINTER})

# Connection fields each target kind needs; a target of that kind lacking one is invalid.
CONNECTION_REQUIRED: Mapping[TargetKind, tuple[str, ...]] = MappingProxyType(
    {
        **{kind: ("url",) for kind in HTTP_KINDS},
        _T.TCP_ENDPOINT: ("host", "port"),
        _T.DNS_RECORD: ("host", "port", "record", "expected"),
        _T.SERVER: ("host", "port", "block"),
        _T.DATABASE: ("url",),
        **{kind: ("device",) for kind in SERIAL_KINDS},
    }
)

# Connection fields each target kind may also set; any other field is refused rather than
# ignored, so a value that would have no effect never looks as if it had one.
CONNECTION_OPTIONAL: Mapping[TargetKind, tuple[str, ...]] = MappingProxyType(
    {
        **{kind: ("ca_bundle", "block", "service") for kind in HTTP_KINDS},
        _T.TCP_ENDPOINT: ("block", "service"),
        _T.DNS_RECORD: ("rdtype", "backup", "block"),
        _T.SERVER: ("services", "standby", "traffic_record"),
        _T.DATABASE: ("block",),
        _T.TERMINAL: ("baud", "protocol", "block", "config_file"),
        _T.BILL_ACCEPTOR: ("baud", "protocol", "address", "block"),
        _T.PRINTER: ("baud", "protocol", "block"),
    }
)

DEFAULT_PROTOCOL: Mapping[TargetKind, SerialProtocol] = MappingProxyType(
    {
        _T.TERMINAL: SerialProtocol.CONSOLE,
        _T.BILL_ACCEPTOR: SerialProtocol.CCTALK,
        _T.PRINTER: SerialProtocol.ESCPOS,
    }
)

# Money is never moved or corrected by a machine: these faults only get looked at or handed
# to people, whatever the policy says.
FINANCIAL_FAULTS: frozenset[FaultKind] = frozenset(
    {FaultKind.STUCK_BETS, FaultKind.SETTLEMENT_MISMATCH, FaultKind.PAYMENT_PROCESSING_DELAY}
)
FINANCIAL_RUNBOOKS: frozenset[RunbookName] = frozenset(
    {RunbookName.DIAGNOSE_TARGET, RunbookName.ESCALATE}
)
