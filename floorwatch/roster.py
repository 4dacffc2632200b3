"""The roster: who may act, with which role, proven by their authenticator's one-time code.

People live in the store's ``roster`` table; every change and every check is audited
(``floorwatch.audit.AuditLog``, so it is exported live too)::

    Roster(store, audit).add("ana", "technician", by="cli:root")
    Roster(store, audit).enroll("ana", by="cli:root")            -> otpauth:// URI
    Roster(store, audit).require("ana", "123456", "technician", what="restart_service ...")

Why the TOTP secret is in the store at all: the server must hold it to check a code. It is
stored encrypted (AES-256-GCM) under a key kept outside the store, ``$FLOORWATCH_ROSTER_KEY``
(32 random bytes in base64; in production from a Prefect Secret block), so a copy of the
database, a backup or a store row in a report does not reveal anyone's secret. The name and
role are bound to the ciphertext as associated data: someone who can write to the database
but has no key cannot promote a person by editing the role column, nor move a secret to
another person; that person's codes are then refused as an unreadable roster entry.

Replay protection is atomic in the store (``Store.use_totp_step``): of two requests racing
with the same code, exactly one is allowed.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from floorwatch.audit import AuditLog
from floorwatch.errors import PolicyError, StoreError, UnknownNameError
from floorwatch.security import (
    Decision,
    Role,
    RosterEntry,
    authorize,
    check_person_name,
    new_secret,
    parse_role,
    provisioning_uri,
)
from floorwatch.store import RosterRow, Store

ROSTER_KEY_ENV: Final = "FLOORWATCH_ROSTER_KEY"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
CIPHER_PREFIX: Final = "v1."  # the format of a stored secret, should it ever change

AUDIT_ADD: Final = "roster.add"
AUDIT_REMOVE: Final = "roster.remove"
AUDIT_ENROLL: Final = "roster.enroll"
AUDIT_ALLOWED: Final = "auth.allowed"
AUDIT_REFUSED: Final = "auth.refused"
UNKNOWN_ACTOR: Final = "unknown"


def new_roster_key() -> str:
    """A fresh key for ``$FLOORWATCH_ROSTER_KEY``: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def load_roster_key(
    value: str | bytes | None = None, environ: Mapping[str, str] | None = None
) -> bytes:
    """The roster key: ``value`` (raw 32 bytes or its base64), else ``$FLOORWATCH_ROSTER_KEY``.
    StoreError when missing or malformed; the message never quotes the key."""
    if isinstance(value, bytes) and len(value) == KEY_BYTES:
        return value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if text is None:
        text = (os.environ if environ is None else environ).get(ROSTER_KEY_ENV, "")
    text = text.strip()
    if not text:
        raise StoreError(
            f"{ROSTER_KEY_ENV} is not set: the roster's TOTP secrets are encrypted with it "
            "(make one with `floorwatch users new-key` and keep it in a Secret block)"
        )
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise StoreError(f"{ROSTER_KEY_ENV} is not base64") from exc
    if len(key) != KEY_BYTES:
        raise StoreError(f"{ROSTER_KEY_ENV} holds {len(key)} bytes; it must hold {KEY_BYTES}")
    return key


def _associated(name: str, role: str) -> bytes:
    return f"floorwatch-roster\x00{name}\x00{role}".encode()


def encrypt_secret(key: bytes, name: str, role: str, secret: str) -> str:
    """``secret`` encrypted for ``name`` holding ``role``, as stored in the roster."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, secret.encode("ascii"), _associated(name, role))
    return CIPHER_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt_secret(key: bytes, name: str, role: str, stored: str) -> str:
    """The secret ``encrypt_secret`` stored. StoreError when the key is not the one it was
    encrypted with, or the row's name, role or secret was changed since."""
    failure = (
        f"the TOTP secret of {name!r} cannot be decrypted: {ROSTER_KEY_ENV} is not the key "
        "it was stored with, or its roster row (name, role or secret) was altered"
    )
    if not stored.startswith(CIPHER_PREFIX):
        raise StoreError(failure)
    try:
        blob = base64.urlsafe_b64decode(stored[len(CIPHER_PREFIX) :])
        plain = AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _associated(name, role))
        return plain.decode("ascii")
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise StoreError(failure) from exc


class Roster:
    """The people who may act, over one store; changes and checks go to ``audit``.

    ``key`` (bytes or base64) encrypts the TOTP secrets; read from ``$FLOORWATCH_ROSTER_KEY``
    when first needed if not given, so listing and removing people need no key.
    """

    def __init__(self, store: Store, audit: AuditLog, key: str | bytes | None = None) -> None:
        self.store = store
        self.audit = audit
        self._key_given = key
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        """The roster key (StoreError when missing or malformed)."""
        if self._key is None:
            self._key = load_roster_key(self._key_given)
        return self._key

    # ------------------------------------------------------------------ management

    def add(self, name: str, role: str, *, by: str, now: datetime | None = None) -> RosterRow:
        """Put ``name`` on the roster with ``role`` (ValueError for a bad name or role)."""
        person, checked = check_person_name(name), parse_role(role)
        row = self.store.add_person(person, checked, now=now)
        self.audit.record(
            actor=by, action=AUDIT_ADD, subject=f"person {person}", details={"role": checked}
        )
        return row

    def remove(self, name: str, *, by: str, now: datetime | None = None) -> RosterRow:
        """Take ``name`` off the roster; their secret is forgotten. UnknownNameError when
        not on it."""
        row = self.store.remove_person(name.strip(), now=now)
        self.audit.record(
            actor=by, action=AUDIT_REMOVE, subject=f"person {row.name}", details={"role": row.role}
        )
        return row

    def people(self, include_removed: bool = False) -> list[RosterRow]:
        """The roster by name."""
        return self.store.people(include_removed)

    def enroll(self, name: str, *, by: str, now: datetime | None = None) -> str:
        """Give ``name`` a new TOTP secret (replacing any earlier one) and return the
        provisioning URI to show them once. UnknownNameError when not on the roster."""
        row = self._active(name.strip())
        secret = new_secret()
        stored = encrypt_secret(self.key, row.name, row.role, secret)
        self.store.set_totp_secret(row.name, row.role, stored, now=now)
        self.audit.record(
            actor=by,
            action=AUDIT_ENROLL,
            subject=f"person {row.name}",
            details={"role": row.role, "replaced_secret": row.totp_secret is not None},
        )
        return provisioning_uri(row.name, secret)

    def entry(self, name: str) -> RosterEntry | None:
        """``name`` as ``authorize`` needs them, secret decrypted; None when not on the
        roster. StoreError when the secret cannot be decrypted."""
        return self._entry_of(self.store.person(name))

    def _entry_of(self, row: RosterRow | None) -> RosterEntry | None:
        if row is None or row.removed_at is not None:
            return None
        role = parse_role(row.role)
        secret = (
            SecretStr(decrypt_secret(self.key, row.name, role, row.totp_secret))
            if row.totp_secret is not None
            else None
        )
        return RosterEntry(
            name=row.name, role=role, secret=secret, last_used_step=row.last_used_step
        )

    def _active(self, name: str) -> RosterRow:
        row = self.store.person(name)
        if row is None or row.removed_at is not None:
            raise UnknownNameError(f"{name!r} is not on the roster")
        return row

    # ------------------------------------------------------------------ checks

    def authenticate(
        self,
        name: str,
        code: str,
        role_needed: Role,
        *,
        what: str,
        now: datetime | None = None,
    ) -> Decision:
        """Check that ``name`` may do ``what`` (needing ``role_needed``) with ``code``; spend
        the code; audit the outcome (never the code). Returns the decision, allowed or not."""
        when = now or datetime.now(UTC)
        try:
            person: str | None = check_person_name(name)
        except ValueError:
            person = None
        entry: RosterEntry | None = None
        decision: Decision | None = None
        on_roster = False
        if person is not None:
            row = self.store.person(person)  # an outage is a StoreError, not a refusal
            on_roster = row is not None and row.removed_at is None
            try:
                entry = self._entry_of(row)
            except StoreError as exc:
                decision = Decision(False, str(exc), refusal="roster_unreadable")
        if decision is None:
            last = entry.last_used_step if entry is not None else None
            decision = authorize(entry, role_needed, code, when, last, what=what)
            if decision.refusal == "unknown_person":
                shown = name.strip()[:40]
                decision = replace(decision, reason=f"unknown person {shown!r}: not on the roster")
        if (
            decision.step is not None
            and person is not None
            and not self.store.use_totp_step(person, decision.step)
        ):
            # Another request spent this code between our read and our write.
            decision = Decision(
                False,
                f"code for {person!r} was already used: wait for the next one",
                refusal="replayed_code",
            )
        self.audit.record(
            # The name claimed, when it is on the roster: proven only when allowed.
            actor=person if person is not None and on_roster else UNKNOWN_ACTOR,
            action=AUDIT_ALLOWED if decision.allowed else AUDIT_REFUSED,
            subject=what[:200],
            details={
                "claimed": name[:100],
                "role_needed": role_needed,
                "allowed": decision.allowed,
                "refusal": decision.refusal,
                "reason": decision.reason,
                "step": decision.step,
            },
        )
        return decision

    def require(
        self,
        name: str,
        code: str,
        role_needed: Role,
        *,
        what: str,
        now: datetime | None = None,
    ) -> Decision:
        """``authenticate``, raising PolicyError with the refusal's reason when refused."""
        decision = self.authenticate(name, code, role_needed, what=what, now=now)
        if not decision.allowed:
            raise PolicyError(f"refused: {decision.reason}")
        return decision
