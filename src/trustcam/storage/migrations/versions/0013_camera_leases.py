"""Camera leases: the one worker allowed to write a camera's events and footage, and its fencing token, which every
such write checks (``storage/leases.py``). Empty until a worker runs with leases (single-box mode never does).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "camera_leases",
        sa.Column("camera", sa.String(63), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("token", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("expires_at", sa.Float, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("camera_leases")
