"""Probe results name the fault kinds they point at (empty for a passing result) and
which of the target's probes produced them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("probe_results") as batch:
        batch.add_column(sa.Column("faults", Json, nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(
            sa.Column("probe_id", sa.String(300), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("probe_results") as batch:
        batch.drop_column("probe_id")
        batch.drop_column("faults")
