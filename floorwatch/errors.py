"""Floorwatch's one error tree.

Every error Floorwatch raises on purpose is a ``FloorwatchError``; library errors are
translated at the adapter boundary with ``raise Mapped(...) from exc``::

    FloorwatchError
    ├─ InventoryError (ValueError)      bad configuration; carries every located problem
    ├─ UnknownNameError (LookupError)   a lookup named a target, zone or fault kind not held
    ├─ StoreError                       the store cannot be reached or migrated
    ├─ AdapterError(target)             I/O with a platform component failed
    │   ├─ ConnectError                 refused, unreachable, login refused
    │   │   └─ HostKeyMismatch          the server's host key is not the pinned one
    │   ├─ CommandFailed                ran, but exited non-zero or answered an error
    │   ├─ ProbeTimeout                 no answer in time
    │   └─ ProtocolError                an answer we cannot parse (garbled frame, bad JSON)
    ├─ PolicyError                      not permitted, budget spent, approval refused/timed out
    ├─ VerificationFailed(step, observed)
    └─ SandboxError                     the simulated platform could not do what was asked
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FloorwatchError(Exception):
    """Base of every error Floorwatch raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One located problem in a configuration file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class InventoryError(FloorwatchError, ValueError):
    """The inventory is invalid; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in inventory"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class UnknownNameError(FloorwatchError, LookupError):
    """A lookup in a loaded inventory named a target, zone or fault kind it does not hold."""


class StoreError(FloorwatchError):
    """The store cannot be reached, migrated or written."""


class AdapterError(FloorwatchError):
    """I/O with a platform component failed; ``target`` names the component."""

    def __init__(self, target: str, message: str) -> None:
        self.target = target
        super().__init__(f"{target}: {message}")


class ConnectError(AdapterError):
    """The component refused or could not be reached (including a host key mismatch)."""


class CommandFailed(AdapterError):
    """A command ran but failed (non-zero exit, error answer)."""


class ProbeTimeout(AdapterError):
    """The component did not answer in time."""


class ProtocolError(AdapterError):
    """The component answered something that cannot be parsed."""


class PolicyError(FloorwatchError):
    """The action is not permitted now: policy, budget, approval or role."""


class VerificationFailed(FloorwatchError):
    """Recovery could not be proven: ``step`` failed with ``observed`` evidence."""

    def __init__(self, step: str, observed: str) -> None:
        self.step = step
        self.observed = observed
        super().__init__(f"verification failed at {step}: {observed}")


class SandboxError(FloorwatchError):
    """The simulated platform could not do what was asked."""


class HostKeyMismatch(ConnectError):
    """The server presented a host key other than the pinned one: a security event (someone
    may be in the middle), not an outage, so it is never retried or trusted on first use."""
