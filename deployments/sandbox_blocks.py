"""Blocks for the sandbox platform: its SSH hosts and DNS zone, saved to the Prefect server
from ``sandbox.json`` so runbooks reach the sandbox exactly as they reach a real platform,
and the chat stand-ins' credentials, so notifications reach the sandbox's Slack, Telegram and
SMS gateway as they would the real services.

Block names match the inventory rendered by ``sandbox.inventory``: ``sandbox-<server>`` for
SSH hosts and ``sandbox-dns`` for the zone; the chat blocks take the default names of their
channel kind (``floorwatch.notify.DEFAULT_BLOCKS``), which contacts use unless they name one.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from blocks import DnsZone, SlackChat, SmsGateway, SshHost, TelegramBot
from floorwatch.catalogue import Channel
from floorwatch.notify import DEFAULT_BLOCKS

SSH_BLOCK_PREFIX = "sandbox-"
DNS_BLOCK = "sandbox-dns"


SandboxBlock = SshHost | DnsZone | SlackChat | TelegramBot | SmsGateway


def _secret(path: str) -> SecretStr:
    return SecretStr(Path(path).read_text().strip())


def chat_blocks(saas: dict[str, Any]) -> dict[str, SlackChat | TelegramBot | SmsGateway]:
    """Block name -> block for the chat stand-ins described by ``saas`` (sandbox/saas.py)."""
    slack, telegram, sms = saas["slack"], saas["telegram"], saas["sms-gateway"]
    return {
        DEFAULT_BLOCKS[Channel.SLACK]: SlackChat(
            bot_token=_secret(slack["credential_file"]), channel=slack["default_channel"],
            base_url=slack["base_url"], timeout=5,
        ),
        DEFAULT_BLOCKS[Channel.TELEGRAM]: TelegramBot(
            bot_token=_secret(telegram["credential_file"]),
            chat_id=telegram["default_chat_id"], base_url=telegram["base_url"], timeout=5,
        ),
        DEFAULT_BLOCKS[Channel.SMS]: SmsGateway(
            base_url=sms["base_url"], api_key=_secret(sms["credential_file"]),
            sender=sms["sender"], timeout=5,
        ),
    }


def sandbox_blocks(state: dict[str, Any]) -> dict[str, SandboxBlock]:
    """Block name -> block, built from a running sandbox's description."""
    blocks: dict[str, SandboxBlock] = {}
    for server, info in state["components"]["servers"].items():
        blocks[f"{SSH_BLOCK_PREFIX}{server}"] = SshHost(
            host=info["host"], port=info["port"], username=info["username"],
            private_key=SecretStr(Path(info["private_key_file"]).read_text()),
            host_key=info["host_key"],
            # the server's own systemctl; its `df` reports the data mount's declared size
            service_command=shlex.quote(info["svc"]),
            disk_command=f"{shlex.quote(info['svc'])} df",
        )
    for info in state["components"]["dns"].values():
        blocks[DNS_BLOCK] = DnsZone(
            server=info["server"], port=info["port"], zone=info["zone"],
            tsig_key_name=info["tsig_key_name"], tsig_algorithm=info["tsig_algorithm"],
            tsig_secret=SecretStr(Path(info["tsig_secret_file"]).read_text().strip()),
        )
    if "saas" in state["components"]:  # a sandbox.json from before the chat stand-ins
        blocks.update(chat_blocks(state["components"]["saas"]))
    return blocks


def save_sandbox_blocks(state: dict[str, Any]) -> list[str]:
    """Save (overwrite) every sandbox block; returns their names."""
    saved = []
    for name, block in sandbox_blocks(state).items():
        block.save(name, overwrite=True)
        saved.append(name)
    return saved
