"""Prefect Block types: connection settings and secrets.

Every block type is importable from here, so ``prefect block register -m blocks``
registers them all.
"""

from blocks.chat import SlackChat, SmsGateway, TelegramBot
from blocks.dns import DnsZone
from blocks.serial import SerialLine
from blocks.smtp import SmtpServer
from blocks.ssh import SshHost
from blocks.store import StoreUrl

__all__ = [
    "DnsZone",
    "SerialLine",
    "SlackChat",
    "SmsGateway",
    "SmtpServer",
    "SshHost",
    "StoreUrl",
    "TelegramBot",
]
