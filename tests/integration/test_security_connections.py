"""Connections refuse impostors: an SSH server whose host key is not the pinned one (a
changed key, or another server answering at the address), and DNS updates signed with a
wrong TSIG key, against the sandbox's real sshd and named."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import SecretStr

from blocks import DnsZone, SshHost
from floorwatch.errors import ConnectError, HostKeyMismatch
from sandbox.topology import DNS_BACKUP_ADDRESSES, DNS_GATEWAY_NAME
from tasks.dns import DnsUpdater
from tasks.ssh import RemoteShell

pytestmark = pytest.mark.integration

PRIMARY = "app-primary"
STANDBY = "app-standby"


def fresh_host_key() -> str:
    """A public host key line no sandbox server has."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@pytest.mark.parametrize("impostor", ["changed_key", "other_server"])
def test_a_changed_ssh_host_key_is_refused_before_login(
    sandbox_credentials: dict[str, Any], impostor: str
) -> None:
    """A pinned key the server no longer has, or another server (its own real key) answering
    at the address, raises HostKeyMismatch naming both fingerprints; nothing runs."""
    block: SshHost = sandbox_credentials[f"sandbox-{PRIMARY}"]
    with RemoteShell(block, name=PRIMARY) as genuine:  # the pinned key is right as it is
        assert genuine.run("echo ok", timeout=5).stdout == "ok\n"
    if impostor == "changed_key":
        shell = RemoteShell(block.model_copy(update={"host_key": fresh_host_key()}),
                            name=PRIMARY)
    else:
        standby: SshHost = sandbox_credentials[f"sandbox-{STANDBY}"]
        shell = RemoteShell(block, name=PRIMARY, address=standby.host, port=standby.port)
    with pytest.raises(HostKeyMismatch, match="host key mismatch") as caught:
        shell.connect(timeout=5)
    message = str(caught.value)
    assert message.count("SHA256:") == 2  # presented and pinned
    assert block.host_key.split()[1] not in message  # fingerprints, never key material
    with pytest.raises(ConnectError, match="not open"):
        shell.run("true", timeout=1)


@pytest.mark.parametrize(
    "change",
    [
        {"tsig_secret": SecretStr(base64.b64encode(b"an attacker's guess at the key!!").decode())},
        {"tsig_key_name": "stranger."},
    ],
    ids=["wrong_secret", "unknown_key_name"],
)
def test_a_dns_update_with_a_wrong_tsig_key_is_refused(
    sandbox_credentials: dict[str, Any], change: dict[str, Any]
) -> None:
    """named refuses an update signed with a wrong secret or an unknown key; the record keeps
    its answer and the error quotes no secret."""
    zone: DnsZone = sandbox_credentials["sandbox-dns"]
    genuine = DnsUpdater(zone, name="gateway-dns")
    before = genuine.query(DNS_GATEWAY_NAME, "A")
    forged = DnsUpdater(zone.model_copy(update=change), name="gateway-dns")
    with pytest.raises(ConnectError, match="TSIG") as caught:
        forged.replace(DNS_GATEWAY_NAME, "A", list(DNS_BACKUP_ADDRESSES))
    assert zone.tsig_secret.get_secret_value() not in str(caught.value)
    assert forged.block.tsig_secret.get_secret_value() not in str(caught.value)
    assert genuine.query(DNS_GATEWAY_NAME, "A") == before
