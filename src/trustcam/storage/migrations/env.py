"""Alembic environment: migrations run on the connection trustcam hands over (see storage.database)."""

from __future__ import annotations

from alembic import context

from trustcam.storage.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
