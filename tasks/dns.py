"""The DNS adapter: RFC 2136 dynamic updates signed with TSIG, and questions asked of the
authoritative server itself (never a resolver, whose cache would hide a change).

    updater = DnsUpdater(zone_block, name="gateway-dns")
    updater.replace("api.play.example.", "A", ["10.0.0.2"])   # one signed update over TCP
    updater.query("api.play.example.", "A")                    # -> ["10.0.0.2"]

Blocking (dnspython's sync API): runbook steps are sync functions. Every call is bounded by
the block's timeout. Library errors are translated here, and no message ever holds the
TSIG secret::

    refused connection, unreachable server (OSError)         -> ConnectError
    the server refused the key or signature (BADKEY, BADSIG) -> ConnectError
    rcode REFUSED or NOTAUTH (not allowed, not authoritative) -> ConnectError
    any other error rcode (SERVFAIL, NOTZONE, YXRRSET...)     -> CommandFailed
    no answer in time                                         -> ProbeTimeout
    an answer that cannot be read or whose signature is bad   -> ProtocolError
    bad input (empty set, name outside the zone, bad value)   -> FloorwatchError
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Sequence

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.tsig
import dns.update

from blocks.dns import DnsZone
from floorwatch.errors import (
    CommandFailed,
    ConnectError,
    FloorwatchError,
    ProbeTimeout,
    ProtocolError,
)

__all__ = ["DEFAULT_TTL", "DnsUpdater", "normalized", "same_answer"]

DEFAULT_TTL = 30  # short, so a failover reaches clients within half a minute
MAX_TTL = 2**31 - 1  # RFC 2181


def normalized(rdtype: str, values: Iterable[str]) -> frozenset[str]:
    """The values in a form two equal answers share (``::1`` for ``0::1``, names lowercased
    without the final dot), so answer sets compare as sets."""
    kind = rdtype.upper()
    out: set[str] = set()
    for value in values:
        text = value.strip()
        if kind in ("A", "AAAA"):
            with contextlib.suppress(ValueError):
                text = str(ipaddress.ip_address(text))
        elif kind != "TXT":
            text = " ".join(part.rstrip(".").lower() for part in text.split())
        out.add(text)
    return frozenset(out)


def same_answer(rdtype: str, left: Iterable[str], right: Iterable[str]) -> bool:
    """Whether two answer sets hold the same records."""
    return normalized(rdtype, left) == normalized(rdtype, right)


def _display(rdata: dns.rdata.Rdata) -> str:
    """A record value as an inventory writes it: TXT strings unquoted and joined."""
    if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
        return b"".join(rdata.strings).decode("utf-8", "replace")
    return str(rdata.to_text())


class DnsUpdater:
    """Changes and reads records of one zone on its authoritative server.

    ``name`` names the component in errors (default: the zone). Writes are RFC 2136 updates
    signed with the block's TSIG key and sent over TCP; reads ask the same server directly.
    """

    def __init__(self, zone_block: DnsZone, name: str = "") -> None:
        self.block = zone_block
        self.name = name or zone_block.zone
        self.zone = zone_block.zone_name()

    @property
    def server(self) -> str:
        """``address:port`` of the authoritative server."""
        return f"{self.block.server}:{self.block.port}"

    def __repr__(self) -> str:
        return f"DnsUpdater(zone={self.block.zone!r}, server={self.server}, name={self.name!r})"

    # -- input -----------------------------------------------------------------------------

    def record_name(self, record: str) -> dns.name.Name:
        """``record`` as an absolute name inside the zone (relative names are taken as
        relative to the zone); FloorwatchError when it lies outside."""
        try:
            name = dns.name.from_text(record, origin=self.zone)
        except dns.exception.DNSException as exc:
            raise FloorwatchError(f"{self.name}: {record!r} is not a DNS name: {exc}") from exc
        if not name.is_subdomain(self.zone):
            raise FloorwatchError(
                f"{self.name}: {name} is outside zone {self.zone}; this key updates only it"
            )
        return name

    @staticmethod
    def record_type(rdtype: str) -> dns.rdatatype.RdataType:
        """The record type, e.g. ``A``; FloorwatchError for an unknown one."""
        try:
            return dns.rdatatype.from_text(rdtype)
        except dns.exception.DNSException as exc:
            raise FloorwatchError(f"{rdtype!r} is not a DNS record type") from exc

    def rdatas(self, rdtype: str, values: Sequence[str]) -> list[dns.rdata.Rdata]:
        """Parse ``values`` as records of ``rdtype`` before anything is sent, so a bad value
        fails alone instead of halfway through a change."""
        kind = self.record_type(rdtype)
        if isinstance(values, str):
            raise FloorwatchError(f"{self.name}: values must be a list of strings, not a string")
        if not values:
            raise FloorwatchError(
                f"{self.name}: refusing to replace a {rdtype} record set with no value"
            )
        parsed = []
        for value in values:
            # An inventory writes TXT unquoted; the zone-file syntax would split it on blanks.
            text = value
            if kind == dns.rdatatype.TXT and not value.startswith('"'):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            try:
                parsed.append(dns.rdata.from_text(dns.rdataclass.IN, kind, text))
            except (dns.exception.DNSException, ValueError) as exc:
                raise FloorwatchError(
                    f"{self.name}: {value!r} is not a valid {rdtype} value: {exc}"
                ) from exc
        return parsed

    # -- the two operations ----------------------------------------------------------------

    def replace(
        self, record: str, rdtype: str, values: Sequence[str], ttl: int = DEFAULT_TTL
    ) -> None:
        """Replace the whole ``record``/``rdtype`` set by ``values`` in one signed update
        (delete the set and add the new one, applied atomically by the server)."""
        name = self.record_name(record)
        rdatas = self.rdatas(rdtype, values)
        if not 0 <= ttl <= MAX_TTL:
            raise FloorwatchError(f"{self.name}: TTL {ttl} is out of range 0..{MAX_TTL}")
        update = dns.update.UpdateMessage(self.zone, keyring=self.block.keyring())
        update.replace(name, ttl, *rdatas)
        what = f"update of {name} {rdtype.upper()} at {self.server}"
        response = self._send(update, what)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.REFUSED:
            raise ConnectError(
                self.name, f"{what} refused (REFUSED): key {self.block.tsig_key_name} may not "
                f"update zone {self.zone}",
            )
        if rcode == dns.rcode.NOTAUTH:
            raise ConnectError(
                self.name, f"{what} refused (NOTAUTH): the server is not authoritative for "
                f"{self.zone} or did not accept key {self.block.tsig_key_name}",
            )
        raise CommandFailed(self.name, f"{what} failed with rcode {text}")

    def query(self, record: str, rdtype: str) -> list[str]:
        """The record's values as the authoritative server answers now, sorted; an empty
        list when the name or the type does not exist."""
        name = self.record_name(record)
        kind = self.record_type(rdtype)
        what = f"query for {name} {rdtype.upper()} at {self.server}"
        response = self._send(dns.message.make_query(name, kind), what)
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return []
        if rcode == dns.rcode.REFUSED:
            raise ConnectError(self.name, f"{what} refused (REFUSED)")
        if rcode != dns.rcode.NOERROR:
            raise CommandFailed(self.name, f"{what} failed with rcode {dns.rcode.to_text(rcode)}")
        if not isinstance(response, dns.message.QueryMessage):
            raise ProtocolError(self.name, f"{what}: the answer is not a query response")
        try:
            # an in-zone CNAME is followed, as the dns probe does
            rrset = response.resolve_chaining().answer
        except dns.exception.DNSException as exc:
            raise ProtocolError(self.name, f"{what}: unusable answer ({exc})") from exc
        return sorted(_display(rdata) for rdata in rrset) if rrset is not None else []

    def _send(self, message: dns.message.Message, what: str) -> dns.message.Message:
        """One exchange over TCP, bounded by the block's timeout, errors translated."""
        try:
            return dns.query.tcp(
                message, self.block.server, port=self.block.port, timeout=self.block.timeout
            )
        except dns.exception.Timeout as exc:
            raise ProbeTimeout(
                self.name, f"{what}: no answer within {self.block.timeout:g} s"
            ) from exc
        except dns.tsig.PeerBadKey as exc:
            raise ConnectError(
                self.name, f"{what} refused: the server does not know TSIG key "
                f"{self.block.tsig_key_name} ({self.block.tsig_algorithm}) (BADKEY)",
            ) from exc
        except dns.tsig.PeerError as exc:  # BADSIG, BADTIME, BADTRUNC
            raise ConnectError(
                self.name, f"{what} refused: the server rejected the TSIG signature of key "
                f"{self.block.tsig_key_name} ({type(exc).__name__}); check the secret and the "
                "clock",
            ) from exc
        except ConnectionRefusedError as exc:
            raise ConnectError(self.name, f"{what}: connection refused") from exc
        except EOFError as exc:  # dnspython's read of a connection closed mid-answer
            raise ProtocolError(self.name, f"{what}: connection closed before the answer") from exc
        except OSError as exc:
            raise ConnectError(
                self.name, f"{what}: cannot reach the server: {exc.strerror or exc}"
            ) from exc
        except dns.exception.DNSException as exc:  # a bad answer or a bad answer signature
            raise ProtocolError(
                self.name, f"{what}: unusable answer ({type(exc).__name__}: {exc})"
            ) from exc
