"""Actions name their target and whether automation took them: the remediation budget
counts automatic actions per target and window.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("target", sa.String(200), nullable=True))
        batch.add_column(
            sa.Column("automatic", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_actions_target_started_at", ["target", "started_at"])


def downgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.drop_index("ix_actions_target_started_at")
        batch.drop_column("automatic")
        batch.drop_column("target")
