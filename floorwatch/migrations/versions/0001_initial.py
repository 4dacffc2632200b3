"""Initial schema: probe results, incidents and their timeline, actions, the notification
outbox and the append-only, hash-chained audit log.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from floorwatch.errors import StoreError

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the store's types: a migration must not change when store.py does.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Ts = sa.DateTime(timezone=True)

APPEND_ONLY_MESSAGE = "audit_log is append-only"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: UPDATE refused'); END""",
    f"""CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: DELETE refused'); END""",
]

POSTGRESQL_TRIGGERS = [
    f"""CREATE FUNCTION floorwatch_audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION floorwatch_audit_log_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION floorwatch_audit_log_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "probe_results",
        sa.Column("id", Id, primary_key=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("zone", sa.String(100), nullable=False),
        sa.Column("probe_kind", sa.String(50), nullable=False),
        sa.Column("ts", Ts, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("values", Json, nullable=False),
        sa.Column("error_class", sa.String(100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_probe_results"),
    )
    op.create_index("ix_probe_results_target_ts", "probe_results", ["target", "ts"])

    op.create_table(
        "incidents",
        sa.Column("id", Id, primary_key=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("zone", sa.String(100), nullable=False),
        sa.Column("fault_kind", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("parent_incident_id", Id, nullable=True),
        sa.Column("onset_at", Ts, nullable=False),
        sa.Column("detected_at", Ts, nullable=False),
        sa.Column("acknowledged_at", Ts, nullable=True),
        sa.Column("remediation_started_at", Ts, nullable=True),
        sa.Column("recovered_at", Ts, nullable=True),
        sa.Column("closed_at", Ts, nullable=True),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
        sa.ForeignKeyConstraint(
            ["parent_incident_id"],
            ["incidents.id"],
            name="fk_incidents_parent_incident_id_incidents",
        ),
        sa.CheckConstraint(
            "state IN ('open', 'acknowledged', 'remediating', 'resolved', 'escalated')",
            name="ck_incidents_state",
        ),
    )
    op.create_index(
        "uq_incidents_one_open",
        "incidents",
        ["target", "fault_kind"],
        unique=True,
        sqlite_where=sa.text("state != 'resolved'"),
        postgresql_where=sa.text("state != 'resolved'"),
    )

    op.create_table(
        "incident_events",
        sa.Column("id", Id, primary_key=True),
        sa.Column("incident_id", Id, nullable=False),
        sa.Column("ts", Ts, nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incident_events"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_incident_events_incident_id_incidents"
        ),
    )
    op.create_index("ix_incident_events_incident_id_ts", "incident_events", ["incident_id", "ts"])

    op.create_table(
        "actions",
        sa.Column("id", Id, primary_key=True),
        sa.Column("incident_id", Id, nullable=True),
        sa.Column("runbook", sa.String(100), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("step", sa.String(100), nullable=False),
        sa.Column("parameters", Json, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("evidence", Json, nullable=False),
        sa.Column("started_at", Ts, nullable=False),
        sa.Column("finished_at", Ts, nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_actions_incident_id_incidents"
        ),
        sa.CheckConstraint(
            "outcome IN ('planned', 'succeeded', 'failed', 'skipped', 'rolled_back')",
            name="ck_actions_outcome",
        ),
    )
    op.create_index("ix_actions_incident_id", "actions", ["incident_id"])

    op.create_table(
        "notifications",
        sa.Column("id", Id, primary_key=True),
        sa.Column("incident_id", Id, nullable=True),
        sa.Column("event", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Ts, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("delivered_at", Ts, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_notifications_incident_id_incidents"
        ),
        sa.UniqueConstraint("idempotency_key", name="uq_notifications_idempotency_key"),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name="ck_notifications_state"
        ),
    )
    op.create_index(
        "ix_notifications_state_next_attempt_at", "notifications", ["state", "next_attempt_at"]
    )

    op.create_table(
        "audit_log",
        sa.Column("id", Id, primary_key=True),
        sa.Column("ts", Ts, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("details", Json, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        # One successor per entry: the chain cannot fork.
        sa.UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),
        sa.UniqueConstraint("hash", name="uq_audit_log_hash"),
    )
    backend = op.get_bind().dialect.name
    triggers = {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRESQL_TRIGGERS}
    if backend not in triggers:
        raise StoreError(f"cannot make audit_log append-only on {backend}: sqlite or postgresql")
    for statement in triggers[backend]:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS floorwatch_audit_log_append_only()")
    for table in (
        "audit_log",
        "notifications",
        "actions",
        "incident_events",
        "incidents",
        "probe_results",
    ):
        op.drop_table(table)
