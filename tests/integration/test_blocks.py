"""Floorwatch block types: registration, save/load, secret masking and validation."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import dns.message
import dns.tsig
import dns.update
import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient
from pydantic import SecretStr, ValidationError

import blocks
from blocks import (
    DnsZone,
    SerialLine,
    SlackChat,
    SmsGateway,
    SmtpServer,
    SshHost,
    StoreUrl,
    TelegramBot,
)

pytestmark = pytest.mark.integration

ALL_BLOCK_TYPES: list[type[Block]] = [
    DnsZone,
    SerialLine,
    SlackChat,
    SmsGateway,
    SmtpServer,
    SshHost,
    StoreUrl,
    TelegramBot,
]

TSIG_SECRET = base64.b64encode(b"floorwatch-tsig-secret-0123456789").decode()
REGISTER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Real OpenSSH key pairs by type: {type: (private key text, public key line)}."""
    keydir = tmp_path_factory.mktemp("ssh-keys")
    keys: dict[str, tuple[str, str]] = {}
    for key_type, extra in (("ed25519", []), ("rsa", ["-b", "2048"]), ("ecdsa", ["-b", "256"])):
        path = keydir / f"id_{key_type}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", key_type, *extra, "-N", "", "-C", "ops@floor", "-f", path],
            check=True,
            timeout=30,
        )
        keys[key_type] = (path.read_text(), (keydir / f"id_{key_type}.pub").read_text().strip())
    return keys


def sample_blocks(keys: dict[str, tuple[str, str]]) -> list[tuple[Block, list[str]]]:
    """One valid instance of every block type, with the secret strings it holds."""
    private_key, host_key = keys["ed25519"]
    return [
        (
            SshHost(
                host="127.0.0.1",
                port=2222,
                username="ops",
                private_key=private_key,
                private_key_passphrase="pass-phrase-4711",
                host_key=host_key,
            ),
            [private_key.strip(), "pass-phrase-4711"],
        ),
        (SerialLine(device="/dev/ttyUSB0", baud=19200, parity="E", protocol="cctalk"), []),
        (
            DnsZone(
                server="127.0.0.1",
                port=5353,
                zone="play.test",
                tsig_key_name="floorwatch-key",
                tsig_secret=TSIG_SECRET,
            ),
            [TSIG_SECRET],
        ),
        (
            SlackChat(bot_token="xoxb-1111-secret-token", channel="#floor-ops"),
            ["xoxb-1111-secret-token"],
        ),
        (
            SmtpServer(
                host="mail.test",
                username="ops",
                password="smtp-pass-0815",
                from_address="floorwatch@play.test",
            ),
            ["smtp-pass-0815"],
        ),
        (
            TelegramBot(bot_token="123456:telegram-secret-token", chat_id="-1001234567890"),
            ["123456:telegram-secret-token"],
        ),
        (
            SmsGateway(base_url="https://sms.test/api", api_key="sms-key-2024", sender="Floor"),
            ["sms-key-2024"],
        ),
        (
            StoreUrl(url="postgresql+psycopg://floor:store-pass-99@127.0.0.1:5432/floorwatch"),
            ["store-pass-99"],
        ),
    ]


def revealed(block: Block) -> dict[str, Any]:
    """The block's fields with every secret in clear, for comparing two instances."""
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in ((name, getattr(block, name)) for name in type(block).model_fields)
    }


def unique_name() -> str:
    """A fresh block document name (lower case, dashes)."""
    return f"test-{uuid.uuid4().hex[:12]}"


def ssh_fields(keys: dict[str, tuple[str, str]], **overrides: Any) -> dict[str, Any]:
    """Valid SshHost fields with some replaced."""
    private_key, host_key = keys["ed25519"]
    fields: dict[str, Any] = {
        "host": "10.0.0.5",
        "username": "ops",
        "private_key": private_key,
        "host_key": host_key,
    }
    return {**fields, **overrides}


def dns_fields(**overrides: Any) -> dict[str, Any]:
    """Valid DnsZone fields with some replaced."""
    fields: dict[str, Any] = {
        "server": "127.0.0.1",
        "zone": "play.test",
        "tsig_key_name": "floorwatch-key",
        "tsig_secret": TSIG_SECRET,
    }
    return {**fields, **overrides}


# -- registration and storage (needs the Prefect harness) ---------------------------------


async def test_block_register_cli_registers_every_block_type(
    prefect_harness: str, prefect_client: PrefectClient, tmp_path: Path
) -> None:
    """`prefect block register -m blocks` registers all eight block types with the API."""
    assert sorted(blocks.__all__) == sorted(cls.__name__ for cls in ALL_BLOCK_TYPES)
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_harness,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "DO_NOT_TRACK": "1",
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=REGISTER_TIMEOUT_S,
        check=False,
    )

    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert f"Successfully registered {len(ALL_BLOCK_TYPES)} blocks" in proc.stdout
    for cls in ALL_BLOCK_TYPES:
        assert cls.get_block_type_name() in proc.stdout
    registered = {bt.slug: bt for bt in await prefect_client.read_block_types()}
    for cls in ALL_BLOCK_TYPES:
        block_type = registered[cls.get_block_type_slug()]
        assert block_type.description == cls.get_description()
        schema = await prefect_client.get_most_recent_block_schema_for_block_type(block_type.id)
        assert schema is not None
        assert schema.checksum == cls._calculate_schema_checksum()


async def test_block_schemas_mark_secret_fields(prefect_client: PrefectClient) -> None:
    """The server knows which fields are secret, so the UI masks them."""
    expected = {
        SshHost: {"private_key", "private_key_passphrase"},
        DnsZone: {"tsig_secret"},
        SlackChat: {"bot_token"},
        SmtpServer: {"password"},
        TelegramBot: {"bot_token"},
        SmsGateway: {"api_key"},
        StoreUrl: {"url"},
        SerialLine: set(),
    }
    for cls, secret_fields in expected.items():
        await cls.aregister_type_and_schema(client=prefect_client)
        block_type = await prefect_client.read_block_type_by_slug(cls.get_block_type_slug())
        schema = await prefect_client.get_most_recent_block_schema_for_block_type(block_type.id)
        assert schema is not None
        assert set(schema.fields["secret_fields"]) == secret_fields, cls.__name__


@pytest.mark.parametrize("index", range(len(ALL_BLOCK_TYPES)))
async def test_block_saves_and_loads_with_secrets_intact(
    prefect_client: PrefectClient, ssh_keys: dict[str, tuple[str, str]], index: int
) -> None:
    """A saved block loads back equal (by class or by slug), its secrets readable yet masked."""
    block, secrets = sample_blocks(ssh_keys)[index]
    name = unique_name()

    await block.asave(name)
    loaded = await type(block).aload(name)
    by_slug = await Block.aload(f"{type(block).get_block_type_slug()}/{name}")

    assert type(loaded) is type(block)
    assert type(by_slug) is type(block)
    assert revealed(loaded) == revealed(block) == revealed(by_slug)
    stored = await prefect_client.read_block_document_by_name(
        name, type(block).get_block_type_slug(), include_secrets=False
    )
    in_clear = "\n".join(str(value) for value in revealed(loaded).values())
    for secret in secrets:
        assert secret in in_clear
        for text in (repr(loaded), str(loaded), loaded.model_dump_json(), str(stored.data)):
            assert secret not in text


async def test_saving_under_a_taken_name_is_refused(prefect_harness: str) -> None:
    """Saving a second block under an existing name fails unless overwrite is asked for."""
    name = unique_name()
    await SerialLine(device="/dev/ttyS0", protocol="console").asave(name)

    with pytest.raises(ValueError, match="already in use"):
        await SerialLine(device="/dev/ttyS1", protocol="console").asave(name)
    await SerialLine(device="/dev/ttyS1", protocol="console").asave(name, overwrite=True)

    assert (await SerialLine.aload(name)).device == "/dev/ttyS1"


# -- masking, validation and helpers (no server needed) ------------------------------------


@pytest.mark.parametrize("index", range(len(ALL_BLOCK_TYPES)))
def test_secrets_are_masked_in_repr_str_and_json(
    ssh_keys: dict[str, tuple[str, str]], index: int
) -> None:
    """No secret appears in a block's repr, str, JSON dump or JSON-mode dict."""
    block, secrets = sample_blocks(ssh_keys)[index]
    for secret in secrets:
        for text in (
            repr(block),
            str(block),
            block.model_dump_json(),
            str(block.model_dump(mode="json")),
        ):
            assert secret not in text


def test_store_url_gives_clear_url_and_masked_display(
    ssh_keys: dict[str, tuple[str, str]],
) -> None:
    """StoreUrl hands out the full URL for engines and a masked one for logs."""
    store = StoreUrl(url=" postgresql+psycopg://floor:store-pass-99@127.0.0.1:5432/floorwatch ")

    assert store.get_url() == "postgresql+psycopg://floor:store-pass-99@127.0.0.1:5432/floorwatch"
    assert store.display_url() == "postgresql+psycopg://floor:***@127.0.0.1:5432/floorwatch"


def test_slack_client_uses_token_and_base_url() -> None:
    """SlackChat builds a WebClient with its token and a slash-terminated base URL."""
    chat = SlackChat(bot_token="xoxb-2", channel="C123", base_url="http://127.0.0.1:9/api")

    client = chat.get_client()

    assert client.token == "xoxb-2"
    assert client.base_url == "http://127.0.0.1:9/api/"


@pytest.mark.parametrize(
    ("cls", "fields", "loc", "message"),
    [
        (SmtpServer, {"host": "mail.test", "port": 0, "from_address": "a@b.test"}, "port", "1"),
        (SmtpServer, {"host": "mail.test", "port": 65536, "from_address": "a@b.test"}, "port", ""),
        (SmtpServer, {"host": " ", "from_address": "a@b.test"}, "host", "must not be empty"),
        (
            SmtpServer,
            {"host": "mail.test", "from_address": "a@b.test", "use_ssl": True},
            None,
            "starttls and use_ssl are exclusive",
        ),
        (SmtpServer, {"host": "m", "from_address": "nobody"}, "from_address", "not an address"),
        (DnsZone, dns_fields(port=70000), "port", "less than or equal to 65535"),
        (DnsZone, dns_fields(server="ns1.play.test"), "server", "must be an IP address"),
        (DnsZone, dns_fields(tsig_secret="not base64!!"), "tsig_secret", "not valid base64"),
        (DnsZone, dns_fields(tsig_secret=""), "tsig_secret", "must not be empty"),
        (SerialLine, {"device": "/dev/ttyS0", "protocol": "modbus"}, "protocol", "console"),
        (SerialLine, {"device": "/dev/ttyS0", "protocol": "console", "parity": "X"}, "parity", ""),
        (
            SerialLine,
            {"device": "/dev/ttyS0", "protocol": "console", "stopbits": 3},
            "stopbits",
            "1, 1.5 or 2",
        ),
        (SlackChat, {"bot_token": "x", "channel": "c", "base_url": "ftp://x"}, "base_url", "http"),
        (TelegramBot, {"bot_token": "1:a", "chat_id": "ops room"}, "chat_id", "neither a number"),
        (SmsGateway, {"base_url": "sms.test", "api_key": "k", "sender": "F"}, "base_url", "http"),
        (StoreUrl, {"url": "not a url"}, "url", "not a SQLAlchemy URL"),
        (SerialLine, {"device": "/dev/ttyS0", "protocol": "console", "baudrate": 9}, None, "baud"),
    ],
)
def test_invalid_input_is_refused_naming_the_field(
    cls: type[Block], fields: dict[str, Any], loc: str | None, message: str
) -> None:
    """Bad ports, hosts, URLs, secrets, literals and unknown fields raise a ValidationError."""
    with pytest.raises(ValidationError) as exc_info:
        cls(**fields)

    errors = exc_info.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == ((loc,) if loc else ())
    assert message in str(exc_info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 0}, "greater than or equal to 1"),
        ({"host": ""}, "host name must not be empty"),
        ({"host": "a b"}, "must not contain blanks"),
        ({"host_key": "garbage"}, "is not '<type> <base64>'"),
        ({"host_key": "ssh-dss AAAAB3NzaC1kc3M="}, "host key type 'ssh-dss' is not one of"),
        ({"host_key": "ssh-ed25519 AAAA$$$$"}, "not valid base64"),
        ({"host_key": "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB"}, "is for 'ssh-rsa'"),
        ({"private_key": "just-a-password"}, "not PEM/OpenSSH text"),
        ({"prot": 2222}, "unknown field(s) prot for SshHost"),
    ],
)
def test_invalid_ssh_host_is_refused_with_clear_error(
    ssh_keys: dict[str, tuple[str, str]], overrides: dict[str, Any], message: str
) -> None:
    """A bad port, host, host key line, private key or unknown field names what is wrong."""
    with pytest.raises(ValidationError) as exc_info:
        SshHost(**ssh_fields(ssh_keys, **overrides))

    assert message in str(exc_info.value)


def test_validation_errors_never_echo_secrets(ssh_keys: dict[str, tuple[str, str]]) -> None:
    """A refused secret is described, never quoted, in the error."""
    with pytest.raises(ValidationError) as dns_error:
        DnsZone(**dns_fields(tsig_secret="hunter2-not-base64!"))
    with pytest.raises(ValidationError) as ssh_error:
        SshHost(**ssh_fields(ssh_keys, private_key="hunter2-plain-password"))
    with pytest.raises(ValidationError) as store_error:
        StoreUrl(url="hunter2 postgres://u:pw")

    for error in (dns_error, ssh_error, store_error):
        assert "hunter2" not in str(error.value)


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "ecdsa"])
def test_known_host_line_is_found_by_openssh(
    ssh_keys: dict[str, tuple[str, str]], tmp_path: Path, key_type: str
) -> None:
    """OpenSSH's ssh-keygen -F finds the host under the line known_host_line writes."""
    private_key, host_key = ssh_keys[key_type]
    host = SshHost(
        host="127.0.0.1", port=2222, username="ops", private_key=private_key, host_key=host_key
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(host.known_host_line() + "\n")

    def lookup(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh-keygen", "-F", name, "-f", str(known_hosts)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    found = lookup("[127.0.0.1]:2222")
    assert found.returncode == 0, found.stderr
    assert host_key.split()[1] in found.stdout
    assert lookup("127.0.0.1").returncode == 1
    assert lookup("[127.0.0.1]:2223").returncode == 1


def test_known_host_line_uses_bare_host_on_port_22(ssh_keys: dict[str, tuple[str, str]]) -> None:
    """On port 22 the line is "host type base64", the key comment dropped."""
    _, host_key = ssh_keys["ed25519"]
    key_type, blob, comment = host_key.split()
    host = SshHost(**ssh_fields(ssh_keys, host="gw.play.test"))

    assert comment == "ops@floor"
    assert host.known_host_line() == f"gw.play.test {key_type} {blob}"
    assert host.host_key_type == "ssh-ed25519"


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sha512", "hmac-sha1"])
def test_dns_keyring_signs_an_update_that_verifies(algorithm: str) -> None:
    """An update signed with DnsZone.keyring verifies with it and fails with another secret."""
    zone = DnsZone(**dns_fields(tsig_algorithm=algorithm))
    update = dns.update.UpdateMessage(zone.zone_name(), keyring=zone.keyring())
    update.replace("lobby", 60, "A", "10.0.0.7")

    wire = update.to_wire()

    parsed = dns.message.from_wire(wire, keyring=zone.keyring())
    assert parsed.had_tsig
    assert parsed.keyname == dns.name.from_text("floorwatch-key")
    other = DnsZone(**dns_fields(tsig_algorithm=algorithm, tsig_secret="b3RoZXItc2VjcmV0"))
    with pytest.raises(dns.tsig.BadSignature):
        dns.message.from_wire(wire, keyring=other.keyring())


def test_dns_keyring_repr_hides_secret() -> None:
    """Printing the keyring shows the key name and algorithm, not the secret."""
    keyring = DnsZone(**dns_fields()).keyring()

    assert "floorwatch-key" in repr(keyring)
    assert TSIG_SECRET not in repr(keyring)
    assert TSIG_SECRET not in str(keyring)
