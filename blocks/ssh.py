"""SSH connection settings with a pinned host key."""

from __future__ import annotations

import base64
import binascii
import struct
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from blocks._base import FloorwatchBlock, HostName, NonBlank, Port, Seconds

# Key types OpenSSH writes in known_hosts and *.pub files.
HOST_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def parse_host_key(line: str) -> tuple[str, str]:
    """Split a public key line "<type> <base64> [comment]" into (type, base64), or raise."""
    fields = line.split()
    if len(fields) < 2:
        raise ValueError(
            f"host key {line[:40]!r} is not '<type> <base64>' (for example 'ssh-ed25519 AAAA...')"
        )
    key_type, blob_text = fields[0], fields[1]
    if key_type not in HOST_KEY_TYPES:
        raise ValueError(
            f"host key type {key_type!r} is not one of {', '.join(sorted(HOST_KEY_TYPES))}"
        )
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"host key data for {key_type} is not valid base64: {exc}") from exc
    # The SSH wire format starts with the length-prefixed key type: a key pasted under
    # the wrong type (or truncated) is caught here rather than at connect time.
    if len(blob) < 4:
        raise ValueError(f"host key data for {key_type} is too short")
    (name_len,) = struct.unpack(">I", blob[:4])
    embedded = blob[4 : 4 + name_len].decode("ascii", errors="replace")
    if embedded != key_type:
        raise ValueError(f"host key data is for {embedded!r}, but the line says {key_type!r}")
    return key_type, blob_text


class SshHost(FloorwatchBlock):
    """An SSH server reached with a private key, trusted only under its pinned host key."""

    _block_type_name: ClassVar[str] = "SSH Host"
    _block_type_slug: ClassVar[str] = "ssh-host"

    host: HostName = Field(description="Host name or IP address.")
    port: Port = Field(default=22, description="TCP port of sshd.")
    username: NonBlank = Field(description="Login user.")
    private_key: SecretStr = Field(description="Private key, PEM or OpenSSH text.")
    private_key_passphrase: SecretStr | None = Field(
        default=None, description="Passphrase of the private key, if it is encrypted."
    )
    host_key: str = Field(
        description="Pinned public host key line, e.g. 'ssh-ed25519 AAAA...'; required, "
        "unknown keys are never accepted."
    )
    connect_timeout: Seconds = Field(default=10, description="Seconds to connect and log in.")
    service_command: NonBlank = Field(
        default="systemctl",
        description="The service manager: '<command> status NAME' exits 0 when the service "
        "is active and 3 when it is not, as systemctl does.",
    )
    disk_command: NonBlank = Field(
        default="df -P", description="Prints disk usage per mount in 'df -P' format."
    )

    @field_validator("private_key")
    @classmethod
    def _check_private_key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        # Names the expected shape only: the key itself must never appear in an error.
        if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
            raise ValueError(
                "private key is not PEM/OpenSSH text (expected '-----BEGIN ... PRIVATE KEY-----')"
            )
        return value

    @field_validator("host_key")
    @classmethod
    def _check_host_key(cls, value: str) -> str:
        key_type, blob = parse_host_key(value)
        return f"{key_type} {blob}"

    @property
    def host_key_type(self) -> str:
        """The pinned key's type, e.g. "ssh-ed25519"."""
        return self.host_key.split()[0]

    def known_host_line(self) -> str:
        """The known_hosts line OpenSSH writes for this host ("[host]:port" off port 22)."""
        where = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{where} {self.host_key}"
