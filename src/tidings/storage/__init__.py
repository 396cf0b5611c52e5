"""The server's database layer (SQLite by default, PostgreSQL by URL), shared by server/ and
safety/. Schema changes are Alembic migrations in `migrations/`, applied at start-up."""
