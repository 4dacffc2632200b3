"""Roles, TOTP codes (RFC 4226 / RFC 6238 test vectors) and the authorization decision."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from floorwatch.catalogue import RunbookName
from floorwatch.security import (
    ROLES,
    RUNBOOK_ROLES,
    Role,
    RosterEntry,
    authorize,
    check_person_name,
    decode_secret,
    hotp,
    new_secret,
    parse_role,
    provisioning_uri,
    required_role,
    role_at_least,
    time_step,
    totp,
)

# RFC 6238 appendix B and RFC 4226 appendix D use this ASCII seed for HMAC-SHA-1.
RFC_KEY = b"12345678901234567890"
SECRET = base64.b32encode(RFC_KEY).decode()
NOW = datetime(2026, 1, 5, 12, 0, 15, tzinfo=UTC)  # mid-step: 15 s into a 30 s step
NOW_CODE = "727459"  # totp(RFC_KEY, NOW): the wrong codes below are not it


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def person(role: Role = "operator", **changes: object) -> RosterEntry:
    values: dict[str, object] = {"name": "ana", "role": role, "secret": SecretStr(SECRET)}
    values.update(changes)
    return RosterEntry.model_validate(values)


def code_at(moment: datetime, offset_steps: int = 0) -> str:
    return totp(RFC_KEY, moment + timedelta(seconds=30 * offset_steps))


# --------------------------------------------------------------------------- codes


@pytest.mark.parametrize(
    ("unix_time", "step_hex", "code"),
    [
        (59, "0000000000000001", "94287082"),
        (1111111109, "00000000023523EC", "07081804"),
        (1111111111, "00000000023523ED", "14050471"),
        (1234567890, "000000000273EF07", "89005924"),
        (2000000000, "0000000003F940AA", "69279037"),
        (20000000000, "0000000027BC86AA", "65353130"),
    ],
)
def test_totp_matches_the_rfc_6238_sha1_test_vectors(
    unix_time: int, step_hex: str, code: str
) -> None:
    """The 8-digit SHA-1 codes and time steps of RFC 6238 appendix B are reproduced."""
    assert time_step(at(unix_time)) == int(step_hex, 16)
    assert totp(RFC_KEY, at(unix_time), digits=8) == code
    # A 6-digit code is the same truncation modulo 10^6: the vector's last six digits.
    assert totp(RFC_KEY, at(unix_time)) == code[-6:]


def test_hotp_matches_the_rfc_4226_six_digit_test_vectors() -> None:
    """Counters 0..9 give the 6-digit HOTP values of RFC 4226 appendix D."""
    expected = ["755224", "287082", "359152", "969429", "338314",
                "254676", "287922", "162583", "399871", "520489"]
    assert [hotp(RFC_KEY, counter) for counter in range(10)] == expected


def test_six_digit_codes_keep_leading_zeros_and_change_every_30_seconds() -> None:
    """Codes are always six characters, constant within a step and new at its boundary."""
    assert totp(RFC_KEY, at(1111111109)) == "081804"  # RFC's 07081804, leading zero kept
    assert time_step(at(29)) == 0
    assert time_step(at(30)) == 1
    start = at(30 * 1000)
    assert totp(RFC_KEY, start) == totp(RFC_KEY, start + timedelta(seconds=29.999))
    assert totp(RFC_KEY, start) != totp(RFC_KEY, start + timedelta(seconds=30))


def test_naive_time_and_bad_hotp_arguments_are_refused() -> None:
    """A time without zone, a negative counter or 4 digits raise ValueError."""
    with pytest.raises(ValueError, match="naive datetime"):
        time_step(datetime(2026, 1, 5, 12, 0))
    with pytest.raises(ValueError, match="not an unsigned 64-bit"):
        hotp(RFC_KEY, -1)
    with pytest.raises(ValueError, match="6 to 9 digits"):
        hotp(RFC_KEY, 0, digits=4)


def test_new_secrets_are_random_160_bit_base32() -> None:
    """A new secret is 32 base32 characters holding 20 random bytes."""
    first, second = new_secret(), new_secret()
    assert len(first) == 32
    assert first != second
    assert len(decode_secret(first)) == 20


def test_decode_secret_forgives_case_and_spaces_but_not_garbage() -> None:
    """Lower case, spaces and missing padding decode; non-base32 and short secrets do not,
    and the error never quotes the secret."""
    spaced = " ".join(SECRET[i : i + 4] for i in range(0, 32, 4)).lower()
    assert decode_secret(spaced) == RFC_KEY
    with pytest.raises(ValueError, match="not base32") as caught:
        decode_secret("NOT-BASE32!!" * 3)
    assert "NOT-BASE32" not in str(caught.value)
    with pytest.raises(ValueError, match="80 bits; at least 128"):
        decode_secret(base64.b32encode(b"0123456789").decode())


def test_provisioning_uri_names_issuer_person_and_secret() -> None:
    """The URI is otpauth://totp/Floorwatch:<name>?secret=...&issuer=Floorwatch."""
    uri = provisioning_uri("ana", SECRET)
    assert uri == f"otpauth://totp/Floorwatch:ana?secret={SECRET}&issuer=Floorwatch"
    parts = urlsplit(provisioning_uri("josé.p+ops", SECRET))
    assert parts.path == "/Floorwatch:jos%C3%A9.p%2Bops"
    assert parse_qs(parts.query) == {"secret": [SECRET], "issuer": ["Floorwatch"]}


# --------------------------------------------------------------------------- roles


def test_roles_are_ordered_operator_technician_administrator() -> None:
    """Each role includes the ones below it and none above."""
    assert ROLES == ("operator", "technician", "administrator")
    for held, needed in itertools.product(ROLES, ROLES):
        assert role_at_least(held, needed) == (ROLES.index(held) >= ROLES.index(needed))


def test_every_runbook_and_person_action_has_its_least_role() -> None:
    """Diagnosing, escalating and acknowledging need an operator, restarts and placing a hold
    a technician, failovers, redeploys and releasing a hold an administrator; approving needs
    the approved runbook's role."""
    assert set(RUNBOOK_ROLES) == {*RunbookName, "acknowledge", "hold", "release_hold"}
    assert {name: RUNBOOK_ROLES[name] for name in RunbookName} == {
        RunbookName.DIAGNOSE_TARGET: "operator",
        RunbookName.ESCALATE: "operator",
        RunbookName.RESTART_SERVICE: "technician",
        RunbookName.RESTART_TERMINAL: "technician",
        RunbookName.FAIL_OVER_SERVER: "administrator",
        RunbookName.FAIL_OVER_DNS: "administrator",
        RunbookName.REDEPLOY_CONFIG: "administrator",
    }
    assert required_role("acknowledge") == "operator"
    assert required_role("hold") == "technician"
    assert required_role("release_hold") == "administrator"
    for runbook in RunbookName:
        assert required_role("approve", runbook) == RUNBOOK_ROLES[runbook]
        assert required_role("reject", runbook) == RUNBOOK_ROLES[runbook]
    with pytest.raises(ValueError, match="approve needs the runbook"):
        required_role("approve")
    with pytest.raises(ValueError, match="no role is defined for action 'reboot_hall'"):
        required_role("reboot_hall")


def test_role_and_person_names_are_checked() -> None:
    """Roles parse case-insensitively; bad roles and names raise ValueError naming them."""
    assert parse_role(" Technician ") == "technician"
    with pytest.raises(ValueError, match="unknown role 'root'; one of operator"):
        parse_role("root")
    assert check_person_name(" ana.lima@ops ") == "ana.lima@ops"
    for bad in ("", "ana lima", "ana:x", "x" * 101, "an\na"):
        with pytest.raises(ValueError, match="cannot name a person"):
            check_person_name(bad)


# --------------------------------------------------------------------------- decisions


@pytest.mark.parametrize(("held", "needed"), list(itertools.product(ROLES, ROLES)))
def test_a_valid_code_is_allowed_exactly_when_the_role_suffices(held: Role, needed: Role) -> None:
    """Every (held, needed) pair: allowed at or above the needed role, refused below it."""
    decision = authorize(person(held), needed, code_at(NOW), NOW, None, what="restart x")
    step = time_step(NOW)
    if ROLES.index(held) >= ROLES.index(needed):
        assert (decision.allowed, decision.refusal, decision.step) == (True, None, step)
        assert decision.reason == f"'ana' ({held}) may do restart x"
    else:
        assert (decision.allowed, decision.refusal) == (False, "role_too_low")
        assert decision.step == step  # the code was genuine: it is spent all the same
        assert f"'ana' is a{'n' if held == 'operator' else ''} {held}; restart x needs" in (
            decision.reason
        )


def test_role_too_low_reason_names_both_roles() -> None:
    """An operator asking for a failover hears which role it needs."""
    decision = authorize(person("operator"), "administrator", code_at(NOW), NOW, None,
                         what="fail_over_dns on gateway-dns")
    assert decision.reason == (
        "'ana' is an operator; fail_over_dns on gateway-dns needs an administrator or higher"
    )


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_codes_one_step_either_side_are_accepted(offset: int) -> None:
    """Clock drift of one step either way is tolerated; the step used is the code's own."""
    decision = authorize(person(), "operator", code_at(NOW, offset), NOW, None)
    assert decision.allowed
    assert decision.step == time_step(NOW) + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_codes_two_or_more_steps_away_are_wrong(offset: int) -> None:
    """A code from a minute ago or ahead is refused as a wrong code."""
    decision = authorize(person(), "operator", code_at(NOW, offset), NOW, None)
    assert (decision.allowed, decision.refusal) == (False, "wrong_code")
    assert decision.reason == "wrong code for 'ana'"


def test_a_used_code_cannot_be_replayed() -> None:
    """Once a step is used, its code and every earlier step's code are refused as replays;
    the next step's code is allowed."""
    first = authorize(person(), "operator", code_at(NOW), NOW, None)
    assert first.allowed
    assert first.step is not None
    again = authorize(person(), "operator", code_at(NOW), NOW, first.step)
    assert (again.allowed, again.refusal, again.step) == (False, "replayed_code", None)
    assert again.reason == "code for 'ana' was already used: wait for the next one"
    earlier = authorize(person(), "operator", code_at(NOW, -1), NOW, first.step)
    assert earlier.refusal == "replayed_code"
    later = NOW + timedelta(seconds=30)
    assert authorize(person(), "operator", code_at(later), later, first.step).allowed


def test_unknown_and_removed_people_are_refused() -> None:
    """No roster entry, or a removed one, is an unknown person whatever the code."""
    for entry in (None, person(removed_at=NOW - timedelta(days=1))):
        decision = authorize(entry, "operator", code_at(NOW), NOW, None)
        assert (decision.allowed, decision.refusal, decision.step) == (
            False, "unknown_person", None)
        assert decision.reason == "unknown person: not on the roster"


def test_a_person_without_an_authenticator_is_refused() -> None:
    """Not yet enrolled: refused, with the command that enrolls them."""
    decision = authorize(person(secret=None), "operator", "123456", NOW, None)
    assert (decision.allowed, decision.refusal) == (False, "not_enrolled")
    assert "floorwatch users enroll ana" in decision.reason


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "١٢٣٤٥٦", "000000"])
def test_malformed_or_wrong_codes_are_refused(code: str) -> None:
    """Anything but the six right ASCII digits is a wrong code (never an exception)."""
    decision = authorize(person("administrator"), "operator", code, NOW, None)
    assert (decision.allowed, decision.refusal, decision.step) == (False, "wrong_code", None)


def test_a_code_typed_with_a_space_is_accepted() -> None:
    """Authenticator apps show '123 456'; the space does not matter."""
    code = code_at(NOW)
    assert authorize(person(), "operator", f"{code[:3]} {code[3:]}", NOW, None).allowed


def test_the_code_at_now_is_the_one_the_wrong_code_tests_avoid() -> None:
    """The fixed clock's code is known, so '000000' and '000001' are surely wrong."""
    assert code_at(NOW) == NOW_CODE


def test_the_code_is_checked_before_the_role() -> None:
    """A wrong code for an operator asking for a failover says 'wrong code', not the role."""
    decision = authorize(person("operator"), "administrator", "000001", NOW, None)
    assert decision.refusal == "wrong_code"
    assert "operator" not in decision.reason
