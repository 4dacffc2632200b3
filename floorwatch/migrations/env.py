"""Alembic environment: runs on the connection ``floorwatch.store.upgrade`` hands over, or on
an engine from ``store.make_engine`` (URL from ``store.database_url``) when run from the
``alembic`` command line with ``-c floorwatch/migrations/alembic.ini``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from floorwatch.store import database_url, make_engine, metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    backend = connection.dialect.name
    if backend == "postgresql":
        # Two workers starting together must not both run the same migration.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('floorwatch.migrate'))"))
    elif backend == "sqlite" and not getattr(
        connection.connection.driver_connection, "in_transaction", True
    ):
        # Take the write lock first: serialises concurrent upgrades and makes SQLite's DDL
        # transactional (pysqlite would otherwise autocommit each CREATE).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=backend == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Render the SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the given connection, or on a fresh engine for the configured store."""
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or database_url())
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
