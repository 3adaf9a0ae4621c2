"""The Alembic migrations build exactly the schema the models describe, and go down again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from enrs.kit.db import Database
from enrs.kit.migrate import alembic_config


def test_models_match_migrations(database_url: str) -> None:
    command.check(alembic_config(database_url))  # raises when autogenerate finds a difference


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    command.check(cfg)


def test_alembic_ini_for_developers(tmp_path: Path) -> None:
    """`alembic -c alembic.ini …` (new revisions, history, upgrade) finds the packaged folder,
    from any working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env["ENRS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'dev.db'}"
    ini = Path(__file__).parents[2] / "alembic.ini"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cfg = alembic_config(env["ENRS_DATABASE_URL"])
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with Database(env["ENRS_DATABASE_URL"]).engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
