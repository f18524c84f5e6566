"""Bring a database to the current schema with the packaged Alembic revisions.

    >>> migrate("sqlite:///./var/ratecard.db")   # doctest: +SKIP

The same revisions run on SQLite and PostgreSQL. No ``alembic.ini`` is needed: the
configuration is built here and points at ``ratecard/adapters/db/migrations``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from ratecard.adapters.db.engine import make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(target: str | URL | Engine, revision: str = "head") -> str | None:
    """Upgrade ``target`` (a URL or an engine) to ``revision``; return the revision reached."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        command.upgrade(alembic_config(engine), revision)
        return current_revision(engine)
    finally:
        if engine is not target:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
