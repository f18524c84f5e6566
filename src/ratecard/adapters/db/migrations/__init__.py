"""Alembic environment and revisions (loaded by path by `schema.migrate`)."""
