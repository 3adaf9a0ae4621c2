"""PostgreSQL plans a substring search for its values: psycopg prepares a statement run five
times, and the server may then keep one generic plan for any value. On the national
directory that plan, for ``name:contains``, read the table in key order — right for a
common substring, 1.9 M rows (0.5 s) for one that matches nobody (``bench/
directory_search.py``). The planner's choice depends on the data, so this test checks the
setting where it applies: within a substring search's transaction, and not beyond it (for
every statement it cost the identity feed a quarter of its throughput)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.conftest import BACKEND
from tests.directory.test_import import line, run, write

from enrs.directory import search
from enrs.kit.db import Database

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL's plan cache")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def test_a_substring_search_is_planned_for_its_values_and_only_it(
    db: Database, tmp_path: Path
) -> None:
    assert run(db, write(tmp_path / "a.txt", *(line(n) for n in range(1, 4)))).error is None
    for _ in range(3):  # past psycopg's threshold of five executions, on pooled connections
        with db.transaction(write=False) as session:
            found = search.search_practitioners(
                session, [("name:contains", "om2")], base_url="http://x/fhir", strict=False
            )
            assert len(found.resources) == 1
            mode = session.execute(text("SHOW plan_cache_mode")).scalar()
            assert mode == "force_custom_plan"
        with db.transaction(write=False) as session:
            search.search_practitioners(
                session, [("family", "nom")], base_url="http://x/fhir", strict=False
            )
            assert session.execute(text("SHOW plan_cache_mode")).scalar() != "force_custom_plan"
