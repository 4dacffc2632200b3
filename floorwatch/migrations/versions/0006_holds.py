"""Holds: a target taken out of Floorwatch's hands at run time, for example a primary server
fenced by fail_over_server. While held, no incident opens for it or for what runs on it, and
no runbook acts on it, until a person releases it. At most one active hold per target.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the store's types: a migration must not change when store.py does.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "holds",
        sa.Column("id", Id, nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("incident_id", Id, nullable=True),
        sa.Column("set_by", sa.String(100), nullable=False),
        sa.Column("set_at", Ts, nullable=False),
        sa.Column("released_at", Ts, nullable=True),
        sa.Column("released_by", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name="fk_holds_incident_id_incidents"),
    )
    op.create_index(
        "uq_holds_one_active", "holds", ["target"], unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_holds_one_active", table_name="holds")
    op.drop_table("holds")
