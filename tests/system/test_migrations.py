"""The Alembic migrations build exactly the schema the models describe, and go down again."""

from __future__ import annotations

from alembic import command

from enrs.kit.migrate import alembic_config


def test_models_match_migrations(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises when autogenerate finds a difference


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    command.check(cfg)
