"""Checkpoints sign the checkpoint policy in force and seal finished event records (checkpoint message v2).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("every", sa.Integer, nullable=True))  # None: a v1 checkpoint (no policy signed)
        batch.add_column(sa.Column("every_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("events", sa.JSON, nullable=True))  # [[event id, sha256, sealed record], ...]


def downgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("events")
        batch.drop_column("every_s")
        batch.drop_column("every")
