"""What ``floorwatch users ...`` and ``floorwatch audit ...`` do, free of Prefect and argparse:
``floorwatch/cli.py`` parses the arguments and prints what these return.

Every roster change is audited with the operating-system user as the actor (``cli:<user>``)
and exported live to the sinks ``$FLOORWATCH_AUDIT_JSONL`` / ``$FLOORWATCH_AUDIT_SYSLOG``
configure. Argument checks raise ValueError, so ``security.parse_role``,
``security.check_person_name`` and ``audit.parse_since`` serve as argparse ``type=``.
"""

from __future__ import annotations

import getpass
import importlib
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from floorwatch.audit import (
    EXPORT_FORMATS,
    AuditLog,
    ExportFormat,
    compare_with_export,
    export,
    sinks_from_env,
)
from floorwatch.errors import StoreError
from floorwatch.roster import Roster, new_roster_key
from floorwatch.store import RosterRow, Store, first_chain_fault


def cli_actor() -> str:
    """Who runs the command, as the audit log names them: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "cli:unknown"


def _roster(store: Store, key: str | bytes | None = None) -> Roster:
    return Roster(store, AuditLog(store, sinks_from_env()), key=key)


def users_add(name: str, role: str, *, store_url: str | None = None) -> str:
    """Put ``name`` on the roster with ``role``; the line to print."""
    with Store(store_url) as store:
        roster = _roster(store)
        try:
            row = roster.add(name, role, by=cli_actor())
        finally:
            roster.audit.close()
    return f"added {row.name} as {row.role}: enroll with `floorwatch users enroll {row.name}`"


def users_remove(name: str, *, store_url: str | None = None) -> str:
    """Take ``name`` off the roster; the line to print. UnknownNameError when absent."""
    with Store(store_url) as store:
        roster = _roster(store)
        try:
            row = roster.remove(name, by=cli_actor())
        finally:
            roster.audit.close()
    return f"removed {row.name} ({row.role}); their authenticator no longer works"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "-"


def format_roster(rows: list[RosterRow]) -> str:
    """The roster as a table: name, role, enrolled, added, removed."""
    header = f"{'NAME':<24} {'ROLE':<14} {'ENROLLED':<21} {'ADDED':<21} REMOVED"
    lines = [header]
    for row in rows:
        lines.append(
            f"{row.name:<24} {row.role:<14} {_when(row.enrolled_at):<21} "
            f"{_when(row.added_at):<21} {_when(row.removed_at)}"
        )
    if not rows:
        lines.append("(nobody on the roster: `floorwatch users add NAME ROLE`)")
    return "\n".join(lines)


def users_list(*, store_url: str | None = None, include_removed: bool = False) -> str:
    """The roster as a table to print."""
    with Store(store_url) as store:
        return format_roster(store.people(include_removed))


def render_qr(data: str, out: TextIO) -> bool:
    """Draw ``data`` as a QR code on ``out`` (ANSI colours on a terminal, half blocks
    otherwise); False when the qrcode package is not installed."""
    try:
        # Imported by name: the package has no type hints, and enrolling works without it.
        qrcode: Any = importlib.import_module("qrcode")
    except ModuleNotFoundError:
        return False
    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(data)
    code.make(fit=True)
    isatty = getattr(out, "isatty", None)
    code.print_ascii(out=out, tty=bool(isatty and isatty()), invert=True)
    return True


def users_enroll(
    name: str,
    *,
    store_url: str | None = None,
    key: str | bytes | None = None,
    out: TextIO | None = None,
) -> str:
    """Give ``name`` a new authenticator secret; print its provisioning URI and QR code on
    ``out`` (default stdout) and return the URI. The key defaults to
    ``$FLOORWATCH_ROSTER_KEY``."""
    stream = out if out is not None else sys.stdout
    with Store(store_url) as store:
        roster = _roster(store, key)
        try:
            uri = roster.enroll(name, by=cli_actor())
        finally:
            roster.audit.close()
    stream.write(
        f"Scan this with {name.strip()}'s authenticator app (shown once; it replaces any "
        f"earlier one):\n\n"
    )
    if not render_qr(uri, stream):
        stream.write("(no QR code: the qrcode package is not installed; type the URI)\n")
    stream.write(f"\n{uri}\n")
    stream.flush()
    return uri


def users_new_key() -> str:
    """A fresh value for ``$FLOORWATCH_ROSTER_KEY``."""
    return new_roster_key()


def audit_verify(store_url: str | None = None, export_path: str | None = None) -> tuple[bool, str]:
    """Check the audit chain, and when ``export_path`` (a JSONL export) is given, that the
    store still holds every entry it received. (ok, message naming the first bad row)."""
    with Store(store_url) as store:
        entries = store.audit_entries()
    fault = first_chain_fault(entries)
    if fault is not None:
        return False, fault.message
    if export_path is not None:
        path = Path(export_path)
        try:
            exported = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read the audit export {path}: {exc}") from exc
        problem = compare_with_export(entries, exported, str(path))
        if problem is not None:
            return False, problem
    if not entries:
        return True, "audit log is empty"
    last = entries[-1]
    checked = f" and matches {export_path}" if export_path is not None else ""
    return True, (
        f"audit log intact{checked}: {len(entries)} entries, newest #{last.id} "
        f"({last.ts.isoformat(timespec='seconds')}, hash {last.hash[:12]}…)"
    )


def audit_export(
    store_url: str | None = None, since: datetime | None = None, fmt: str = "jsonl"
) -> str:
    """The audit entries since ``since`` (all when None) as JSON lines or CSV."""
    fmt_checked = _export_format(fmt)
    with Store(store_url) as store:
        return export(store, since, fmt_checked)


def _export_format(fmt: str) -> ExportFormat:
    for known in EXPORT_FORMATS:
        if known == fmt:
            return known
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}")
