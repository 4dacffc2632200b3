"""The roster: who may act and with which role. Each person's TOTP secret is stored encrypted
(``floorwatch.roster``; the key stays outside the store), with the last code step they used so
a code cannot be replayed. Removed people keep their row: the audit log names them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the store's types: a migration must not change when store.py does.
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "roster",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("totp_secret", sa.Text(), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.Column("added_at", Ts, nullable=False),
        sa.Column("enrolled_at", Ts, nullable=True),
        sa.Column("removed_at", Ts, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_roster"),
        sa.CheckConstraint(
            "role IN ('operator', 'technician', 'administrator')", name="ck_roster_role"
        ),
    )


def downgrade() -> None:
    op.drop_table("roster")
