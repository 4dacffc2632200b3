"""Names, ports and paths of the sandbox platform: the one place both the sandbox and the
example inventory take them from.

Every TCP port is ``base_port + offset``; the demo uses the default base, tests pick a free
range. Serial devices are stable symlinks under ``<dir>/dev`` to the pseudo-terminals.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 18000
DEFAULT_TERMINALS = 8
PORT_SPAN = 40  # ports reserved from the base

# HTTP services: name -> (port offset, serves TLS)
HTTP_SERVICES: dict[str, tuple[int, bool]] = {
    "api-gateway": (0, False),
    "provider-alpha": (1, False),
    "provider-beta": (2, False),
    "payment-gateway": (3, True),
    "user-service": (4, False),
}

# Application servers reached over SSH: name -> sshd port offset
SERVERS: dict[str, int] = {"app-primary": 10, "app-standby": 11}
# Services each server's supervisor runs: name -> TCP port offset per server (None: no port)
SERVER_SERVICES: dict[str, dict[str, int | None]] = {
    "app-primary": {"game-engine": 30, "session-worker": None},
    "app-standby": {"game-engine": 31, "session-worker": None},
}

DNS_PORT_OFFSET = 20
DNS_ZONE = "play.sandbox.test."
DNS_GATEWAY_NAME = "api.play.sandbox.test."
DNS_TSIG_KEY_NAME = "floorwatch-sandbox."
DNS_TSIG_ALGORITHM = "hmac-sha256"
# The addresses are data in DNS answers only; nothing listens on them.
DNS_PRIMARY_ADDRESSES = ("127.0.10.1",)
DNS_BACKUP_ADDRESSES = ("127.0.10.2",)

HALL = "hall-1"


def terminal_name(index: int) -> str:
    """Target name of terminal ``index`` (1-based): ``hall-1-t01``."""
    return f"{HALL}-t{index:02d}"


def bill_acceptor_name(index: int) -> str:
    return f"{terminal_name(index)}-bill"


def printer_name(index: int) -> str:
    return f"{terminal_name(index)}-printer"


# The configuration the hall's terminals should run: the sandbox's terminals start with it,
# and the inventory names this file as what redeploy_config delivers, so the two cannot differ.
TERMINAL_CONFIG_FILE = Path(__file__).resolve().parent / "hall-1-terminal.conf"
EXPECTED_CONFIG = TERMINAL_CONFIG_FILE.read_text(encoding="utf-8")
CCTALK_BILL_ADDRESS = 40  # ccTalk's customary address for a bill validator
CCTALK_HOST_ADDRESS = 1

GAMEDB_NAME = "game-db"

# Stand-ins of the SaaS the team is reached through (sandbox/saas.py): name -> port offset
SAAS_SERVICES: dict[str, int] = {"slack": 35, "telegram": 36, "sms-gateway": 37}


def free_base_port(span: int = PORT_SPAN, start: int = 20000, stop: int = 60000) -> int:
    """A base port whose ``span`` following ports are all free on 127.0.0.1 right now.

    The search starts at a random block, so two processes looking at the same moment
    (parallel test sessions) rarely pick the same range.
    """
    blocks = list(range(start, stop - span, span))
    first = random.randrange(len(blocks))
    for base in blocks[first:] + blocks[:first]:
        if all(_port_free(base + i) for i in range(span)):
            return base
    raise OSError("no free port range on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Layout:
    """Where one running sandbox lives: its folder, base port and hall size."""

    dir: Path
    base_port: int = DEFAULT_BASE_PORT
    terminals: int = DEFAULT_TERMINALS

    def port(self, offset: int) -> int:
        return self.base_port + offset

    def http_port(self, service: str) -> int:
        return self.port(HTTP_SERVICES[service][0])

    def ssh_port(self, server: str) -> int:
        return self.port(SERVERS[server])

    def saas_port(self, service: str) -> int:
        return self.port(SAAS_SERVICES[service])

    @property
    def dns_port(self) -> int:
        return self.port(DNS_PORT_OFFSET)

    def component_dir(self, component: str) -> Path:
        """A private folder for one component's files (configs, keys, logs)."""
        path = self.dir / component
        path.mkdir(parents=True, exist_ok=True)
        return path

    def device(self, target: str, role: str) -> Path:
        """Stable path of a serial device: ``<dir>/dev/hall-1-t01.console``."""
        return self.dir / "dev" / f"{target}.{role}"
