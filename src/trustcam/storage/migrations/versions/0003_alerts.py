"""Alert outbox and dead-letter queue (deliveries per sink).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(32), nullable=False, index=True),
        sa.Column("sink", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("camera", sa.String(63), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("alert", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.String(1024), nullable=True),
        sa.Column("created", sa.Float, nullable=False, index=True),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.Column("latency", sa.Float, nullable=True),
        sa.UniqueConstraint("alert_id", "sink", name="uq_alert_outbox_alert_sink"),
    )
    op.create_index("ix_alert_outbox_due", "alert_outbox", ["sink", "state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_outbox_due", table_name="alert_outbox")
    op.drop_table("alert_outbox")
