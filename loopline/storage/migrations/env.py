"""Alembic's entry point for the platform schema; loopline passes the connection in
(``loopline.storage.database.Database.upgrade``), so nothing here reads a URL."""

from alembic import context

from loopline.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
