"""DNS zone settings for RFC 2136 dynamic updates signed with TSIG."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import ClassVar, Literal

import dns.exception
import dns.name
import dns.tsig
from pydantic import Field, SecretStr, field_validator

from blocks._base import FloorwatchBlock, Port, Seconds

TsigAlgorithm = Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1"]


class MaskedTsigKey(dns.tsig.Key):
    """A dnspython TSIG key whose repr leaves the secret out."""

    def __repr__(self) -> str:
        # dnspython's own repr prints the secret in base64, which would leak into logs.
        return f"<DNS key name='{self.name}', algorithm='{self.algorithm}', secret=***>"


class DnsZone(FloorwatchBlock):
    """A zone on an authoritative server that accepts TSIG-signed dynamic updates."""

    _block_type_name: ClassVar[str] = "DNS Zone"
    _block_type_slug: ClassVar[str] = "dns-zone"

    server: str = Field(description="IP address of the primary server.")
    port: Port = Field(default=53, description="DNS port of the server.")
    zone: str = Field(description="Zone name, e.g. play.example.")
    tsig_key_name: str = Field(description="Name of the TSIG key, e.g. floorwatch-key.")
    tsig_algorithm: TsigAlgorithm = Field(default="hmac-sha256", description="TSIG algorithm.")
    tsig_secret: SecretStr = Field(description="TSIG secret, base64 (as tsig-keygen prints).")
    timeout: Seconds = Field(default=5.0, description="Seconds to wait for the server.")

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError as exc:
            raise ValueError(f"server must be an IP address, not {value!r}") from exc

    @field_validator("zone", "tsig_key_name")
    @classmethod
    def _check_dns_name(cls, value: str) -> str:
        text = value.strip()
        if not text or text == ".":
            raise ValueError("must be a non-root DNS name")
        try:
            dns.name.from_text(text)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{text!r} is not a valid DNS name: {exc}") from exc
        return text

    @field_validator("tsig_secret")
    @classmethod
    def _check_tsig_secret(cls, value: SecretStr) -> SecretStr:
        try:
            decoded = base64.b64decode(value.get_secret_value(), validate=True)
        except binascii.Error as exc:
            # The secret is never quoted, only the reason it failed.
            raise ValueError(f"TSIG secret is not valid base64 ({exc})") from exc
        if not decoded:
            raise ValueError("TSIG secret must not be empty")
        return value

    def zone_name(self) -> dns.name.Name:
        """The zone as an absolute dnspython name."""
        return dns.name.from_text(self.zone)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """A dnspython keyring holding this zone's TSIG key (its repr hides the secret)."""
        name = dns.name.from_text(self.tsig_key_name)
        key = MaskedTsigKey(name, self.tsig_secret.get_secret_value(), self.tsig_algorithm)
        return {name: key}
