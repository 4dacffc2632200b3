"""Serial line settings for hall devices: terminal consoles, bill validators, printers."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from blocks._base import FloorwatchBlock, NonBlank, Seconds


class SerialLine(FloorwatchBlock):
    """A serial device and the protocol spoken on it."""

    _block_type_name: ClassVar[str] = "Serial Line"
    _block_type_slug: ClassVar[str] = "serial-line"

    device: NonBlank = Field(description="Device path, e.g. /dev/ttyUSB0.")
    baud: int = Field(default=9600, gt=0, description="Bits per second.")
    parity: Literal["N", "E", "O"] = Field(default="N", description="None, even or odd.")
    bytesize: Literal[5, 6, 7, 8] = Field(default=8, description="Data bits per character.")
    stopbits: float = Field(default=1, description="Stop bits: 1, 1.5 or 2.")
    protocol: Literal["console", "cctalk", "escpos"] = Field(
        description="Line console, ccTalk (bill validators) or ESC/POS (receipt printers)."
    )
    timeout: Seconds = Field(default=1.0, description="Seconds to wait for a reply.")

    @field_validator("stopbits")
    @classmethod
    def _check_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError(f"stopbits must be 1, 1.5 or 2, not {value}")
        return value
