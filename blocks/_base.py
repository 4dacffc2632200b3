"""Shared base and field types for Floorwatch blocks (not itself a registrable block type)."""

from __future__ import annotations

from abc import ABC
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import AfterValidator, ConfigDict, Field, model_validator

# Keys Prefect itself puts in a block's data when it serializes or hydrates one.
_PREFECT_KEYS = frozenset({"block_type_slug"})


def _check_host(value: str) -> str:
    """Refuse empty host names and ones with blanks (they would break known_hosts lines)."""
    host = value.strip()
    if not host:
        raise ValueError("host name must not be empty")
    if any(ch.isspace() or ch == "," for ch in host):
        raise ValueError(f"host name {host!r} must not contain blanks or commas")
    return host


def _check_not_blank(value: str) -> str:
    """Refuse empty or all-blank strings."""
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _check_http_url(value: str) -> str:
    """Accept only absolute http(s) URLs with a host."""
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    return url


Port = Annotated[int, Field(ge=1, le=65535)]
HostName = Annotated[str, AfterValidator(_check_host)]
NonBlank = Annotated[str, AfterValidator(_check_not_blank)]
HttpUrlText = Annotated[str, AfterValidator(_check_http_url)]
Seconds = Annotated[float, Field(gt=0)]


class FloorwatchBlock(Block, ABC):
    """Base of Floorwatch blocks: unknown fields are refused and inputs never echoed."""

    # Prefect's Block allows extra fields, so a misspelt `prot=2222` would silently keep
    # port 22; we refuse unknown keys instead. Inputs are hidden from validation errors
    # because several fields hold secrets and pydantic would otherwise print them.
    model_config: ClassVar[ConfigDict] = ConfigDict(hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = sorted(
                str(k)
                for k in data
                if k not in known and k not in _PREFECT_KEYS and not str(k).startswith("_")
            )
            if unknown:
                raise ValueError(
                    f"unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
                    f"known fields: {', '.join(sorted(cls.model_fields))}"
                )
        return data
