"""The sandbox DNS against a real BIND 9 named on loopback, seen through dnspython."""

from __future__ import annotations

import base64
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from floorwatch.errors import SandboxError
from sandbox.dns import GATEWAY_TTL, WRONG_ADDRESSES, SandboxDns
from sandbox.topology import (
    DNS_BACKUP_ADDRESSES,
    DNS_GATEWAY_NAME,
    DNS_PRIMARY_ADDRESSES,
    DNS_TSIG_KEY_NAME,
    DNS_ZONE,
    HOST,
    Layout,
    free_base_port,
)
from tests.fixtures.sandbox import started

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxDns]:
    yield from started(SandboxDns(Layout(tmp_path_factory.mktemp("dns") / "sb", free_base_port())))


@pytest.fixture
def dns_server(sandbox_dns: SandboxDns) -> Iterator[SandboxDns]:
    """The shared named, with the gateway record back on the primary set after each test."""
    yield sandbox_dns
    sandbox_dns.heal()
    sandbox_dns.replace_gateway(DNS_PRIMARY_ADDRESSES)


def gateway_addresses(component: SandboxDns, *, tcp: bool = False) -> set[str]:
    """The A records a probe sees for the gateway name, as dnspython returns them."""
    info = component.describe()["gateway-dns"]
    query = dns.message.make_query(info["record"], dns.rdatatype.A)
    send = dns.query.tcp if tcp else dns.query.udp
    response = send(query, info["server"], port=info["port"], timeout=2)
    assert response.rcode() == dns.rcode.NOERROR
    rrset = response.find_rrset(
        response.answer, dns.name.from_text(DNS_GATEWAY_NAME), dns.rdataclass.IN, dns.rdatatype.A
    )
    assert rrset.ttl == GATEWAY_TTL
    return {rdata.address for rdata in rrset}


def signed_replace(
    component: SandboxDns, key_name: str, secret: str, addresses: tuple[str, ...]
) -> dns.message.Message:
    """Send the update Floorwatch's failover sends, signed with the given key."""
    info = component.describe()["gateway-dns"]
    keyring = dns.tsigkeyring.from_text({key_name: secret})
    update = dns.update.UpdateMessage(
        info["zone"], keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256
    )
    update.replace(info["record"], GATEWAY_TTL, "A", *addresses)
    return dns.query.tcp(update, info["server"], port=info["port"], timeout=2)


def read_secret(component: SandboxDns) -> str:
    return Path(component.describe()["gateway-dns"]["tsig_secret_file"]).read_text()


def test_gateway_query_answers_primary_set(dns_server: SandboxDns) -> None:
    """The gateway name resolves to the primary set over UDP and TCP."""
    assert gateway_addresses(dns_server) == set(DNS_PRIMARY_ADDRESSES)
    assert gateway_addresses(dns_server, tcp=True) == set(DNS_PRIMARY_ADDRESSES)


def test_zone_serves_neighbour_records(dns_server: SandboxDns) -> None:
    """www is a CNAME to the gateway and pay has its own address."""
    query = dns.message.make_query(f"www.{DNS_ZONE}", dns.rdatatype.CNAME)
    response = dns.query.udp(query, HOST, port=dns_server.layout.dns_port, timeout=2)
    assert [r.target.to_text() for r in response.answer[0]] == [DNS_GATEWAY_NAME]
    query = dns.message.make_query(f"pay.{DNS_ZONE}", dns.rdatatype.A)
    response = dns.query.udp(query, HOST, port=dns_server.layout.dns_port, timeout=2)
    assert response.answer
    assert response.answer[0].rdtype == dns.rdatatype.A


def test_signed_update_replaces_record_with_backup_set(dns_server: SandboxDns) -> None:
    """An update signed with the zone key swaps the gateway to the backup set within ms."""
    started = time.monotonic()
    response = signed_replace(
        dns_server, DNS_TSIG_KEY_NAME, read_secret(dns_server), DNS_BACKUP_ADDRESSES
    )
    elapsed = time.monotonic() - started
    assert response.rcode() == dns.rcode.NOERROR
    assert elapsed < 0.5
    assert gateway_addresses(dns_server) == set(DNS_BACKUP_ADDRESSES)


def test_update_signed_with_wrong_secret_is_refused(dns_server: SandboxDns) -> None:
    """An update signed with the right key name but a wrong secret is refused, record kept."""
    wrong = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(dns.tsig.PeerBadSignature):
        signed_replace(dns_server, DNS_TSIG_KEY_NAME, wrong, DNS_BACKUP_ADDRESSES)
    assert gateway_addresses(dns_server) == set(DNS_PRIMARY_ADDRESSES)


def test_update_signed_with_unknown_key_is_refused(dns_server: SandboxDns) -> None:
    """An update signed with a key named nowhere in named's config is refused, record kept."""
    with pytest.raises(dns.tsig.PeerBadKey):
        signed_replace(dns_server, "intruder.", read_secret(dns_server), WRONG_ADDRESSES)
    assert gateway_addresses(dns_server) == set(DNS_PRIMARY_ADDRESSES)


def test_dns_wrong_fault_points_gateway_away_until_healed(dns_server: SandboxDns) -> None:
    """dns_wrong makes the gateway resolve to a wrong address; heal restores the primary set."""
    dns_server.inject("dns_wrong", "gateway-dns")
    dns_server.inject("dns_wrong", "gateway-dns")  # twice is harmless
    assert gateway_addresses(dns_server) == set(WRONG_ADDRESSES)
    assert dns_server.active_faults() == {"gateway-dns": ["dns_wrong"]}
    dns_server.heal("gateway-dns")
    assert gateway_addresses(dns_server) == set(DNS_PRIMARY_ADDRESSES)
    assert dns_server.active_faults() == {}


def test_unknown_fault_or_target_is_rejected(dns_server: SandboxDns) -> None:
    """Injecting an unknown fault, or into an unknown target, raises a SandboxError."""
    with pytest.raises(SandboxError, match="unknown fault 'dns_slow'"):
        dns_server.inject("dns_slow", "gateway-dns")
    with pytest.raises(SandboxError, match="does not apply to 'payment-gateway'"):
        dns_server.inject("dns_wrong", "payment-gateway")
    with pytest.raises(SandboxError, match="unknown target 'payment-gateway'"):
        dns_server.heal("payment-gateway")
    assert gateway_addresses(dns_server) == set(DNS_PRIMARY_ADDRESSES)


def test_describe_points_at_a_private_secret_file(dns_server: SandboxDns) -> None:
    """describe() names a mode-600 file holding only the base64 secret, never the secret."""
    info = dns_server.describe()["gateway-dns"]
    secret_file = Path(info["tsig_secret_file"])
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text()
    assert len(base64.b64decode(secret, validate=True)) == 32
    assert secret not in repr(dns_server.describe())
    assert info["expected"] == list(DNS_PRIMARY_ADDRESSES)
    assert info["backup"] == list(DNS_BACKUP_ADDRESSES)
    assert info["zone"] == DNS_ZONE
    assert info["tsig_key_name"] == DNS_TSIG_KEY_NAME


def _port_bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def test_stop_leaves_no_named_and_frees_the_port(tmp_path: Path) -> None:
    """After stop() the named process is gone and the DNS port is free on UDP and TCP."""
    component = SandboxDns(Layout(tmp_path / "sb", free_base_port()))
    try:
        component.start()
        pid = component.describe()["gateway-dns"]["pid"]
        assert isinstance(pid, int)
        component.inject("dns_wrong", "gateway-dns")
    finally:
        component.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert component.describe()["gateway-dns"]["pid"] is None
    assert _port_bindable(component.layout.dns_port, socket.SOCK_DGRAM)
    assert _port_bindable(component.layout.dns_port, socket.SOCK_STREAM)
    component.stop()  # twice is harmless
