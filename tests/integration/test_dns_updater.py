"""DnsUpdater against the sandbox's real BIND 9 named: signed updates, direct questions and
the errors of a wrong key or an unreachable server."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from blocks import DnsZone
from floorwatch.errors import ConnectError, FloorwatchError
from sandbox.topology import DNS_BACKUP_ADDRESSES, DNS_GATEWAY_NAME, DNS_PRIMARY_ADDRESSES
from tasks.dns import DnsUpdater, same_answer

PRIMARY = list(DNS_PRIMARY_ADDRESSES)
BACKUP = list(DNS_BACKUP_ADDRESSES)


@pytest.fixture
def zone(sandbox_credentials: dict[str, Any]) -> DnsZone:
    block = sandbox_credentials["sandbox-dns"]
    assert isinstance(block, DnsZone)
    return block


@pytest.fixture
def updater(zone: DnsZone) -> Iterator[DnsUpdater]:
    """An updater on the sandbox zone; the gateway record is back on its primary set after."""
    dns = DnsUpdater(zone, name="gateway-dns")
    try:
        yield dns
    finally:
        dns.replace(DNS_GATEWAY_NAME, "A", PRIMARY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_replace_changes_the_whole_set_and_query_reads_it_back(updater: DnsUpdater) -> None:
    """One signed update replaces the record set; the authoritative server answers the new set."""
    assert updater.query(DNS_GATEWAY_NAME, "A") == PRIMARY
    updater.replace(DNS_GATEWAY_NAME, "A", BACKUP)
    assert updater.query(DNS_GATEWAY_NAME, "A") == BACKUP
    updater.replace(DNS_GATEWAY_NAME, "A", ["127.0.10.3", "127.0.10.2"], ttl=60)
    assert updater.query(DNS_GATEWAY_NAME, "A") == ["127.0.10.2", "127.0.10.3"]


def test_query_of_a_missing_name_is_empty(updater: DnsUpdater) -> None:
    """A name the zone does not hold answers no values (NXDOMAIN), not an error."""
    assert updater.query("nothing-here.play.sandbox.test.", "A") == []
    assert updater.query("api", "AAAA") == []  # relative to the zone; exists, other type


def test_wrong_tsig_secret_is_refused_and_the_record_is_unchanged(
    updater: DnsUpdater, zone: DnsZone,
) -> None:
    """An update signed with a wrong secret fails with ConnectError (never quoting the secret)
    and the record keeps its answer."""
    wrong = base64.b64encode(b"not the zone key, not at all!!!").decode()
    forged = DnsUpdater(zone.model_copy(update={"tsig_secret": SecretStr(wrong)}),
                        name="gateway-dns")
    with pytest.raises(ConnectError, match="rejected the TSIG signature") as caught:
        forged.replace(DNS_GATEWAY_NAME, "A", BACKUP)
    assert wrong not in str(caught.value)
    assert zone.tsig_secret.get_secret_value() not in str(caught.value)
    assert updater.query(DNS_GATEWAY_NAME, "A") == PRIMARY


def test_unknown_tsig_key_is_refused(updater: DnsUpdater, zone: DnsZone) -> None:
    """A key name the server does not know fails with ConnectError naming the key."""
    stranger = DnsUpdater(zone.model_copy(update={"tsig_key_name": "stranger."}))
    with pytest.raises(ConnectError, match="does not know TSIG key stranger"):
        stranger.replace(DNS_GATEWAY_NAME, "A", BACKUP)
    assert updater.query(DNS_GATEWAY_NAME, "A") == PRIMARY


def test_unreachable_server_is_a_connect_error(zone: DnsZone) -> None:
    """Nothing listening on the server's port: both operations fail with ConnectError."""
    port = _free_port()
    gone = DnsUpdater(zone.model_copy(update={"port": port, "timeout": 2.0}), name="dns")
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}.*refused"):
        gone.replace(DNS_GATEWAY_NAME, "A", BACKUP)
    with pytest.raises(ConnectError, match="refused"):
        gone.query(DNS_GATEWAY_NAME, "A")


@pytest.mark.parametrize(
    ("record", "values", "message"),
    [
        (DNS_GATEWAY_NAME, [], "no value"),
        (DNS_GATEWAY_NAME, ["not-an-address"], "not a valid A value"),
        ("api.elsewhere.test.", ["127.0.10.2"], "outside zone"),
    ],
)
def test_bad_input_fails_before_anything_is_sent(
    updater: DnsUpdater, record: str, values: list[str], message: str,
) -> None:
    """An empty set, a bad value or a name outside the zone is refused with a clear message."""
    with pytest.raises(FloorwatchError, match=message):
        updater.replace(record, "A", values)
    assert updater.query(DNS_GATEWAY_NAME, "A") == PRIMARY


def test_same_answer_compares_normalized_sets() -> None:
    """Answer sets compare regardless of order and spelling of equal values."""
    assert same_answer("AAAA", ["0::1", "2001:db8::2"], ["2001:DB8:0::2", "::1"])
    assert same_answer("CNAME", ["API.play.test."], ["api.play.test"])
    assert not same_answer("A", ["127.0.10.1"], ["127.0.10.1", "127.0.10.2"])
