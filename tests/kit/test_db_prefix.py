"""A name's start searched as an index range (``kit.db.Prefix``): the whole test where text is
ordered by code point, the range and ``LIKE`` under a linguistic collation, and the same
answers on the test database whichever it is."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from enrs.kit.db import CODE_POINT_ORDER, Database, Prefix


def test_the_range_alone_where_text_is_ordered_by_code_point() -> None:
    column = sa.column("n_family", sa.String)
    linguistic = postgresql.dialect()
    assert "LIKE" in str(Prefix(column, "mart").compile(dialect=linguistic))
    code_point = postgresql.dialect()
    setattr(code_point, CODE_POINT_ORDER, True)
    sql = str(Prefix(column, "mart").compile(dialect=code_point))
    assert "LIKE" not in sql and ">=" in sql and "<" in sql
    assert "LIKE" not in str(Prefix(column, "mart").compile(dialect=sqlite.dialect()))


def test_a_prefix_finds_exactly_the_strings_that_start_with_it(database_url: str) -> None:
    db = Database(database_url)
    names = sa.Table("prefix_names", sa.MetaData(), sa.Column("n", sa.String(32)))
    try:
        with db.engine.begin() as conn:
            names.create(conn)
            words = ["mar", "mart", "martin", "marta", "mar t", "maru", "marte%", "mas", "l'mart"]
            conn.execute(sa.insert(names), [{"n": w} for w in words])
        with db.engine.connect() as conn:

            def found(prefix: str) -> list[str]:
                stmt = sa.select(names.c.n).where(Prefix(names.c.n, prefix)).order_by(names.c.n)
                return list(conn.scalars(stmt))

            assert found("mart") == ["mart", "marta", "marte%", "martin"]
            assert found("marte%") == ["marte%"]  # a wildcard is a character
            assert found("mar ") == ["mar t"]
            if db.engine.dialect.name == "postgresql":
                collation = str(
                    conn.scalar(
                        sa.text(
                            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
                        )
                    )
                )
                code_point = collation in ("C", "POSIX") or collation.startswith(("C.", "POSIX."))
                assert getattr(db.engine.dialect, CODE_POINT_ORDER) is code_point
    finally:
        with db.engine.begin() as conn:
            names.drop(conn, checkfirst=True)
        db.dispose()


def test_beside_other_conditions_the_range_is_read_from_its_index() -> None:
    """Each condition renders as itself in parentheses: with another condition the range
    stays an index range on SQLite (a ``(…) = 1`` there made it a scan of the whole index),
    and a substring's ``OR`` of columns stays within the ``AND`` (unparenthesised, the
    other conditions applied to its last column only)."""
    from enrs.kit.db import Substring

    conn = sa.create_engine("sqlite://").connect()
    names = sa.Table(
        "names",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("n", sa.String),
        sa.Column("g", sa.String),
        sa.Column("kind", sa.String),
        sa.Index("ix_names_n", "n", "id"),
    )
    names.create(conn)
    conn.execute(
        sa.insert(names),
        [
            {"n": "martin", "g": "zoe", "kind": "b"},
            {"n": "leroy", "g": "mart", "kind": "b"},
            {"n": "mart", "g": "x", "kind": "a"},
        ],
    )
    stmt = sa.select(names.c.id).where(names.c.kind == "a", Prefix(names.c.n, "mar"))
    sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
    plan = " ".join(str(row) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "ix_names_n (n>? AND n<?)" in plan, plan
    assert list(conn.scalars(stmt)) == [3]
    inside = Substring([names.c.n, names.c.g], "ar", "unused", names.c.id)  # LIKE: < 3 letters
    assert list(conn.scalars(sa.select(names.c.id).where(inside, names.c.kind == "a"))) == [3]
    assert list(conn.scalars(sa.select(names.c.id).where(names.c.kind == "a", inside))) == [3]
