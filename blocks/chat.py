"""Team chat and paging channels: Slack, Telegram and an HTTP SMS gateway."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, SecretStr, field_validator

if TYPE_CHECKING:  # slack_sdk is imported where it is used: ~0.3 s that most processes skip
    from slack_sdk import WebClient

from blocks._base import FloorwatchBlock, HttpUrlText, NonBlank, Seconds

# Telegram chat ids are numbers (negative for groups) or "@channelusername".
_TELEGRAM_CHAT_ID = re.compile(r"^(-?\d+|@[A-Za-z][A-Za-z0-9_]{3,})$")


class SlackChat(FloorwatchBlock):
    """A Slack bot token and the channel that receives incidents and approvals."""

    _block_type_name: ClassVar[str] = "Slack Chat"
    _block_type_slug: ClassVar[str] = "slack-chat"

    bot_token: SecretStr = Field(description="Bot token (xoxb-...).")
    channel: NonBlank = Field(description="Channel id or name.")
    base_url: HttpUrlText = Field(
        default="https://slack.com/api/", description="Slack Web API base URL."
    )
    timeout: Seconds = Field(default=30, description="Seconds per API call.")

    @field_validator("base_url")
    @classmethod
    def _end_with_slash(cls, value: str) -> str:
        # slack_sdk joins method names onto base_url, so it must end with "/".
        return value if value.endswith("/") else value + "/"

    def get_client(self) -> WebClient:
        """A slack_sdk WebClient for this bot."""
        from slack_sdk import WebClient

        return WebClient(
            token=self.bot_token.get_secret_value(),
            base_url=self.base_url,
            timeout=int(max(1, round(self.timeout))),
        )


class TelegramBot(FloorwatchBlock):
    """A Telegram bot token and the chat it posts to."""

    _block_type_name: ClassVar[str] = "Telegram Bot"
    _block_type_slug: ClassVar[str] = "telegram-bot"

    bot_token: SecretStr = Field(description="Bot token from @BotFather.")
    chat_id: str = Field(description="Chat id (e.g. -1001234567890) or @channelusername.")
    base_url: HttpUrlText = Field(
        default="https://api.telegram.org", description="Bot API base URL."
    )
    timeout: Seconds = Field(default=10, description="Seconds per API call.")

    @field_validator("chat_id", mode="before")
    @classmethod
    def _check_chat_id(cls, value: object) -> str:
        text = str(value).strip()
        if not _TELEGRAM_CHAT_ID.match(text):
            raise ValueError(f"chat_id {text!r} is neither a number nor an @channelusername")
        return text

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        # Method URLs are built as f"{base_url}/bot{token}/{method}".
        return value.rstrip("/")


class SmsGateway(FloorwatchBlock):
    """An HTTP SMS gateway for paging the on-call engineer."""

    _block_type_name: ClassVar[str] = "SMS Gateway"
    _block_type_slug: ClassVar[str] = "sms-gateway"

    base_url: HttpUrlText = Field(description="Gateway API base URL.")
    api_key: SecretStr = Field(description="API key.")
    sender: NonBlank = Field(description="Sender id or number shown to the recipient.")
    verify_tls: bool = Field(default=True, description="Verify the gateway's certificate.")
    timeout: Seconds = Field(default=10, description="Seconds per API call.")
