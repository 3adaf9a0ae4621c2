"""A production start refuses a PostgreSQL server where an acknowledged commit may be lost on a
crash (fsync off); development warns. A real server of its own (initdb), since fsync is a
server-wide setting the shared test server cannot change for one test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tests.support.live_server import enrs_command, free_port
from tests.support.private_postgres import private_postgres, server_available

from enrs.kit.db import Database, durability_problems, statistics_problems
from enrs.kit.migrate import upgrade_head

pytestmark = pytest.mark.skipif(not server_available(), reason="PostgreSQL server binaries")


def test_a_server_without_fsync_is_refused_in_production(tmp_path: Path) -> None:
    with private_postgres({"fsync": "off"}) as admin_url:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE enrs"))
        admin.dispose()
        url = make_url(admin_url).set(database="enrs").render_as_string(hide_password=False)
        upgrade_head(url)
        db = Database(url)
        assert durability_problems(db.engine) == [
            "PostgreSQL fsync is 'off': commits may be lost on a crash"
        ]
        db.dispose()
        env = {
            "ENRS_DATA_DIR": str(tmp_path / "var"),
            "ENRS_DATABASE_URL": url,
            "ENRS_HTTP_PORT": str(free_port()),
            "ENRS_MLLP_PORT": "0",
            "ENRS_DICOM_PORT": "0",
            "ENRS_OID_ROOT": "1.2.250.1.71.9",
            "PATH": "/usr/bin:/bin",
        }
        refused = subprocess.run(
            enrs_command("serve"), env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2
        assert "error: PostgreSQL fsync is 'off'" in refused.stderr
        assert not (tmp_path / "var" / "keys").exists()  # refused before preparing anything


def test_the_default_server_settings_are_durable() -> None:
    with private_postgres() as admin_url:
        db = Database(admin_url)
        assert durability_problems(db.engine) == []
        assert statistics_problems(db.engine) == []
        db.dispose()


def test_a_server_without_autovacuum_is_warned_about() -> None:
    with private_postgres({"autovacuum": "off"}) as admin_url:
        db = Database(admin_url)
        assert statistics_problems(db.engine) == [
            "PostgreSQL autovacuum is 'off': run ANALYZE as tables grow, or turn it on"
        ]
        db.dispose()
