"""Alembic environment: the URL comes from the caller (``enrs migrate``) or from Settings."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from enrs.kit.db import is_dialect_only, make_engine
from enrs.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    from enrs.settings import Settings

    return Settings().database_url


def _in_models(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    """What autogenerate compares: not the tables and indexes a migration makes for one
    database only (``kit.db.is_dialect_only``)."""
    return not (reflected and name is not None and is_dialect_only(name))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=_in_models,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), pool_size=1)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
