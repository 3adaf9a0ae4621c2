"""The blocking query reads through its indexes once the registry has grown and has statistics
(as autovacuum keeps them on PostgreSQL, a required server setting: see the README)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from tests.identity.test_service import CONFIG, MATCHER
from tests.support.identities import person

from enrs.identity import repository, service
from enrs.kit.db import Database

CHU = "1.2.250.1.71.4.2.2.1"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _born(i: int) -> date:
    return date(1930, 1, 1) + timedelta(days=7 * i)


def _name(i: int) -> str:
    """A distinct name of letters only (a phonetic key drops digits)."""
    out = "NOM"
    for _ in range(3):
        out += "BCDFGJKLMNPRSTVZ"[i % 16] + "AEIOU"[(i // 16) % 5]
        i //= 80
    return out


def test_the_blocking_query_uses_its_indexes_after_the_registry_grew(db: Database) -> None:
    with db.transaction() as session:
        for i in range(3000):
            data = person(
                CHU,
                str(i),
                birth_name=_name(i),
                given_names=[f"PRENOM{i % 97}"],
                birth_date=_born(i),
            )
            service.feed(session, MATCHER, data, actor="test", config=CONFIG)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")  # what autovacuum does on PostgreSQL
    probe = service.prepare(
        person(CHU, "probe", birth_name=_name(2999), birth_date=_born(2999)), CONFIG
    )
    with db.transaction() as session:
        assert len(repository.candidates(session, probe.traits)) == 1
        statement, params = repository.blocking_sql(session, probe.traits) or ("", ())
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            plan = [str(row[0]) for row in conn.exec_driver_sql(f"EXPLAIN {statement}", params)]
            scans = [line for line in plan if "Seq Scan on identity_source" in line]
        else:
            plan = [
                str(row[-1])
                for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
            ]
            scans = [line for line in plan if line.startswith("SCAN identity_source")]
    assert plan and not scans, plan
