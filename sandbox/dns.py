"""The sandbox DNS: a real BIND 9 ``named``, authoritative for the platform zone on loopback.

The zone is dynamic: RFC 2136 updates signed with a TSIG key generated at start (the key
Floorwatch's DNS failover uses) may change it. ``named`` runs in the foreground in its own
process group, as the current user: under root it stays root, because the component folder
(often a private pytest ``tmp_path``) need not be readable by the ``bind`` user, and nothing
here listens beyond 127.0.0.1. No rndc control channel is configured (``controls { };``).

Fault ``dns_wrong`` on ``gateway-dns`` changes the gateway record behind Floorwatch's back
to an address no service answers on; healing sets it back to the primary set.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from floorwatch.errors import SandboxError
from sandbox.component import Component
from sandbox.topology import (
    DNS_BACKUP_ADDRESSES,
    DNS_GATEWAY_NAME,
    DNS_PRIMARY_ADDRESSES,
    DNS_TSIG_ALGORITHM,
    DNS_TSIG_KEY_NAME,
    DNS_ZONE,
    HOST,
    Layout,
)

TARGET = "gateway-dns"
GATEWAY_TTL = 30
# Data only, like the primary and backup sets: nothing answers on this address.
WRONG_ADDRESSES = ("127.0.10.66",)
PAY_ADDRESS = "127.0.10.20"

NAMED = "named"
TSIG_KEYGEN = "tsig-keygen"
START_TIMEOUT = 8.0
STOP_TIMEOUT = 4.0
UPDATE_TIMEOUT = 3.0

_SECRET_RE = re.compile(r'secret\s+"([A-Za-z0-9+/=]+)"\s*;')


def zone_text(primary: Sequence[str] = DNS_PRIMARY_ADDRESSES) -> str:
    """The zone file named loads at start: SOA, NS, the gateway record and a few neighbours."""
    api = "\n".join(f"api {GATEWAY_TTL} IN A {address}" for address in primary)
    return (
        f"$ORIGIN {DNS_ZONE}\n"
        "$TTL 300\n"
        # serial refresh retry expire negative-TTL; a short negative TTL so a removed
        # record is noticed quickly.
        "@ IN SOA ns1 hostmaster 1 60 30 3600 30\n"
        "@ IN NS ns1\n"
        f"ns1 IN A {HOST}\n"
        f"{api}\n"
        "www IN CNAME api\n"
        f"pay IN A {PAY_ADDRESS}\n"
        'status IN TXT "floorwatch sandbox"\n'
    )


def _quoted(path: Path) -> str:
    """``path`` as a named.conf string; named has no escape for a double quote."""
    text = str(path)
    if '"' in text or "\n" in text:
        raise SandboxError(f"dns: path {text!r} cannot be written into named.conf")
    return f'"{text}"'


class SandboxDns(Component):
    """BIND 9 serving ``DNS_ZONE`` on 127.0.0.1:``layout.dns_port`` (UDP and TCP)."""

    name = "dns"

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self.dir = layout.component_dir(self.name)
        self.config_path = self.dir / "named.conf"
        self.key_path = self.dir / "tsig.key"
        self.secret_path = self.dir / "tsig.secret"
        self.zone_path = self.dir / "play.sandbox.test.zone"
        self.journal_path = self.dir / "play.sandbox.test.zone.jnl"
        self.log_path = self.dir / "named.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._secret: str | None = None
        self._faults: set[str] = set()
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Generate the key, write config and zone, start named, return once it answers."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self._secret = self._generate_key()
            self._write_files()
            with self.log_path.open("wb") as log:
                try:
                    self._proc = subprocess.Popen(
                        # -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker is
                        # plenty for a handful of queries and keeps the sandbox light.
                        [NAMED, "-g", "-4", "-n", "1", "-c", str(self.config_path)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise SandboxError(f"dns: cannot run {NAMED}: {exc}") from exc
            try:
                self._wait_ready(self._proc)
            except SandboxError:
                self._terminate()
                raise
            self._faults.clear()

    def stop(self) -> None:
        """Stop named and its process group; bounded, safe to call twice."""
        with self._lock:
            self._terminate()
            self._faults.clear()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            pgid = proc.pid  # start_new_session made named the leader of its own group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
        else:
            proc.wait()

    def _generate_key(self) -> str:
        try:
            out = subprocess.run(
                [TSIG_KEYGEN, "-a", DNS_TSIG_ALGORITHM, DNS_TSIG_KEY_NAME],
                capture_output=True,
                check=True,
                timeout=5,
                text=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxError(f"dns: {TSIG_KEYGEN} failed: {exc}") from exc
        match = _SECRET_RE.search(out)
        if match is None:
            raise SandboxError(f"dns: no secret in the output of {TSIG_KEYGEN}")
        _write_private(self.key_path, out)
        # Only the secret, no newline: the file a DnsZone block or a probe reads as is.
        _write_private(self.secret_path, match.group(1))
        return match.group(1)

    def _write_files(self) -> None:
        # A journal from an earlier run would replay old updates over the fresh zone.
        self.journal_path.unlink(missing_ok=True)
        self.zone_path.write_text(zone_text())
        d = self.dir
        zone = DNS_ZONE.rstrip(".")
        self.config_path.write_text(
            f"include {_quoted(self.key_path)};\n"
            "controls { };\n"
            "options {\n"
            f"  directory {_quoted(d)};\n"
            f"  pid-file {_quoted(d / 'named.pid')};\n"
            f"  session-keyfile {_quoted(d / 'session.key')};\n"
            f"  managed-keys-directory {_quoted(d)};\n"
            f"  dump-file {_quoted(d / 'named.dump')};\n"
            f"  statistics-file {_quoted(d / 'named.stats')};\n"
            f"  listen-on port {self.layout.dns_port} {{ {HOST}; }};\n"
            "  listen-on-v6 { none; };\n"
            "  recursion no;\n"
            "  allow-transfer { none; };\n"
            "  notify no;\n"
            "  dnssec-validation no;\n"
            "};\n"
            f'zone "{zone}" {{\n'
            "  type primary;\n"
            f"  file {_quoted(self.zone_path)};\n"
            f"  journal {_quoted(self.journal_path)};\n"
            f'  allow-update {{ key "{DNS_TSIG_KEY_NAME}"; }};\n'
            "};\n"
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Poll with real SOA queries (UDP, then TCP) until named answers, or fail."""
        query = dns.message.make_query(DNS_ZONE, dns.rdatatype.SOA)
        deadline = time.monotonic() + START_TIMEOUT
        last: str = "no answer yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(
                    f"dns: named exited with {proc.returncode} at start; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            try:
                answer = dns.query.udp(query, HOST, port=self.layout.dns_port, timeout=0.3)
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    dns.query.tcp(query, HOST, port=self.layout.dns_port, timeout=1.0)
                    return
                last = f"rcode {dns.rcode.to_text(answer.rcode())}"
            except (dns.exception.DNSException, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise SandboxError(
            f"dns: named did not answer on {HOST}:{self.layout.dns_port} within "
            f"{START_TIMEOUT:.0f} s ({last}); log {self.log_path}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- description -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The named process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def describe(self) -> dict[str, Any]:
        return {
            TARGET: {
                "kind": "dns",
                "server": HOST,
                "port": self.layout.dns_port,
                "zone": DNS_ZONE,
                "record": DNS_GATEWAY_NAME,
                "ttl": GATEWAY_TTL,
                "expected": list(DNS_PRIMARY_ADDRESSES),
                "backup": list(DNS_BACKUP_ADDRESSES),
                "tsig_key_name": DNS_TSIG_KEY_NAME,
                "tsig_algorithm": DNS_TSIG_ALGORITHM,
                "tsig_secret_file": str(self.secret_path),
                "pid": self.pid,
                "log": str(self.log_path),
            }
        }

    # -- faults ----------------------------------------------------------------------------

    def faults(self) -> dict[str, list[str]]:
        return {"dns_wrong": [TARGET]}

    def active_faults(self) -> dict[str, list[str]]:
        with self._lock:
            return {TARGET: sorted(self._faults)} if self._faults else {}

    def inject(self, fault: str, target: str) -> None:
        """Point the gateway record at a wrong address with a signed dynamic update."""
        self.check_fault(fault, target)
        with self._lock:
            self.replace_gateway(WRONG_ADDRESSES)
            self._faults.add(fault)

    def heal(self, target: str | None = None) -> None:
        """Set the gateway record back to the primary set if ``dns_wrong`` is in force."""
        if target is not None and target != TARGET:
            raise SandboxError(f"dns: unknown target {target!r} (known: {TARGET})")
        with self._lock:
            if "dns_wrong" in self._faults:
                self.replace_gateway(DNS_PRIMARY_ADDRESSES)
                self._faults.discard("dns_wrong")

    def replace_gateway(self, addresses: Sequence[str]) -> None:
        """Replace the gateway A record set by an RFC 2136 update signed with the zone key."""
        if self._secret is None or self.pid is None:
            raise SandboxError("dns: named is not running; start the component first")
        if not addresses:
            raise SandboxError("dns: refusing to replace the gateway record with no address")
        keyring = dns.tsigkeyring.from_text({DNS_TSIG_KEY_NAME: self._secret})
        update = dns.update.UpdateMessage(
            DNS_ZONE, keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256
        )
        update.replace(DNS_GATEWAY_NAME, GATEWAY_TTL, "A", *addresses)
        try:
            response = dns.query.tcp(
                update, HOST, port=self.layout.dns_port, timeout=UPDATE_TIMEOUT
            )
        except (dns.exception.DNSException, OSError) as exc:
            raise SandboxError(
                f"dns: update of {DNS_GATEWAY_NAME} on {HOST}:{self.layout.dns_port} "
                f"failed: {type(exc).__name__}: {exc}"
            ) from exc
        if response.rcode() != dns.rcode.NOERROR:
            raise SandboxError(
                f"dns: update of {DNS_GATEWAY_NAME} refused: {dns.rcode.to_text(response.rcode())}"
            )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 600), from creation on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
