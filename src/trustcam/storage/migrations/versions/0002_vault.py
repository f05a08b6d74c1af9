"""Evidence vault: segments with wrapped keys and hash chain, signed checkpoints, deletions; legal hold.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("camera", sa.String(63), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("start", sa.Float, nullable=False, index=True),
        sa.Column("end", sa.Float, nullable=False, index=True),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("chain_hash", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.String(512), nullable=True),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("has_motion", sa.Integer, nullable=False, server_default="0"),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("held", sa.Integer, nullable=False, server_default="0"),
        sa.Column("deleted_at", sa.Float, nullable=True),
        sa.Column("deletion_reason", sa.String(255), nullable=True),
        sa.UniqueConstraint("camera", "seq", name="uq_segments_camera_seq"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("camera", sa.String(63), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("chain_hash", sa.String(64), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
    )
    op.create_table(
        "deletions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False, index=True),
        sa.Column("camera", sa.String(63), nullable=False),
        sa.Column("segment_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
    )
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("held", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("held")
    op.drop_table("deletions")
    op.drop_table("checkpoints")
    op.drop_table("segments")
