"""Alembic environment: run revisions on the engine handed over by `schema.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from ratecard.adapters.db.engine import make_engine
from ratecard.adapters.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        assert url, "set sqlalchemy.url or hand an engine to ratecard.adapters.db.schema.migrate"
        engine = make_engine(url)
    assert isinstance(engine, Engine)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
