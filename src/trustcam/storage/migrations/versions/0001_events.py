"""Create the events table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("camera", sa.String(63), nullable=False, index=True),
        sa.Column("label", sa.String(32), nullable=False, index=True),
        sa.Column("track_id", sa.Integer, nullable=False),
        sa.Column("start", sa.Float, nullable=False, index=True),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("best_score", sa.Float, nullable=False),
        sa.Column("box", sa.JSON, nullable=False),
        sa.Column("zones", sa.JSON, nullable=False),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("threat", sa.String(16), nullable=False, index=True),
        sa.Column("snapshot", sa.String(1024), nullable=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("events")
