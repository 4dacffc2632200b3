"""Where Floorwatch keeps its own records."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from blocks._base import FloorwatchBlock


class StoreUrl(FloorwatchBlock):
    """The SQLAlchemy URL of the Floorwatch store (SQLite or PostgreSQL)."""

    _block_type_name: ClassVar[str] = "Store URL"
    _block_type_slug: ClassVar[str] = "store-url"

    url: SecretStr = Field(
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db "
        "(it may hold a password)."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        try:
            make_url(value.get_secret_value().strip())
        except ArgumentError as exc:
            # SQLAlchemy's message quotes the whole URL, password included: drop it.
            raise ValueError("url is not a SQLAlchemy URL (dialect+driver://...)") from exc
        return SecretStr(value.get_secret_value().strip())

    def get_url(self) -> str:
        """The URL in clear, password included, for create_engine."""
        return self.url.get_secret_value()

    def display_url(self) -> str:
        """The URL with its password masked, for logs and reports."""
        return make_url(self.get_url()).render_as_string(hide_password=True)
