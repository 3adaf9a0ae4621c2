"""PostgreSQL plans each execution of a statement for its own values: psycopg prepares a
statement run five times, and the server may then keep one generic plan for any value. On
the national directory that plan, for ``name:contains``, read the table in key order: right
for a common substring, a read of 1.9 M rows (0.5 s) for a rare one (``bench/
directory_search.py``; the planner's choice depends on the data, so this test checks the
setting on the platform's connections, prepared statements included)."""

from __future__ import annotations

import pytest
from tests.conftest import BACKEND

from enrs.kit.db import Database

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL's plan cache")


def test_every_connection_plans_each_execution_for_its_values(database_url: str) -> None:
    db = Database(database_url)
    try:
        for _ in range(3):  # new connections and reused ones, across transactions
            with db.engine.connect() as conn:
                for _ in range(7):  # past psycopg's threshold: a prepared statement
                    mode = conn.exec_driver_sql("SHOW plan_cache_mode").scalar()
                    assert mode == "force_custom_plan"
                conn.commit()
    finally:
        db.dispose()
