"""The outbox remembers where each message went: the channel's id for it (``delivery_ref``),
the thread an incident's conversation lives in (``thread_ref``), and a lease
(``locked_until``) so two delivery runs never send the same row at once. Queues are read per
(incident, channel) in order, hence the index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the store's types: a migration must not change when store.py does.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("delivery_ref", sa.String(200), nullable=True))
        batch.add_column(sa.Column("thread_ref", Json, nullable=True))
        batch.add_column(sa.Column("locked_until", Ts, nullable=True))
        batch.create_index("ix_notifications_incident_id_channel", ["incident_id", "channel"])


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_incident_id_channel")
        batch.drop_column("locked_until")
        batch.drop_column("thread_ref")
        batch.drop_column("delivery_ref")
