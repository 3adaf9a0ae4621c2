"""Run the Alembic migrations (the only way the schema is built, in tests too).

The migrations are package data (``enrs/migrations``): an installed wheel migrates as the work
tree does."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import enrs


def migrations_dir() -> Path:
    folder = Path(enrs.__file__).resolve().parent / "migrations"
    if not (folder / "env.py").is_file():
        raise RuntimeError(f"Alembic migrations not found at {folder}")
    return folder


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
