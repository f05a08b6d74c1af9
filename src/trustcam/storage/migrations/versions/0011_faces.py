"""Face recognition: enrolled identities and their encrypted templates; events get ``sub_label`` (identity, "unknown
face" or "erased"), the distance to the matched identity and the margin to the next one (NULL for every existing
event).

The per-identity data keys are deliberately not here: they live in ``<data_dir>/faces/keys/``, so a copy of the
database taken before an erasure cannot decrypt the erased templates.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "face_identities",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("consent", sa.String(2000), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True, index=True),
    )
    op.create_table(
        "face_templates",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("identity_id", sa.String(32), sa.ForeignKey("face_identities.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("quality", sa.Float, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("sub_label", sa.String(64), nullable=True))
        batch.add_column(sa.Column("face_distance", sa.Float, nullable=True))
        batch.add_column(sa.Column("face_margin", sa.Float, nullable=True))
    op.create_index("ix_events_sub_label", "events", ["sub_label"])


def downgrade() -> None:
    op.drop_index("ix_events_sub_label", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("face_margin")
        batch.drop_column("face_distance")
        batch.drop_column("sub_label")
    op.drop_table("face_templates")
    op.drop_table("face_identities")
