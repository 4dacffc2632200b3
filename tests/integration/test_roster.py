"""The roster against real databases: people, encrypted secrets, every refusal and the
allowed path of ``Roster.authenticate`` with real codes, replay across racing requests, and
the ``users`` CLI functions."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, text

from floorwatch import store
from floorwatch.audit import AuditLog, JsonlSink
from floorwatch.cli_security import (
    cli_actor,
    render_qr,
    users_add,
    users_enroll,
    users_list,
    users_new_key,
    users_remove,
)
from floorwatch.errors import PolicyError, StoreError, UnknownNameError
from floorwatch.roster import Roster, load_roster_key, new_roster_key
from floorwatch.security import decode_secret, time_step, totp
from floorwatch.store import Store

pytestmark = pytest.mark.integration

KEY = new_roster_key()
NOW = datetime(2026, 1, 5, 12, 0, 15, tzinfo=UTC)


@pytest.fixture
def migrated(store_url: str) -> Iterator[Store]:
    """A Store on a freshly migrated database (SQLite file or PostgreSQL)."""
    store.upgrade(store_url)
    with Store(store_url) as s:
        yield s


@pytest.fixture
def roster(migrated: Store, tmp_path: Path) -> Iterator[Roster]:
    """A roster whose audit entries also go to a JSONL file."""
    with AuditLog(migrated, [JsonlSink(tmp_path / "audit.jsonl")]) as log:
        yield Roster(migrated, log, key=KEY)


def secret_of(uri: str) -> bytes:
    return decode_secret(parse_qs(urlsplit(uri).query)["secret"][0])


def enrolled(roster: Roster, name: str, role: str) -> bytes:
    roster.add(name, role, by="cli:root")
    return secret_of(roster.enroll(name, by="cli:root"))


def last_audit(s: Store) -> store.AuditEntry:
    return s.audit_entries(limit=1)[0]


# --------------------------------------------------------------------------- management


def test_people_are_added_listed_removed_and_added_back(roster: Roster, migrated: Store) -> None:
    """The roster keeps removed people (audit names resolve) and can take them back; every
    change is audited with who made it."""
    roster.add("ana", "technician", by="cli:root")
    roster.add("bo", "Operator", by="cli:root")
    assert [(p.name, p.role) for p in roster.people()] == [("ana", "technician"),
                                                           ("bo", "operator")]
    with pytest.raises(StoreError, match="cannot add 'ana': already on the roster as technician"):
        roster.add("ana", "administrator", by="cli:root")
    removed = roster.remove("ana", by="cli:root")
    assert removed.removed_at is not None
    assert [p.name for p in roster.people()] == ["bo"]
    assert [p.name for p in roster.people(include_removed=True)] == ["ana", "bo"]
    with pytest.raises(UnknownNameError, match="'ana' is not on the roster"):
        roster.remove("ana", by="cli:root")
    back = roster.add("ana", "administrator", by="cli:root")
    assert (back.role, back.removed_at, back.enrolled_at) == ("administrator", None, None)
    assert [(e.actor, e.action, e.subject, e.details) for e in migrated.audit_entries()] == [
        ("cli:root", "roster.add", "person ana", {"role": "technician"}),
        ("cli:root", "roster.add", "person bo", {"role": "operator"}),
        ("cli:root", "roster.remove", "person ana", {"role": "technician"}),
        ("cli:root", "roster.add", "person ana", {"role": "administrator"}),
    ]
    with pytest.raises(ValueError, match="unknown role 'root'"):
        roster.add("cy", "root", by="cli:root")
    with pytest.raises(ValueError, match="cannot name a person"):
        roster.add("cy dee", "operator", by="cli:root")


def test_the_totp_secret_is_stored_encrypted_and_bound_to_name_and_role(
    roster: Roster, migrated: Store
) -> None:
    """The store holds only ciphertext; another key, or a role edited in the database, makes
    it unreadable, so the person's codes are refused rather than trusted."""
    roster.add("ana", "operator", by="cli:root")
    plain = parse_qs(urlsplit(roster.enroll("ana", by="cli:root")).query)["secret"][0]
    secret = decode_secret(plain)
    with migrated.engine.connect() as conn:
        stored = conn.execute(select(store.roster.c.totp_secret)).scalar_one()
    assert stored.startswith("v1.")
    assert plain not in stored
    assert plain not in repr(migrated.people())
    code = totp(secret, NOW)

    other = Roster(migrated, roster.audit, key=new_roster_key())
    refused = other.authenticate("ana", code, "operator", what="diagnose", now=NOW)
    assert (refused.allowed, refused.refusal) == (False, "roster_unreadable")
    assert "FLOORWATCH_ROSTER_KEY is not the key it was stored with" in refused.reason

    with migrated.engine.begin() as conn:  # promotion by someone with database access only
        conn.execute(text("UPDATE roster SET role = 'administrator' WHERE name = 'ana'"))
    promoted = roster.authenticate("ana", code, "administrator", what="fail_over_dns", now=NOW)
    assert (promoted.allowed, promoted.refusal) == (False, "roster_unreadable")
    assert last_audit(migrated).action == "auth.refused"


def test_enrolling_needs_the_roster_key_and_a_person_on_the_roster(
    migrated: Store, roster: Roster
) -> None:
    """No key: StoreError naming the variable (listing still works); unknown: UnknownNameError."""
    roster.add("ana", "operator", by="cli:root")
    keyless = Roster(migrated, roster.audit, key="")
    with pytest.raises(StoreError, match="FLOORWATCH_ROSTER_KEY is not set"):
        keyless.enroll("ana", by="cli:root")
    assert [p.name for p in keyless.people()] == ["ana"]
    with pytest.raises(UnknownNameError, match="'zed' is not on the roster"):
        roster.enroll("zed", by="cli:root")
    with pytest.raises(StoreError, match="holds 5 bytes; it must hold 32"):
        load_roster_key("AAAAAAA")


# --------------------------------------------------------------------------- decisions


def test_each_refusal_and_the_allowed_path_are_decided_and_audited(
    roster: Roster, migrated: Store
) -> None:
    """Unknown person, not enrolled, wrong code, replayed code and too low a role are refused
    with their reason; a good code and role is allowed; each is audited, never the code."""
    ana = enrolled(roster, "ana", "technician")
    roster.add("bo", "operator", by="cli:root")  # not enrolled
    code = totp(ana, NOW)
    wrong = "000000" if code != "000000" else "000001"
    cases = [
        ("mallory", code, "operator", "unknown_person",
         "unknown person 'mallory': not on the roster"),
        ("bo", code, "operator", "not_enrolled",
         "'bo' has no authenticator enrolled: run `floorwatch users enroll bo`"),
        ("ana", wrong, "operator", "wrong_code", "wrong code for 'ana'"),
        ("ana", code, "administrator", "role_too_low",
         "'ana' is a technician; the test needs an administrator or higher"),
        # the genuine code of the refusal above was spent: it cannot be used again
        ("ana", code, "technician", "replayed_code",
         "code for 'ana' was already used: wait for the next one"),
    ]
    for name, given, needed, refusal, reason in cases:
        decision = roster.authenticate(name, given, needed, what="the test", now=NOW)
        assert (decision.allowed, decision.refusal, decision.reason) == (False, refusal, reason)
        entry = last_audit(migrated)
        assert (entry.action, entry.subject) == ("auth.refused", "the test")
        assert entry.details["refusal"] == refusal
        assert entry.actor == ("unknown" if name == "mallory" else name)
        assert given not in repr(entry.details)

    later = NOW + timedelta(seconds=30)
    allowed = roster.authenticate("ana", totp(ana, later), "technician",
                                  what="restart_service on app-primary", now=later)
    assert (allowed.allowed, allowed.step) == (True, time_step(later))
    entry = last_audit(migrated)
    assert (entry.actor, entry.action, entry.details["role_needed"]) == (
        "ana", "auth.allowed", "technician")
    assert migrated.person("ana").last_used_step == time_step(later)  # type: ignore[union-attr]
    with pytest.raises(PolicyError, match="refused: code for 'ana' was already used"):
        roster.require("ana", totp(ana, later), "operator", what="acknowledge", now=later)
    assert migrated.verify_audit_chain() == len(migrated.audit_entries())


@pytest.mark.parametrize("role", ["operator", "technician", "administrator"])
def test_each_role_is_allowed_what_it_and_lower_roles_need(roster: Roster, role: str) -> None:
    """A person passes for their own role and every lower one, each with a fresh code."""
    secret = enrolled(roster, "ana", role)
    levels = ["operator", "technician", "administrator"]
    for offset, needed in enumerate(levels[: levels.index(role) + 1]):
        moment = NOW + timedelta(seconds=30 * offset)
        decision = roster.require("ana", totp(secret, moment), needed,  # type: ignore[arg-type]
                                  what=f"needs {needed}", now=moment)
        assert decision.allowed


def test_removed_people_are_refused(roster: Roster) -> None:
    """Removing a person ends their codes at once."""
    secret = enrolled(roster, "ana", "administrator")
    roster.remove("ana", by="cli:root")
    decision = roster.authenticate("ana", totp(secret, NOW), "operator", what="x", now=NOW)
    assert (decision.allowed, decision.refusal) == (False, "unknown_person")


def test_one_code_racing_in_eight_requests_is_allowed_once(roster: Roster) -> None:
    """Eight requests with the same code at the same moment: exactly one gets through."""
    secret = enrolled(roster, "ana", "operator")
    code = totp(secret, NOW)

    def attempt(_: int) -> bool:
        return roster.authenticate("ana", code, "operator", what="ack", now=NOW).allowed

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count(True) == 1


# --------------------------------------------------------------------------- CLI functions


def test_users_commands_manage_the_roster_and_enroll_with_a_qr_code(store_url: str) -> None:
    """users add/list/enroll/remove work on the store at the URL; enroll prints a QR code and
    the provisioning URI; the audit names the operating-system user."""
    store.upgrade(store_url)
    assert users_add("ana", "technician", store_url=store_url) == (
        "added ana as technician: enroll with `floorwatch users enroll ana`")
    out = io.StringIO()
    uri = users_enroll("ana", store_url=store_url, key=KEY, out=out)
    printed = out.getvalue()
    assert uri.startswith("otpauth://totp/Floorwatch:ana?secret=")
    assert uri in printed
    qr_lines = [line for line in printed.splitlines() if "▀" in line or "▄" in line]
    assert len(qr_lines) > 10
    assert len({len(line) for line in qr_lines}) == 1  # a square block of equal rows
    listing = users_list(store_url=store_url)
    assert listing.splitlines()[1].split()[:2] == ["ana", "technician"]
    assert "UTC" in listing.splitlines()[1]  # enrolled
    assert users_remove("ana", store_url=store_url).startswith("removed ana (technician)")
    assert "nobody on the roster" in users_list(store_url=store_url)
    assert "ana" in users_list(store_url=store_url, include_removed=True)
    with Store(store_url) as s:
        assert {e.actor for e in s.audit_entries()} == {cli_actor()}
        assert [e.action for e in s.audit_entries()] == [
            "roster.add", "roster.enroll", "roster.remove"]


def test_render_qr_draws_half_blocks_off_a_terminal() -> None:
    """Off a terminal the QR code is drawn with half-block characters, no ANSI colours."""
    out = io.StringIO()
    assert render_qr("otpauth://totp/Floorwatch:ana?secret=ABC&issuer=Floorwatch", out)
    assert "\x1b[" not in out.getvalue()
    assert "█" in out.getvalue()
    assert len(load_roster_key(users_new_key())) == 32
