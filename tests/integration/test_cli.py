"""The `floorwatch` command as a user runs it: exit codes and what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from floorwatch.inventory import load_inventory
from sandbox.topology import free_base_port

ROOT = Path(__file__).resolve().parents[2]


def floorwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "floorwatch.cli", *args], capture_output=True, text=True,
        timeout=120, cwd=ROOT, env={**os.environ, **(env or {})},
    )


def test_check_inventory_accepts_the_example() -> None:
    """A valid inventory exits 0 with a one-line summary."""
    result = floorwatch("check-inventory", "inventory.example.yaml")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "35 targets" in result.stdout


def test_check_inventory_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    """A bad inventory exits 1 and prints each problem located by file, line and field."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "zones:\n"
        "  - name: core\n"
        "    targets:\n"
        "      - name: api\n"
        "        kind: webserver\n"
        "        connection: {url: 'http://127.0.0.1:1/health'}\n"
        "      - name: db\n"
        "        kind: tcp_endpoint\n"
        "        connection: {host: 127.0.0.1, port: 5432}\n"
        "        probes:\n"
        "          - {kind: tcp, interval: 0, timeout: 2}\n"
    )
    result = floorwatch("check-inventory", str(bad))
    assert result.returncode == 1
    assert f"{bad}:6 zones[0].targets[0].kind: unknown target kind 'webserver'" in result.stderr
    assert f"{bad}:12 zones[0].targets[1].probes[0].interval: must be > 0" in result.stderr


def test_db_upgrade_then_info_shows_the_sqlite_store(tmp_path: Path) -> None:
    """`db upgrade` migrates a fresh SQLite store and `db info` shows its path and revision."""
    env = {"FLOORWATCH_HOME": str(tmp_path), "FLOORWATCH_DATABASE_URL": ""}
    env.pop("FLOORWATCH_DATABASE_URL")
    os_env = {k: v for k, v in os.environ.items() if k != "FLOORWATCH_DATABASE_URL"}
    upgrade = subprocess.run(
        [sys.executable, "-m", "floorwatch.cli", "db", "upgrade"], capture_output=True,
        text=True, timeout=60, cwd=tmp_path, env={**os_env, **env},
    )
    assert upgrade.returncode == 0, upgrade.stderr
    info = subprocess.run(
        [sys.executable, "-m", "floorwatch.cli", "db", "info"], capture_output=True,
        text=True, timeout=60, cwd=tmp_path, env={**os_env, **env},
    )
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["backend"] == "sqlite"
    assert Path(data["path"]).resolve() == (tmp_path / "floorwatch.db").resolve()
    assert data["revision"] == data["head"]


def test_sandbox_commands_drive_a_whole_life_cycle(tmp_path: Path) -> None:
    """up prints what runs where, inject/status/heal work, inventory renders, down stops it."""
    box = str(tmp_path / "sb")
    up = floorwatch("sandbox", "up", "--dir", box, "--base-port", str(free_base_port()),
                    "--terminals", "2")
    try:
        assert up.returncode == 0, up.stderr
        assert "api-gateway" in up.stdout
        assert "hall-1-t02" in up.stdout
        assert json.loads((tmp_path / "sb" / "sandbox.json").read_text())["ready"] is True

        inject = floorwatch("sandbox", "inject", "--dir", box, "paper_out", "hall-1-t01-printer")
        assert inject.returncode == 0, inject.stderr
        status = floorwatch("sandbox", "status", "--dir", box)
        assert "hall-1-t01-printer: paper_out" in status.stdout

        wrong = floorwatch("sandbox", "inject", "--dir", box, "paper_out", "api-gateway")
        assert wrong.returncode == 2
        assert "does not apply to 'api-gateway'" in wrong.stderr

        out = tmp_path / "sandbox-inventory.yaml"
        rendered = floorwatch("sandbox", "inventory", "--dir", box, "--out", str(out))
        assert rendered.returncode == 0, rendered.stderr
        inventory = load_inventory(out)
        assert inventory.target("hall-1-t02").connection.device == str(
            tmp_path / "sb" / "dev" / "hall-1-t02.console"
        )

        heal = floorwatch("sandbox", "heal", "--dir", box)
        assert heal.returncode == 0
        assert "no active faults" in floorwatch("sandbox", "status", "--dir", box).stdout
    finally:
        down = floorwatch("sandbox", "down", "--dir", box)
    assert down.returncode == 0
    assert "sandbox stopped" in down.stdout
    again = floorwatch("sandbox", "status", "--dir", box)
    assert again.returncode == 2
    assert "no sandbox runs" in again.stderr


@pytest.mark.parametrize("args", [["sandbox", "inject"], ["db"], []])
def test_incomplete_commands_print_usage_and_exit_2(args: list[str]) -> None:
    """A command missing its arguments prints usage and exits 2, as argparse does."""
    result = floorwatch(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_ack_of_an_unknown_incident_exits_1(tmp_path: Path) -> None:
    """`floorwatch ack` on an incident that does not exist says so and exits 1."""
    env = {"FLOORWATCH_HOME": str(tmp_path)}
    os_env = {k: v for k, v in os.environ.items() if k != "FLOORWATCH_DATABASE_URL"}
    subprocess.run([sys.executable, "-m", "floorwatch.cli", "db", "upgrade"], check=True,
                   capture_output=True, cwd=tmp_path, env={**os_env, **env}, timeout=60)
    result = subprocess.run(
        [sys.executable, "-m", "floorwatch.cli", "ack", "4242", "--person", "dana",
         "--inventory", str(ROOT / "inventory.example.yaml")],
        capture_output=True, text=True, cwd=tmp_path, env={**os_env, **env}, timeout=60,
    )
    assert result.returncode == 1
    assert "4242" in result.stderr


def test_hold_commands_list_and_refuse_clearly(tmp_path: Path) -> None:
    """`floorwatch hold`: an empty list says so; holding an unknown target, holding without a
    valid code and releasing what is not held each exit 1 with the reason, holding nothing."""
    os_env = {k: v for k, v in os.environ.items() if k != "FLOORWATCH_DATABASE_URL"}
    env = {**os_env, "FLOORWATCH_HOME": str(tmp_path),
           "FLOORWATCH_INVENTORY": str(ROOT / "inventory.example.yaml")}

    def hold(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "floorwatch.cli", "hold", *args],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)

    subprocess.run([sys.executable, "-m", "floorwatch.cli", "db", "upgrade"], check=True,
                   capture_output=True, cwd=tmp_path, env=env, timeout=60)
    assert hold("list").stdout.strip() == "nothing is held"
    unknown = hold("set", "app-9", "--person", "dana", "--reason", "rewiring")
    assert unknown.returncode == 1
    assert "app-9" in unknown.stderr
    no_code = hold("set", "app-primary", "--person", "dana", "--reason", "rewiring")
    assert no_code.returncode == 1
    assert "hold app-primary refused" in no_code.stderr
    not_held = hold("release", "app-primary", "--person", "dana")
    assert not_held.returncode == 1
    assert "'app-primary' is not held" in not_held.stderr
    assert hold("list").stdout.strip() == "nothing is held"
