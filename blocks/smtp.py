"""Outgoing mail server settings."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks._base import FloorwatchBlock, HostName, Port, Seconds


class SmtpServer(FloorwatchBlock):
    """An SMTP submission server for incident and report mail."""

    _block_type_name: ClassVar[str] = "SMTP Server"
    _block_type_slug: ClassVar[str] = "smtp-server"

    host: HostName = Field(description="Host name or IP address.")
    port: Port = Field(default=587, description="587 for STARTTLS, 465 for implicit TLS.")
    username: str | None = Field(default=None, description="Login user, if the server needs one.")
    password: SecretStr | None = Field(default=None, description="Login password.")
    from_address: str = Field(description="Envelope and header sender, e.g. ops@example.com.")
    starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS.")
    use_ssl: bool = Field(default=False, description="Connect with implicit TLS (SMTPS).")
    verify_tls: bool = Field(default=True, description="Verify the server's certificate.")
    ca_bundle: Path | None = Field(default=None, description="CA bundle to verify against.")
    timeout: Seconds = Field(default=10, description="Seconds per SMTP exchange.")

    @field_validator("from_address")
    @classmethod
    def _check_from_address(cls, value: str) -> str:
        text = value.strip()
        local, at, domain = text.rpartition("@")
        if not at or not local or not domain or any(ch.isspace() for ch in text):
            raise ValueError(f"from_address {text!r} is not an address like ops@example.com")
        return text

    @model_validator(mode="after")
    def _check_tls_and_login(self) -> Self:
        if self.starttls and self.use_ssl:
            raise ValueError("starttls and use_ssl are exclusive: choose one way to use TLS")
        if self.password is not None and not self.username:
            raise ValueError("a password is set but no username")
        return self
