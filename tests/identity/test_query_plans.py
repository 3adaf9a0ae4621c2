"""The blocking query keeps reading through its indexes while the registry grows from empty,
the tables never analysed (autovacuum off or behind): on PostgreSQL, no plan chosen while
``identity_source`` was a few pages may stay in use (see ``repository._planned_rows``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from tests.identity.test_service import CONFIG
from tests.support.identities import person

from enrs.identity import repository, service
from enrs.identity.matching.compare import Traits
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.kit.db import Database

CHU = "1.2.250.1.71.4.2.2.1"
MATCHER = EmbeddedMatcher(MatchModel.load())


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    # One connection, as a listener process keeps it: psycopg prepares its statements on it.
    database = Database(database_url, pre_ping=False)
    yield database
    database.dispose()


def _full_scans(session: Session, traits: Traits) -> int:
    """Full scans of ``identity_source`` by the blocking query: counted by PostgreSQL over
    five runs in this transaction; on SQLite, those of its plan."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        sql = text(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'identity_source'"
        )
        before = int(conn.execute(sql).scalar_one())
        for _ in range(5):
            assert len(repository.candidates(session, traits)) == 1
        return int(conn.execute(sql).scalar_one()) - before
    assert len(repository.candidates(session, traits)) == 1
    statement, params = repository.blocking_sql(session, traits) or ("", ())
    plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
    return sum(1 for row in plan if str(row[-1]).startswith("SCAN identity_source"))


def test_the_blocking_query_uses_its_indexes_after_the_registry_grew(db: Database) -> None:
    def born(i: int) -> date:
        return date(1930, 1, 1) + timedelta(days=7 * i)

    for i in range(3000):  # a new registry fed one identity per transaction
        data = person(
            CHU, str(i), birth_name=f"NOM{i}", given_names=[f"PRENOM{i % 97}"], birth_date=born(i)
        )
        with db.transaction() as session:
            service.feed(session, MATCHER, data, actor="test", config=CONFIG)
    probe = service.prepare(
        person(CHU, "probe", birth_name="NOM2999", birth_date=born(2999)), CONFIG
    )
    with db.transaction() as session:
        assert _full_scans(session, probe.traits) == 0
