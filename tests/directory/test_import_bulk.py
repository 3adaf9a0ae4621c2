"""The bulk paths of the import: a first load builds the tables' indexes after the rows
(and PostgreSQL stages by ``COPY``); what must hold is what the slower path gave — the same
indexes and foreign keys afterwards, nothing lost when the load fails, the first of two
lines with one key kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text
from tests.directory.test_import import line, rpps, run, write

from enrs.directory.models import PROFESSIONAL_FTS, Activity, Professional
from enrs.directory.repository import ACTIVITY, PROFESSIONAL
from enrs.kit.db import Database, Substring, indexes_rebuilt

P = Professional


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def schema(conn: Connection) -> set[tuple[str, str]]:
    """The definitions of the directory's indexes and foreign keys, as the database has
    them."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
                "('directory_professional', 'directory_activity') UNION ALL "
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid "
                "IN ('directory_professional'::regclass, 'directory_activity'::regclass)"
            )
        )
    else:
        rows = conn.execute(
            text(
                "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE tbl_name IN "
                "('directory_professional', 'directory_activity') UNION ALL "
                "SELECT 'fk' || id, \"table\" || '.' || \"to\" "
                "FROM pragma_foreign_key_list('directory_activity')"
            )
        )
    return {(str(name), str(definition)) for name, definition in rows}


def test_a_first_load_leaves_every_index_and_key_as_it_was(db: Database, tmp_path: Path) -> None:
    with db.engine.connect() as conn:
        before = schema(conn)
    assert any("trgm" in d or "fts" in n for n, d in before) or db.engine.dialect.name == "sqlite"
    done = run(db, write(tmp_path / "a.txt", *(line(n) for n in range(1, 6))))
    assert done.error is None and done.counts["directory_activity"]["new"] == 5
    with db.engine.connect() as conn:
        assert schema(conn) == before
    # The indexes built afterwards serve the searches: a name's inside, an exact RPPS.
    with db.transaction(write=False) as session:
        inside = Substring([P.n_family, P.n_given], "om3", PROFESSIONAL_FTS, P.id)
        assert session.scalars(select(P.family).where(inside)).all() == ["NOM3"]
        assert session.scalar(select(P.family).where(P.id_nat_ps == f"8{rpps(4)}")) == "NOM4"


def test_a_load_that_fails_with_its_indexes_dropped_keeps_them(db: Database) -> None:
    with db.engine.connect() as conn:
        before = schema(conn)
        conn.rollback()
        with (
            pytest.raises(RuntimeError),
            conn.begin(),
            indexes_rebuilt(conn, ACTIVITY),
            indexes_rebuilt(conn, PROFESSIONAL),
        ):
            assert schema(conn) < before  # dropped for the load
            raise RuntimeError("the load failed")
        assert schema(conn) == before


def test_of_two_lines_with_one_key_the_first_is_kept(db: Database, tmp_path: Path) -> None:
    """A professional's lines that do not follow each other, an activity line given twice:
    one row each, from their first line (staged by COPY on PostgreSQL)."""
    path = write(
        tmp_path / "b.txt",
        line(1),
        line(2),
        line(1, **{"Nom d'exercice": "AUTRE"}, street="Schoelcher"),
        line(2),
    )
    done = run(db, path)
    assert done.error is None
    assert done.counts["directory_professional"]["new"] == 2
    assert done.counts["directory_activity"]["new"] == 2  # the street is not in its key
    with db.transaction(write=False) as session:
        names = dict(session.execute(select(P.id_nat_ps, P.family)).all())
        assert names == {f"8{rpps(1)}": "NOM1", f"8{rpps(2)}": "NOM2"}
        where = select(Activity.address_line).where(Activity.id_nat_ps == f"8{rpps(1)}")
        assert session.scalars(where).all() == ["12 Rue Victor Hugo"]
