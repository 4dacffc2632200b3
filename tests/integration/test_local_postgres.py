"""LocalPostgres, the throwaway PostgreSQL server the tests and the sandbox run on."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from floorwatch.errors import SandboxError
from sandbox.postgres import LocalPostgres
from tests.fixtures.postgres import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_base() -> Iterator[Path]:
    """A folder the postgres account can traverse, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="fw-pg-"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_server_restarts_on_its_data_and_stop_leaves_nothing(pg_base: Path) -> None:
    """Data survives a stop and restart; after stop no postmaster runs and the port is free."""
    port = free_port()
    server = LocalPostgres(pg_base / "data", port, fast=True)
    with server:
        url = server.create_database("game")
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{port}/game"
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="game") as c:
            c.execute("CREATE TABLE seen (n int)")
            c.execute("INSERT INTO seen VALUES (42)")
    assert not server.running()
    assert not _accepts(port)
    with server, psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="game") as c:
        assert c.execute("SELECT n FROM seen").fetchone() == (42,)
    assert not server.running()
    assert not _accepts(port)


def test_second_start_on_a_running_server_is_refused(pg_base: Path) -> None:
    """Starting a data folder that already runs raises SandboxError."""
    with LocalPostgres(pg_base / "data", free_port(), fast=True) as server:
        with pytest.raises(SandboxError, match="already running"):
            server.start()
        with pytest.raises(SandboxError, match="cannot create database 'postgres'"):
            server.create_database("postgres")


def test_socket_only_server_has_no_tcp_port_and_answers_on_its_socket(pg_base: Path) -> None:
    """tcp=False: nothing listens on the port; the Unix socket URL reaches the database, and
    creating it again with exist_ok keeps it."""
    import socket

    import sqlalchemy

    port = free_port()
    with LocalPostgres(pg_base / "data", port, fast=True, tcp=False) as server:
        server.create_database("prefect")
        server.create_database("prefect", exist_ok=True)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(
            ("127.0.0.1", port), timeout=2,
        ):
            pass
        engine = sqlalchemy.create_engine(server.socket_url("prefect", driver="psycopg"))
        try:
            with engine.connect() as conn:
                assert conn.execute(sqlalchemy.text("select current_database()")).scalar() == (
                    "prefect")
        finally:
            engine.dispose()


def test_non_loopback_address_is_refused(tmp_path: Path) -> None:
    """LocalPostgres will not listen beyond loopback."""
    with pytest.raises(SandboxError, match="loopback only"):
        LocalPostgres(tmp_path / "data", 5432, host="0.0.0.0")
