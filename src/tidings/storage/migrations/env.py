"""Alembic environment: migrations run on a connection handed in by `Database.migrate`."""

from __future__ import annotations

from alembic import context

import tidings.storage.safety_schema  # noqa: F401 - registers the safety tables on metadata
from tidings.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
