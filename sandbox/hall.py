"""The gaming hall: terminals, bill acceptors and receipt printers on pseudo-terminals.

Every terminal has a line console, a ccTalk bill acceptor and an ESC/POS printer, each on its
own pseudo-terminal reached through a stable symlink ``Layout.device(target, role)`` (roles
``console``, ``cctalk``, ``escpos``). One thread answers all of them.

Faults (each stays until healed; injecting twice is harmless):

- ``terminal_offline`` (terminal): no answer at all; REBOOT cannot be heard either.
- ``terminal_hung`` (terminal): STATUS answers, heartbeat frozen; a REBOOT clears it.
- ``stale_config`` (terminal): reports another configuration hash; a CONFIG-PUSH of the
  expected configuration clears it, a REBOOT does not.
- ``garbled`` (any device): replies arrive with bad checksums / wrong fixed bits.
- ``bill_jam`` (bill acceptor): buffered bill events report "bill jammed in transport"; a
  ccTalk reset does not clear it, only a person (``heal``).
- ``paper_out`` (printer): DLE EOT 4 reports paper end, DLE EOT 2 printing stopped by paper
  end, DLE EOT 1 offline.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from floorwatch.errors import SandboxError
from floorwatch.protocols import console
from sandbox.component import Component
from sandbox.devices import (
    BAUD,
    STALE_CONFIG,
    BillAcceptor,
    Device,
    DeviceLoop,
    Printer,
    PtyLine,
    Terminal,
)
from sandbox.topology import (
    CCTALK_BILL_ADDRESS,
    CCTALK_HOST_ADDRESS,
    EXPECTED_CONFIG,
    HALL,
    Layout,
    bill_acceptor_name,
    printer_name,
    terminal_name,
)

TERMINAL_FAULTS = ("terminal_offline", "terminal_hung", "stale_config")


class GamingHall(Component):
    """Layout.terminals terminals, each with a bill acceptor and a receipt printer."""

    name = "hall"

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        if layout.terminals < 1:
            raise SandboxError(f"hall: needs at least one terminal, got {layout.terminals}")
        self._lock = threading.Lock()
        self._platform_reachable = True
        now = time.monotonic()
        self.terminals: dict[str, Terminal] = {}
        self.bill_acceptors: dict[str, BillAcceptor] = {}
        self.printers: dict[str, Printer] = {}
        self._parent: dict[str, str] = {}
        for i in range(1, layout.terminals + 1):
            term = terminal_name(i)
            self.terminals[term] = Terminal(
                term, i, EXPECTED_CONFIG, now, lambda: self._platform_reachable
            )
            bill, printer = bill_acceptor_name(i), printer_name(i)
            self.bill_acceptors[bill] = BillAcceptor(bill, CCTALK_BILL_ADDRESS, 400_000 + i)
            self.printers[printer] = Printer(printer)
            self._parent[bill] = self._parent[printer] = term
        self.devices: dict[str, Device] = {
            **self.terminals,
            **self.bill_acceptors,
            **self.printers,
        }
        self._lines: dict[str, PtyLine] = {}
        self._loop: DeviceLoop | None = None

    # lifecycle

    def start(self) -> None:
        """Open one pseudo-terminal per device, link it, and start answering."""
        if self._loop is not None:
            return
        loop = DeviceLoop(self._lock)
        try:
            for target, device in self.devices.items():
                line = PtyLine(self.layout.device(target, device.protocol))
                self._lines[target] = line
                loop.add(line, device)
        except OSError as exc:
            self._close_lines()
            loop.stop()
            raise SandboxError(f"hall: cannot open a pseudo-terminal: {exc}") from exc
        loop.start()
        self._loop = loop

    def stop(self) -> None:
        """Stop answering, close every pseudo-terminal and remove the symlinks."""
        loop, self._loop = self._loop, None
        try:
            if loop is not None:
                loop.stop()
        finally:
            self._close_lines()
            dev_dir = self.layout.dir / "dev"
            if dev_dir.is_dir() and not any(dev_dir.iterdir()):
                dev_dir.rmdir()

    def _close_lines(self) -> None:
        for line in self._lines.values():
            line.close()
        self._lines.clear()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.alive

    # description

    def describe(self) -> dict[str, Any]:
        """Per device: symlink, real pty, protocol, baud; ccTalk address; parent terminal."""
        out: dict[str, Any] = {}
        for target, device in self.devices.items():
            line = self._lines.get(target)
            info: dict[str, Any] = {
                "kind": "serial",
                "device": str(self.layout.device(target, device.protocol)),
                "tty": line.tty if line else None,
                "protocol": device.protocol,
                "baud": BAUD,
                "hall": HALL,
            }
            if isinstance(device, Terminal):
                info["expected_config_hash"] = console.config_hash(EXPECTED_CONFIG)
                info["index"] = device.index
            else:
                info["parent"] = self._parent[target]
            if isinstance(device, BillAcceptor):
                info["address"] = device.address
                info["host_address"] = CCTALK_HOST_ADDRESS
            out[target] = info
        return out

    # faults

    def faults(self) -> dict[str, list[str]]:
        terminals = list(self.terminals)
        return {
            **{fault: terminals for fault in TERMINAL_FAULTS},
            "garbled": list(self.devices),
            "bill_jam": list(self.bill_acceptors),
            "paper_out": list(self.printers),
        }

    def inject(self, fault: str, target: str) -> None:
        """Put ``fault`` on ``target`` until healed."""
        self.check_fault(fault, target)
        now = time.monotonic()
        with self._lock:
            if fault == "garbled":
                self.devices[target].garbled = True
            elif fault == "terminal_offline":
                self.terminals[target].offline = True
            elif fault == "terminal_hung":
                self.terminals[target].hang(now)
            elif fault == "stale_config":
                self.terminals[target].config = STALE_CONFIG
            elif fault == "bill_jam":
                self.bill_acceptors[target].jammed = True
            elif fault == "paper_out":
                self.printers[target].set_paper_out(True)

    def heal(self, target: str | None = None) -> None:
        """Undo every fault on ``target``, or on every device."""
        if target is not None and target not in self.devices:
            raise SandboxError(
                f"hall: unknown target {target!r} (known: {', '.join(self.devices)})"
            )
        now = time.monotonic()
        with self._lock:
            for name in [target] if target is not None else list(self.devices):
                self.devices[name].heal(now)

    def active_faults(self) -> dict[str, list[str]]:
        with self._lock:
            found = {name: device.faults() for name, device in self.devices.items()}
        return {name: faults for name, faults in found.items() if faults}

    # scenario controls

    def set_platform_reachable(self, reachable: bool) -> None:
        """Whether terminals reach the platform; unreachable terminals report cache=local."""
        with self._lock:
            self._platform_reachable = reachable

    def insert_bill(self, target: str, bill_type: int = 1) -> None:
        """A player inserts a bill of ``bill_type`` into bill acceptor ``target``."""
        if target not in self.bill_acceptors:
            raise SandboxError(f"hall: {target!r} is not a bill acceptor")
        if not 1 <= bill_type <= 255:
            raise SandboxError(f"hall: bill type {bill_type} is not 1..255")
        with self._lock:
            self.bill_acceptors[target].credit(bill_type)
