"""Indexes in the event list's order (start descending, id) alone, per camera and per camera and label: a page of
GET /api/events is an index walk without a sort and its total a count over the index.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_events_start_id": [sa.text("start DESC"), "id"],
    "ix_events_camera_start_id": ["camera", sa.text("start DESC"), "id"],
    "ix_events_camera_label_start_id": ["camera", "label", sa.text("start DESC"), "id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "events", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="events")
