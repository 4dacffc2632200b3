"""The ``floorwatch`` command: the one module that wires the domain, the store, the sandbox
and Prefect together. Prefect is imported only by the subcommands that need it, so
``check-inventory`` and ``db`` answer in well under a second."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from floorwatch.errors import FloorwatchError, InventoryError

DEFAULT_INVENTORY = "inventory.example.yaml"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# -- inventory --------------------------------------------------------------------------
def cmd_check_inventory(args: argparse.Namespace) -> int:
    from floorwatch.inventory import load_inventory

    try:
        inventory = load_inventory(args.file)
    except InventoryError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    targets = inventory.targets()
    probes = sum(len(t.probes) for t in targets)
    print(
        f"{args.file}: ok — {len(inventory.zones)} zones, {len(targets)} targets, "
        f"{probes} probes, {len(inventory.maintenance)} maintenance windows"
    )
    return 0


# -- store ------------------------------------------------------------------------------
def cmd_db_info(args: argparse.Namespace) -> int:
    from floorwatch import store

    _print_json(store.db_info(store.database_url(args.url)))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from floorwatch import store

    url = store.database_url(args.url)
    revision = store.upgrade(url)
    print(f"store at {store.db_info(url)['url']} is at revision {revision}")
    return 0


# -- sandbox ----------------------------------------------------------------------------
def _sandbox(args: argparse.Namespace) -> Any:
    from sandbox.control import Sandbox

    return Sandbox(args.dir)


def _sandbox_summary(state: dict[str, Any]) -> str:
    lines = [f"sandbox ready in {state.get('ready_s', '?')} s — {state['dir']}"]
    for component, targets in state["components"].items():
        lines.append(f"  {component}:")
        for name, info in targets.items():
            host = info.get("host") or info.get("server")
            where = info.get("url") or info.get("device") or (
                f"{host}:{info['port']}" if host and "port" in info else "")
            lines.append(f"    {name:<24} {info.get('kind', ''):<9} {where}")
    lines.append(f"  state: {Path(state['dir']) / 'sandbox.json'}")
    return "\n".join(lines)


def cmd_sandbox_up(args: argparse.Namespace) -> int:
    state = _sandbox(args).up(
        base_port=args.base_port, terminals=args.terminals, chaos=args.chaos,
        gamedb=args.gamedb, seed=args.seed,
    )
    print(_sandbox_summary(state))
    if args.chaos:
        print(f"chaos: one random fault every {args.chaos:g} s, nothing healed by the sandbox")
    return 0


def cmd_sandbox_status(args: argparse.Namespace) -> int:
    box = _sandbox(args)
    status = box.status()
    if args.json:
        _print_json(status)
        return 0
    print(f"sandbox in {box.dir}: running, pid {status['pid']}, up {status['uptime_s']} s")
    if status.get("chaos_interval_s"):
        print(f"chaos every {status['chaos_interval_s']:g} s")
    faults = status["active_faults"]
    if not faults:
        print("no active faults")
    for target, names in sorted(faults.items()):
        print(f"  {target}: {', '.join(names)}")
    return 0


def cmd_sandbox_inject(args: argparse.Namespace) -> int:
    _sandbox(args).inject(args.fault, args.target)
    print(f"injected {args.fault} into {args.target}")
    return 0


def cmd_sandbox_heal(args: argparse.Namespace) -> int:
    _sandbox(args).heal(args.target)
    print(f"healed {args.target or 'every target'}")
    return 0


def cmd_sandbox_down(args: argparse.Namespace) -> int:
    stopped = _sandbox(args).down()
    print("sandbox stopped" if stopped else "no sandbox was running")
    return 0


def cmd_sandbox_inventory(args: argparse.Namespace) -> int:
    from sandbox.inventory import render_inventory
    from sandbox.topology import Layout

    state = _sandbox(args).describe()
    layout = Layout(Path(state["dir"]), state["base_port"], state["terminals"])
    text = render_inventory(layout, relative_to=Path(args.out).resolve().parent)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


# -- people ---------------------------------------------------------------------------
def cmd_ack(args: argparse.Namespace) -> int:
    import os

    from runbooks.acknowledge import ack_incident

    if args.inventory:
        os.environ["FLOORWATCH_INVENTORY"] = args.inventory
    try:
        print(ack_incident(args.incident, args.person, args.note, args.code))
    except (FloorwatchError, ValueError) as exc:
        print(f"floorwatch: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    import os

    from runbooks import holds

    if args.inventory:
        os.environ["FLOORWATCH_INVENTORY"] = args.inventory
    try:
        if args.hold_command == "list":
            print(holds.listing())
        elif args.hold_command == "set":
            print(holds.place(args.target, args.person, args.code, args.reason))
        else:
            print(holds.release(args.target, args.person, args.code))
    except (FloorwatchError, ValueError) as exc:
        print(f"floorwatch: {exc}", file=sys.stderr)
        return 1
    return 0


# -- analysts ---------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from floorwatch.report import run_report_cli

    inventory = Path(args.inventory) if args.inventory else None
    return run_report_cli(args.period, Path(args.out), args.url, inventory)


# -- security ---------------------------------------------------------------------------
def cmd_users(args: argparse.Namespace) -> int:
    from floorwatch import cli_security as sec

    if args.users_command == "add":
        print(sec.users_add(args.name, args.role, store_url=args.url))
    elif args.users_command == "remove":
        print(sec.users_remove(args.name, store_url=args.url))
    elif args.users_command == "list":
        print(sec.users_list(store_url=args.url, include_removed=args.all))
    elif args.users_command == "enroll":
        sec.users_enroll(args.name, store_url=args.url)
    elif args.users_command == "new-key":
        print(sec.users_new_key())
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from floorwatch import cli_security as sec

    if args.audit_command == "verify":
        ok, message = sec.audit_verify(args.url, args.export)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    sys.stdout.write(sec.audit_export(args.url, args.since, args.format))
    return 0


# -- main job ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    import os

    from deployments.main import run_main_job

    code = run_main_job(
        inventory_path=Path(args.inventory), sandbox=not args.no_sandbox, chaos=args.chaos,
        port=args.port,
    )
    # Everything started is stopped by now; an interrupted Prefect runner can leave
    # non-daemon threads behind that would keep the interpreter alive, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floorwatch", description="Runbook automation for operating gaming platforms.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-inventory", help="validate an inventory file; exit 1 on problems")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_inventory)

    db = sub.add_parser("db", help="the store").add_subparsers(dest="db_command", required=True)
    for name, func, text in (("info", cmd_db_info, "where the store is and what it holds"),
                             ("upgrade", cmd_db_upgrade, "migrate the store to the newest schema")):
        p = db.add_parser(name, help=text)
        p.add_argument("--url", default=None,
                       help="SQLAlchemy URL (default: FLOORWATCH_DATABASE_URL or local SQLite)")
        p.set_defaults(func=func)

    sb = sub.add_parser("sandbox", help="the simulated gaming platform")
    sbs = sb.add_subparsers(dest="sandbox_command", required=True)

    def sandbox_cmd(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        p = sbs.add_parser(name, help=text)
        p.add_argument("--dir", default=".floorwatch/sandbox", help="the sandbox's folder")
        p.set_defaults(func=func)
        return p

    p = sandbox_cmd("up", cmd_sandbox_up, "start every part and print what runs where")
    p.add_argument("--base-port", type=int, default=18000)
    p.add_argument("--terminals", type=int, default=8)
    p.add_argument("--chaos", type=float, default=None, metavar="SECONDS",
                   help="inject one random fault every SECONDS; nothing is healed")
    p.add_argument("--gamedb", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--seed", type=int, default=None, help="chaos random seed")
    p = sandbox_cmd("status", cmd_sandbox_status, "what runs and which faults are active")
    p.add_argument("--json", action="store_true")
    p = sandbox_cmd("inject", cmd_sandbox_inject, "inject FAULT into TARGET")
    p.add_argument("fault")
    p.add_argument("target")
    p = sandbox_cmd("heal", cmd_sandbox_heal, "heal TARGET, or everything")
    p.add_argument("target", nargs="?", default=None)
    sandbox_cmd("down", cmd_sandbox_down, "stop everything")
    p = sandbox_cmd("inventory", cmd_sandbox_inventory,
                    "write an inventory describing the running sandbox")
    p.add_argument("--out", default="inventory.sandbox.yaml")

    p = sub.add_parser("report", help="build a period availability report (CSV, Parquet, HTML)")
    p.add_argument("--period", required=True, help="YYYY-MM, YYYY-MM-DD or YYYY-Www")
    p.add_argument("--out", required=True, help="folder for the report files")
    p.add_argument("--url", default=None, help="store URL (default: the configured store)")
    p.add_argument("--inventory", default=None,
                   help="inventory for maintenance windows and SLOs")
    p.set_defaults(func=cmd_report)

    from floorwatch.audit import parse_since
    from floorwatch.security import ROLES

    users = sub.add_parser("users", help="the roster: who may do what")
    us = users.add_subparsers(dest="users_command", required=True)
    for name, text in (("add", "add a person with a role"), ("remove", "remove a person"),
                       ("list", "list people and roles"),
                       ("enroll", "new authenticator secret: prints a QR code"),
                       ("new-key", "print a fresh FLOORWATCH_ROSTER_KEY")):
        p = us.add_parser(name, help=text)
        p.add_argument("--url", default=None, help="store URL")
        if name in ("add", "remove", "enroll"):
            p.add_argument("name")
        if name == "add":
            p.add_argument("role", choices=[str(r) for r in ROLES])
        if name == "list":
            p.add_argument("--all", action="store_true", help="include removed people")
        p.set_defaults(func=cmd_users)

    audit = sub.add_parser("audit", help="the tamper-evident audit log")
    aus = audit.add_subparsers(dest="audit_command", required=True)
    p = aus.add_parser("verify", help="check the hash chain; names the first bad row")
    p.add_argument("--url", default=None)
    p.add_argument("--export", default=None, help="a JSONL live export to compare with")
    p.set_defaults(func=cmd_audit)
    p = aus.add_parser("export", help="print entries as JSON lines or CSV")
    p.add_argument("--url", default=None)
    p.add_argument("--since", type=parse_since, default=None,
                   help="ISO time or an age such as 24h or 7d")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("ack", help="acknowledge an incident (stops its escalation)")
    p.add_argument("incident", type=int)
    p.add_argument("--person", required=True, help="who acknowledges")
    p.add_argument("--code", default="", help="your one-time code from your authenticator app")
    p.add_argument("--note", default="")
    p.add_argument("--inventory", default=None,
                   help="inventory file (default: FLOORWATCH_INVENTORY or the example)")
    p.set_defaults(func=cmd_ack)

    hold = sub.add_parser("hold", help="take a target out of automation's hands, or give it "
                          "back").add_subparsers(dest="hold_command", required=True)
    for name, text in (("list", "what is held, since when, by whom and why"),
                       ("set", "hold TARGET: no incident opens for it, no runbook acts on it"),
                       ("release", "release TARGET: Floorwatch watches and repairs it again")):
        p = hold.add_parser(name, help=text)
        if name != "list":
            p.add_argument("target")
            p.add_argument("--person", required=True, help="who holds or releases it")
            p.add_argument("--code", default="",
                           help="your one-time code from your authenticator app")
        if name == "set":
            p.add_argument("--reason", required=True, help="why, for the team and the audit")
        p.add_argument("--inventory", default=None,
                       help="inventory file (default: FLOORWATCH_INVENTORY or the example)")
        p.set_defaults(func=cmd_hold)

    p = sub.add_parser("run", help="the main job: store, Prefect server and UI, deployments")
    p.add_argument("--inventory", default=DEFAULT_INVENTORY)
    p.add_argument("--no-sandbox", action="store_true",
                   help="do not start the sandbox the inventory describes (its `sandbox:` section)")
    p.add_argument("--chaos", type=float, default=300.0, metavar="SECONDS",
                   help="sandbox chaos interval (default 300; 0 turns chaos off)")
    p.add_argument("--port", type=int, default=4200, help="Prefect server and UI port")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (FloorwatchError, ValueError) as exc:
        print(f"floorwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
