"""Blocks for the sandbox platform: its SSH hosts and DNS zone, saved to the Prefect server
from ``sandbox.json`` so runbooks reach the sandbox exactly as they reach a real platform.

Block names match the inventory rendered by ``sandbox.inventory``: ``sandbox-<server>`` for
SSH hosts and ``sandbox-dns`` for the zone.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from blocks import DnsZone, SshHost

SSH_BLOCK_PREFIX = "sandbox-"
DNS_BLOCK = "sandbox-dns"


def sandbox_blocks(state: dict[str, Any]) -> dict[str, SshHost | DnsZone]:
    """Block name -> block, built from a running sandbox's description."""
    blocks: dict[str, SshHost | DnsZone] = {}
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
    return blocks


def save_sandbox_blocks(state: dict[str, Any]) -> list[str]:
    """Save (overwrite) every sandbox block; returns their names."""
    saved = []
    for name, block in sandbox_blocks(state).items():
        block.save(name, overwrite=True)
        saved.append(name)
    return saved
