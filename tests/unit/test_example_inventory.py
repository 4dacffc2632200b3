"""The shipped example inventory describes exactly the sandbox."""

from __future__ import annotations

from pathlib import Path

from floorwatch.inventory import load_inventory
from sandbox import topology
from sandbox.inventory import example_layout, render_inventory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory.example.yaml"


def test_example_inventory_is_the_rendering_of_the_default_sandbox() -> None:
    """inventory.example.yaml equals what sandbox/inventory.py renders for the default layout."""
    expected = render_inventory(example_layout(ROOT), relative_to=ROOT)
    assert EXAMPLE.read_text() == expected, (
        "inventory.example.yaml is stale: regenerate it with `python -m sandbox.inventory`"
    )


def test_example_inventory_validates_and_names_every_sandbox_part() -> None:
    """The example loads cleanly and has a target for every simulated component."""
    inventory = load_inventory(EXAMPLE)
    names = {t.name for t in inventory.targets()}
    expected = (
        set(topology.HTTP_SERVICES) | set(topology.SERVERS) | {"gateway-dns", "game-db"}
        | {topology.terminal_name(i) for i in range(1, topology.DEFAULT_TERMINALS + 1)}
        | {topology.bill_acceptor_name(i) for i in range(1, topology.DEFAULT_TERMINALS + 1)}
        | {topology.printer_name(i) for i in range(1, topology.DEFAULT_TERMINALS + 1)}
    )
    assert expected <= names
    device = inventory.target("hall-1-t01").connection.device
    assert device is not None
    assert Path(device) == ROOT / ".floorwatch/sandbox/dev/hall-1-t01.console"
