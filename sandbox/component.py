"""The contract every sandbox part implements, so the sandbox daemon can run them alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from floorwatch.errors import SandboxError
from sandbox.topology import Layout


class Component(ABC):
    """One part of the simulated platform (HTTP services, servers, DNS, hall, game DB).

    ``start`` returns only when every server of the part is ready to answer; ``stop`` leaves
    no process, port or pseudo-terminal behind. Faults are injected per target and stay until
    healed; injecting the same fault twice is harmless.
    """

    name: str
    # Chaos mode picks its faults from parts where this is True: the platform, not the
    # stand-ins for the team's chat services.
    chaos: bool = True

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What runs where: JSON-ready, one entry per target (URLs, ports, devices, pids,
        key paths), written to ``sandbox.json``."""

    @abstractmethod
    def faults(self) -> dict[str, list[str]]:
        """The faults this part can inject: fault name -> targets that accept it."""

    @abstractmethod
    def inject(self, fault: str, target: str) -> None: ...

    @abstractmethod
    def heal(self, target: str | None = None) -> None:
        """Undo every fault on ``target``, or on all targets of this part."""

    def active_faults(self) -> dict[str, list[str]]:
        """Faults in force now: target -> fault names."""
        return {}

    def check_fault(self, fault: str, target: str) -> None:
        """Raise a clear SandboxError unless this part can inject ``fault`` into ``target``."""
        known = self.faults()
        if fault not in known:
            raise SandboxError(f"{self.name}: unknown fault {fault!r} (known: {sorted(known)})")
        if target not in known[fault]:
            raise SandboxError(
                f"{self.name}: fault {fault!r} does not apply to {target!r} "
                f"(applies to: {', '.join(known[fault])})"
            )
