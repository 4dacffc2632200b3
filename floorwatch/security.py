"""Who may do what: roles, personal one-time codes and the decision that combines them.

Pure: no I/O, no clock (``now`` is always given). The roster that feeds ``authorize`` lives in
the store (``floorwatch.roster``); the runbook frame calls it before acting::

    roles     operator < technician < administrator; each runbook needs a least role
    codes     TOTP (RFC 6238): HMAC-SHA-1 over 30 s steps since the Unix epoch, 6 digits,
              one step either side accepted for clock drift
    replay    the last step each person used is stored; a code of that step or an earlier
              one is refused, so a code seen over a shoulder or in a chat is worth nothing
    decision  authorize(entry, role_needed, code, now, last_step) -> Decision

Checks run in this order: the person, then the code, then the role, so someone without a
valid code learns nothing about a person's role.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final, Literal, get_args
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, SecretStr

from floorwatch.catalogue import RunbookName

Role = Literal["operator", "technician", "administrator"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)  # least to most powerful

ACKNOWLEDGE: Final = "acknowledge"
APPROVE: Final = "approve"
REJECT: Final = "reject"  # deciding either way on a remediation takes the same role
HOLD: Final = "hold"  # take a target out of automation's hands
RELEASE_HOLD: Final = "release_hold"  # give it back (traffic and repairs may return)

# The least role each person action needs. Approving (or rejecting) a remediation needs the
# role of the runbook approved: see ``required_role``.
RUNBOOK_ROLES: Final[Mapping[str, Role]] = MappingProxyType(
    {
        RunbookName.DIAGNOSE_TARGET: "operator",
        RunbookName.ESCALATE: "operator",
        ACKNOWLEDGE: "operator",
        HOLD: "technician",
        RELEASE_HOLD: "administrator",
        RunbookName.RESTART_SERVICE: "technician",
        RunbookName.RESTART_TERMINAL: "technician",
        RunbookName.FAIL_OVER_SERVER: "administrator",
        RunbookName.FAIL_OVER_DNS: "administrator",
        RunbookName.REDEPLOY_CONFIG: "administrator",
    }
)

ISSUER: Final = "Floorwatch"
TOTP_STEP_S: Final = 30
TOTP_DIGITS: Final = 6
TOTP_WINDOW: Final = 1  # steps accepted either side of now
SECRET_BYTES: Final = 20  # 160 bits, RFC 4226's recommended length for HMAC-SHA-1
MIN_SECRET_BYTES: Final = 16  # RFC 4226: the shared secret MUST be at least 128 bits
MAX_NAME: Final = 100  # the audit log's actor column
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_NAME = re.compile(r"[\w.@+-]+")


def parse_role(text: str) -> Role:
    """The role ``text`` names (case-insensitive); ValueError naming the choices otherwise.
    Usable as an argparse ``type=``."""
    wanted = text.strip().lower()
    for role in ROLES:
        if role == wanted:
            return role
    raise ValueError(f"unknown role {text!r}; one of {', '.join(ROLES)}")


def role_at_least(role: Role, needed: Role) -> bool:
    """True when ``role`` is ``needed`` or more powerful."""
    return ROLES.index(role) >= ROLES.index(needed)


def required_role(action: str, runbook: str | None = None) -> Role:
    """The least role a person needs for ``action``: a runbook name or ``acknowledge``;
    for ``approve``/``reject``, the role of ``runbook``, the runbook being decided on."""
    if action in (APPROVE, REJECT):
        if runbook is None:
            raise ValueError(f"{action} needs the runbook it decides on")
        return required_role(runbook)
    try:
        return RUNBOOK_ROLES[action]
    except KeyError:
        known = ", ".join([*RUNBOOK_ROLES, APPROVE, REJECT])
        raise ValueError(f"no role is defined for action {action!r}; one of {known}") from None


def check_person_name(name: str) -> str:
    """``name`` stripped, when it may name a person on the roster: 1..100 letters, digits
    and ``. _ @ + -``. ValueError otherwise. Usable as an argparse ``type=``."""
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME or not _NAME.fullmatch(cleaned):
        shown = cleaned if len(cleaned) <= 40 else f"{cleaned[:40]}…"
        raise ValueError(
            f"{shown!r} cannot name a person: use 1..{MAX_NAME} letters, digits and . _ @ + -"
        )
    return cleaned


# --------------------------------------------------------------------------- TOTP


def new_secret() -> str:
    """A fresh random TOTP secret, in base32 as authenticator apps take it (32 characters)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The key bytes of a base32 secret (case, spaces and missing padding forgiven).
    ValueError when it is not base32 or too short; the message never quotes the secret."""
    text = "".join(secret.split()).replace("-", "").upper()
    text += "=" * (-len(text) % 8)
    try:
        key = base64.b32decode(text)
    except binascii.Error as exc:
        raise ValueError(f"TOTP secret is not base32 ({len(secret)} characters)") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"TOTP secret holds {len(key) * 8} bits; at least {MIN_SECRET_BYTES * 8} needed"
        )
    return key


def hotp(key: bytes, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226 HOTP: HMAC-SHA-1 of the 8-byte counter, dynamically truncated to ``digits``."""
    if not 0 <= counter < 2**64:
        raise ValueError(f"HOTP counter {counter} is not an unsigned 64-bit number")
    if not 6 <= digits <= 9:
        raise ValueError(f"HOTP codes have 6 to 9 digits, not {digits}")
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(at: datetime, step_s: int = TOTP_STEP_S) -> int:
    """The RFC 6238 time step ``at`` falls in (T0 = the Unix epoch)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()}; use a UTC-aware one")
    # Whole seconds in integers, as RFC 6238 counts them: no float rounding at step edges.
    delta = at.astimezone(UTC) - EPOCH
    return (delta.days * 86400 + delta.seconds) // step_s


def totp(key: bytes, at: datetime, digits: int = TOTP_DIGITS, step_s: int = TOTP_STEP_S) -> str:
    """RFC 6238 TOTP (SHA-1) of ``key`` at ``at``."""
    return hotp(key, time_step(at, step_s), digits)


def provisioning_uri(name: str, secret: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans to enroll ``name``."""
    label = quote(f"{ISSUER}:{check_person_name(name)}", safe=":@")
    return f"otpauth://totp/{label}?secret={secret}&issuer={ISSUER}"


# --------------------------------------------------------------------------- the decision


class RosterEntry(BaseModel):
    """A person as ``authorize`` needs them: role and (decrypted) TOTP secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    secret: SecretStr | None = None  # base32; None until enrolled
    last_used_step: int | None = None
    removed_at: datetime | None = None


Refusal = Literal[
    "unknown_person",
    "roster_unreadable",  # the stored secret cannot be decrypted: wrong key or altered row
    "not_enrolled",
    "wrong_code",
    "replayed_code",
    "role_too_low",
]
REFUSALS: Final[tuple[Refusal, ...]] = get_args(Refusal)


@dataclass(frozen=True)
class Decision:
    """Whether a person may act, and why.

    ``step`` is the time step of a genuine code, allowed or not (role too low): the caller
    records it as used so the code cannot be replayed. ``refusal`` says which check failed.
    """

    allowed: bool
    reason: str
    step: int | None = None
    refusal: Refusal | None = None


def _article(role: Role) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def authorize(
    entry: RosterEntry | None,
    role_needed: Role,
    code: str,
    now: datetime,
    last_step: int | None,
    *,
    what: str | None = None,
) -> Decision:
    """Decide whether the person of ``entry`` (None: not on the roster) may do ``what``,
    which needs ``role_needed``, on the strength of ``code`` at ``now``. ``last_step`` is
    the last time step the person used (None: never)."""
    doing = what or "this"
    if entry is None or entry.removed_at is not None:
        return Decision(False, "unknown person: not on the roster", refusal="unknown_person")
    who = repr(entry.name)
    if entry.secret is None:
        return Decision(
            False,
            f"{who} has no authenticator enrolled: run `floorwatch users enroll {entry.name}`",
            refusal="not_enrolled",
        )
    given = "".join(code.split())
    if len(given) != TOTP_DIGITS or not (given.isascii() and given.isdigit()):
        return Decision(
            False, f"wrong code for {who}: expected {TOTP_DIGITS} digits", refusal="wrong_code"
        )
    key = decode_secret(entry.secret.get_secret_value())
    current = time_step(now)
    matching = [
        step
        for step in range(current + TOTP_WINDOW, current - TOTP_WINDOW - 1, -1)
        if step >= 0 and hmac.compare_digest(hotp(key, step), given)
    ]
    if not matching:
        return Decision(False, f"wrong code for {who}", refusal="wrong_code")
    fresh = [step for step in matching if last_step is None or step > last_step]
    if not fresh:
        return Decision(
            False,
            f"code for {who} was already used: wait for the next one",
            step=None,
            refusal="replayed_code",
        )
    step = fresh[0]  # the latest: spending it also spends every earlier code
    if not role_at_least(entry.role, role_needed):
        return Decision(
            False,
            f"{who} is {_article(entry.role)}; {doing} needs {_article(role_needed)} or higher",
            step=step,
            refusal="role_too_low",
        )
    return Decision(True, f"{who} ({entry.role}) may do {doing}", step=step)
