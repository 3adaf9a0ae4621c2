"""Database plumbing: engine, one transaction per request, the declarative base.

Services receive a :class:`~sqlalchemy.orm.Session` and only ``flush()``; the framework layer
(:class:`enrs.kit.http.TransactionalRoute`, the protocol listeners) commits once, before the
response or ACK is sent. Side effects registered with :func:`after_commit` run only after a
successful commit and are dropped on rollback.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Engine,
    Insert,
    MetaData,
    Select,
    Table,
    and_,
    bindparam,
    column,
    create_engine,
    event,
    or_,
    table,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql import visitors
from sqlalchemy.types import TypeDecorator

from enrs.kit import sqlite

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table, with stable constraint names."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _postgresql_on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    # A commit is durable only with synchronous_commit other than "off" (the server's or the
    # database's default may turn it off); "local", "on", "remote_*" all wait for the local
    # WAL flush. fsync and full_page_writes are server-wide: see durability_problems().
    with dbapi_conn.cursor() as cur:
        cur.execute("SHOW synchronous_commit")
        row = cur.fetchone()
        if row is not None and row[0] == "off":
            cur.execute("SET synchronous_commit TO on")
    dbapi_conn.commit()


# Connections kept open per process. A request holds one from its first query to its end, on
# one of the 40 threads of the HTTP worker's pool (AnyIO's default), plus the audit writer: a
# smaller pool makes the overflow connections be opened and closed at every request under load
# (on SQLite each opening runs the connection's PRAGMAs). SQLite connections are file handles;
# PostgreSQL ones are server processes (100 allowed by default), so fewer are kept there. An
# HTTP worker admits no more requests at once than its pool serves (:mod:`enrs.kit.admission`).
SQLITE_POOL, POSTGRESQL_POOL = 48, 16


def make_engine(
    url: str, *, pool_size: int | None = None, pre_ping: bool = True, read_only: bool = False
) -> Engine:
    """Create an engine for ``url``: SQLite in WAL mode with durable commits (``read_only``:
    connections that refuse writes), or PostgreSQL with pre-ping (unless ``pre_ping`` is off:
    no round trip at each checkout; a connection found dead then fails its unit of work, and
    the pool is renewed)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": sqlite.BUSY_TIMEOUT_S},
            pool_size=pool_size or SQLITE_POOL,
        )
        sqlite.install(engine, read_only=read_only)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=pre_ping,
        pool_size=pool_size or POSTGRESQL_POOL,
        max_overflow=pool_size or POSTGRESQL_POOL,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
    )
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgresql_on_connect)
        event.listen(engine, "first_connect", _collation_reader(engine.dialect))
    return engine


# Set on a PostgreSQL dialect when its database orders text by code point (``C``, ``POSIX``,
# ``C.UTF-8``): a prefix range on a column is then exactly "starts with" (:class:`Prefix`).
CODE_POINT_ORDER = "enrs_code_point_order"


def _collation_reader(dialect: Any) -> Any:
    def listener(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()")
            row = cur.fetchone()
        dbapi_conn.commit()
        collation = str(row[0]) if row else ""
        exact = collation in ("C", "POSIX") or collation.startswith(("C.", "POSIX."))
        setattr(dialect, CODE_POINT_ORDER, exact)

    return listener


def durability_problems(engine: Engine) -> list[str]:
    """Server settings under which an acknowledged commit may be lost on a crash: PostgreSQL's
    ``fsync`` or ``full_page_writes`` off (server-wide; ``synchronous_commit`` is set per
    connection, see above). SQLite: none (the engine sets ``synchronous=FULL``)."""
    if engine.dialect.name != "postgresql":
        return []
    problems = []
    with engine.connect() as conn:
        for name in ("fsync", "full_page_writes"):
            value = conn.exec_driver_sql(f"SHOW {name}").scalar()
            if value != "on":
                problems.append(f"PostgreSQL {name} is {value!r}: commits may be lost on a crash")
    return problems


def statistics_problems(engine: Engine) -> list[str]:
    """Server settings under which the planner's statistics go stale as tables grow:
    PostgreSQL's ``autovacuum`` off. Queries then keep plans made for small tables (a
    registry fed from empty slowed fourfold in 150 s, docs/benchmarks.md). SQLite: none."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        value = conn.exec_driver_sql("SHOW autovacuum").scalar()
    if value == "on":
        return []
    return [f"PostgreSQL autovacuum is {value!r}: run ANALYZE as tables grow, or turn it on"]


_COMMIT_ORDER_KEY = 0x454E5245  # "ENRE": rows numbered in commit order (the event outbox)


def lock_commit_order(conn: Connection) -> None:
    """Make the rows this transaction inserts from now on take their ids, from a sequence, in
    commit order: on PostgreSQL ids are allocated at insert and transactions commit in
    another order, so a transaction-level advisory lock, held until the commit, serialises
    the inserts-to-commit of every transaction that takes it; on SQLite writers already commit
    one at a time, in the order they write (nothing to take). Take it last, just before the
    commit (after the audit chain's head: always in that order)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _COMMIT_ORDER_KEY})


def notify_at_commit(conn: Connection, channel: str) -> None:
    """Wake the listeners of ``channel`` when this transaction commits (nothing if it rolls
    back): on PostgreSQL a ``NOTIFY``, delivered at commit; on SQLite nothing, the listeners
    look at the table themselves (:class:`enrs.kit.live.EventWaker`)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:c, '')"), {"c": channel})


def _retry_until(attempt: Callable[[], bool], stop: threading.Event, every: float) -> bool:
    """``attempt()`` every ``every`` seconds until it succeeds (``True``) or ``stop`` is set
    (``False``)."""
    while not attempt():
        if stop.wait(every):
            return False
    return True


class Database:
    """The engine and session factories of one process.

    :meth:`session` gives a session for a unit of work that writes (``write=True``: on SQLite
    its transaction takes the write lock at BEGIN and waits for it) or only reads;
    :meth:`transaction` runs one such unit of work. ``sessionmaker`` makes sessions without
    a mode (SQLite's deferred transactions), for tests and maintenance."""

    def __init__(self, url: str, *, pre_ping: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, pre_ping=pre_ping)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        # Writing units of work: on SQLite, a write turn and the write lock at BEGIN (see
        # kit/sqlite.py); read-only ones: on SQLite, connections refusing writes.
        self._writer = self.engine.execution_options(**{sqlite.WRITE_OPTION: True})
        on_sqlite = self.engine.dialect.name == "sqlite"
        self._reader = make_engine(url, read_only=True) if on_sqlite else self.engine
        self._checkpointer: sqlite.Checkpointer | None = None

    def start_checkpoints(self) -> None:
        """For a long-running process (a server), before its first connection: SQLite's WAL is
        checkpointed from a thread of its own, out of the writers' turns
        (:class:`~enrs.kit.sqlite.Checkpointer`), until :meth:`dispose`. Elsewhere, nothing."""
        database = self.engine.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return
        if self._checkpointer is None:
            self._checkpointer = sqlite.Checkpointer(self.engine, sqlite.turns_of(self.engine))
            event.listen(self._reader, "connect", sqlite.no_autocheckpoint)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def engines(self) -> tuple[Engine, ...]:
        """The engines whose pools units of work draw from: one on PostgreSQL; on SQLite the
        writers' and the readers' (a unit uses one of them)."""
        return (self.engine,) if self._reader is self.engine else (self.engine, self._reader)

    def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def session(self, *, write: bool) -> Session:
        """A new session (its transaction begins at its first statement)."""
        bind = self._writer if write else self._reader
        return Session(bind=bind, expire_on_commit=False, autoflush=True)

    def connect(self, *, write: bool) -> Connection:
        """A connection whose transactions are in that mode (see :meth:`session`)."""
        return (self._writer if write else self._reader).connect()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """One unit of work: commit on success (then run after-commit hooks), else roll back."""
        session = self.session(write=write)
        try:
            yield session
            commit(session)
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def sole(self, name: str, stop: threading.Event, every: float = 1.0) -> Iterator[bool]:
        """Be the only process of any machine doing ``name`` on this database: wait (checking
        ``stop`` every ``every`` seconds) until no other holds it, then hold it for the
        ``with`` block. Yields ``False`` if stopped before. PostgreSQL: a session advisory
        lock on a connection of its own; SQLite: an exclusive lock on a file beside the
        database (processes of one machine, as SQLite itself)."""
        if self.is_sqlite:
            held = self._sole_file(name, stop, every)
        else:
            held = self._sole_advisory(name, stop, every)
        with held as got:
            yield got

    @contextmanager
    def _sole_file(self, name: str, stop: threading.Event, every: float) -> Iterator[bool]:
        database = self.engine.url.database or ""
        path = f"{database}-{name}.lock" if database and database != ":memory:" else None
        if path is None:
            yield True
            return
        with open(path, "a") as handle:

            def attempt() -> bool:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    return False

            if not _retry_until(attempt, stop, every):
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _sole_advisory(self, name: str, stop: threading.Event, every: float) -> Iterator[bool]:
        key = zlib.crc32(name.encode())
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            lock = text("SELECT pg_try_advisory_lock(:k)")
            if not _retry_until(lambda: bool(conn.execute(lock, {"k": key}).scalar()), stop, every):
                yield False
                return
            try:
                yield True
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()
        if self._reader is not self.engine:
            self._reader.dispose()


def after_commit(session: Session, hook: Callable[[], None]) -> None:
    """Queue ``hook`` to run once the session's transaction has committed."""
    session.info.setdefault("after_commit", []).append(hook)


def after_rollback(session: Session, hook: Callable[[], None]) -> None:
    """Queue ``hook`` to run if the session's transaction rolls back instead of committing
    (to undo what it did outside the database: a blob written for rows never committed)."""
    session.info.setdefault("after_rollback", []).append(hook)


def commit(session: Session) -> None:
    """Commit and run queued after-commit hooks; hooks never undo the commit."""
    session.commit()
    session.info.pop("after_rollback", None)
    hooks: list[Callable[[], None]] = session.info.pop("after_commit", [])
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-commit hook failed")


@event.listens_for(Session, "after_rollback")
def _drop_hooks(session: Session) -> None:
    session.info.pop("after_commit", None)
    hooks: list[Callable[[], None]] = session.info.pop("after_rollback", [])
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-rollback hook failed")


BULK_CACHE_MIB = 256


def prepare_bulk(conn: Connection) -> None:
    """Before a bulk load on ``conn``: on SQLite, a page cache of ``BULK_CACHE_MIB`` for this
    connection (with the default 2 MiB, inserting millions of rows into large indexes keeps
    reading pages back from the file); elsewhere nothing."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_MIB * 1024}")


def insert_rows_ignoring_duplicates(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows`` (all with the same keys, ``table``'s columns; plain strings, numbers or
    ``None``) into ``table``, skipping those whose unique key is there already, through the
    driver's own ``executemany`` of the statement compiled once: none of SQLAlchemy's
    per-row work, for bulk loads."""
    if not rows:
        return
    columns = list(rows[0])
    if conn.dialect.name == "postgresql":
        _copy_ignoring_duplicates(conn, table, columns, rows)
        return
    compiled = insert_ignoring_duplicates(conn, table).compile(
        dialect=conn.dialect, column_keys=columns
    )
    if compiled.positional:
        order = compiled.positiontup or []
        conn.exec_driver_sql(str(compiled), [tuple(row[c] for c in order) for row in rows])
    else:
        conn.exec_driver_sql(str(compiled), list(rows))


@contextmanager
def indexes_rebuilt(conn: Connection, table: Table) -> Iterator[None]:
    """For a bulk load into ``table`` within the transaction ``conn`` holds: its secondary
    indexes (not those of its primary key and unique constraints) dropped, and on
    PostgreSQL its foreign keys, then made again from their own definitions once the block
    is done. Building an index once from sorted rows costs a fraction of keeping it up to
    date row by row. Both databases change their schema within a transaction: an error in
    the block leaves everything to the caller's rollback. On PostgreSQL the table is locked
    (readers wait) until the commit."""
    name = table.name
    if conn.dialect.name == "postgresql":
        indexes = conn.execute(
            text(
                "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid "
                "WHERE x.indrelid = CAST(:t AS regclass) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
            ),
            {"t": name},
        ).all()
        keys = conn.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype = 'f'"
            ),
            {"t": name},
        ).all()
    else:
        indexes = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"
            ),
            {"t": name},
        ).all()
        keys = []
    quote = conn.dialect.identifier_preparer.quote
    for key, _ in keys:
        conn.exec_driver_sql(f"ALTER TABLE {quote(name)} DROP CONSTRAINT {quote(key)}")
    for index, _ in indexes:
        conn.exec_driver_sql(f"DROP INDEX {quote(index)}")
    yield
    for _, definition in indexes:
        conn.exec_driver_sql(definition)
    for key, definition in keys:
        conn.exec_driver_sql(f"ALTER TABLE {quote(name)} ADD CONSTRAINT {quote(key)} {definition}")


def _copy_ignoring_duplicates(
    conn: Connection, table: Table, columns: list[str], rows: Sequence[dict[str, Any]]
) -> None:
    """PostgreSQL: ``rows`` sent by ``COPY`` (the bulk path: no statement per row) into a
    temporary table numbering them, then inserted in that order, skipping keys there already
    (``COPY`` itself cannot skip them)."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.enrs_bulk")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE enrs_bulk ON COMMIT DROP AS "  # noqa: S608 (the code's names)
        f"SELECT {names}, 0 AS enrs_row FROM {quote(table.name)} WITH NO DATA"
    )
    driver = conn.connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY enrs_bulk ({names}, enrs_row) FROM STDIN") as copy,
    ):
        for number, row in enumerate(rows):
            copy.write_row([*(row[c] for c in columns), number])
    conn.exec_driver_sql(
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM enrs_bulk "  # noqa: S608
        "ORDER BY enrs_row ON CONFLICT DO NOTHING"
    )


def insert_ignoring_duplicates(conn: Connection, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` into ``table`` in ``conn``'s dialect (SQLite or
    PostgreSQL): rows whose unique key is already there are skipped."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite_dialect.insert(table).on_conflict_do_nothing()


# --- substring search: SQLite FTS5 trigram tables, PostgreSQL pg_trgm indexes -----------------


def is_dialect_only(name: str) -> bool:
    """A table or index that a migration makes for one database only, outside the models
    (SQLite FTS5 tables ``*_fts*`` and their shadow tables, PostgreSQL trigram indexes
    ``*_trgm``): autogenerate leaves them out."""
    return name.endswith("_trgm") or "_fts" in name


class _Condition(ColumnElement[bool]):
    """A dialect-specific condition compiled by ``@compiles`` in parentheses: used as it is
    within AND and OR (never compared with 1, as SQLAlchemy writes a boolean value on SQLite,
    which made a range a scan of the whole index)."""

    inherit_cache = False
    type = Boolean()

    def self_group(self, against: Any = None) -> ColumnElement[Any]:
        return self


class Prefix(_Condition):
    """``column`` starts with ``prefix``, as a range an index on the column serves in its
    order (``>= prefix AND < prefix⁺``; ``LIKE`` alone uses no index on SQLite). Where text is
    ordered by code point (SQLite's BINARY collation, a PostgreSQL database in ``C``) the
    range is the whole test; under a linguistic collation, which may place other strings in
    the range, ``LIKE 'prefix%'`` checks it too — only there: on PostgreSQL that second
    condition, served by a trigram index, made the planner expect a handful of rows and sort
    every match of a common prefix instead of reading the first page in index order."""

    # Not cacheable: the compile functions bind ``prefix`` (and the bound after it) themselves,
    # so a cached statement would keep the first search's text. Said per class, which also
    # keeps SQLAlchemy from warning on each new one.
    inherit_cache = False

    def __init__(self, column: ColumnElement[str], prefix: str) -> None:
        self.column, self.prefix = column, prefix

    def clauses(self, exact: bool) -> ColumnElement[bool]:
        starts = self.column.startswith(self.prefix, autoescape=True)
        if not self.prefix or ord(self.prefix[-1]) >= 0x10FFFF:
            return starts
        after = self.prefix[:-1] + chr(ord(self.prefix[-1]) + 1)
        ranged = and_(self.column >= self.prefix, self.column < after)
        return ranged if exact else and_(ranged, starts)


@compiles(Prefix)
def _prefix(element: Prefix, compiler: Any, **kw: Any) -> str:
    exact = bool(getattr(compiler.dialect, CODE_POINT_ORDER, False))
    return f"({compiler.process(element.clauses(exact), **kw)})"


@compiles(Prefix, "sqlite")
def _prefix_sqlite(element: Prefix, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses(True), **kw)})"


class Substring(_Condition):
    """Whether one of ``columns`` contains ``text`` (already folded like the columns), served
    by an index on both databases: on SQLite, the FTS5 trigram table ``fts_table``
    (external content, rowid = ``key``) for three characters or more; elsewhere (PostgreSQL,
    with ``gin_trgm_ops`` indexes on the columns), ``LIKE '%text%'``."""

    inherit_cache = False  # as :class:`Prefix`: the text is bound by the compile functions

    def __init__(
        self, columns: Sequence[ColumnElement[str]], text: str, fts_table: str, key: Any
    ) -> None:
        self.columns, self.text, self.fts_table, self.row_key = list(columns), text, fts_table, key


@compiles(Substring)
def _substring_like(element: Substring, compiler: Any, **kw: Any) -> str:
    clause = or_(*(c.contains(element.text, autoescape=True) for c in element.columns))
    return f"({compiler.process(clause, **kw)})"  # an OR: grouped within the search's AND


@compiles(Substring, "sqlite")
def _substring_fts(element: Substring, compiler: Any, **kw: Any) -> str:
    if len(element.text) < 3:  # a trigram index needs three characters
        return _substring_like(element, compiler, **kw)
    phrase: Any = bindparam(None, '"' + element.text.replace('"', '""') + '"', unique=True)
    table = compiler.preparer.quote(element.fts_table)
    key = compiler.process(element.row_key, **kw)
    match = compiler.process(phrase, **kw)
    # A compiler extension writes SQL: the table is the code's, quoted; the text is bound.
    return f"({key} IN (SELECT rowid FROM {table} WHERE {table} MATCH {match}))"  # noqa: S608


def substring_first(
    stmt: Select[Any], clauses: Sequence[ColumnElement[bool]], order: Sequence[Any]
) -> tuple[Select[Any], list[ColumnElement[bool]], list[Any]]:
    """On SQLite, a search whose conditions include a :class:`Substring` served by its FTS5
    table and whose rows are ordered by that table's key alone reads the FTS table first, in
    its rowid order, each match joined to its row: the first page comes from the first
    matches, where ``key IN (SELECT rowid … MATCH)`` collects every match before the page
    (100 000 names share a common trigram). ``stmt``, ``clauses`` and ``order``, rewritten
    so, or as they are."""
    for at, clause in enumerate(clauses):
        if not isinstance(clause, Substring) or len(clause.text) < 3 or len(order) != 1:
            continue
        key: ColumnElement[Any] = getattr(clause.row_key, "expression", clause.row_key)
        if not order[0].compare(key.asc()):
            continue
        fts = table(clause.fts_table, column("rowid"), column(clause.fts_table))
        phrase = '"' + clause.text.replace('"', '""') + '"'
        stmt = stmt.select_from(fts.join(key.table, key == fts.c.rowid))
        match = fts.c[clause.fts_table].op("MATCH", return_type=Boolean())(phrase)
        rest = [c for i, c in enumerate(clauses) if i != at]
        return stmt, [match, *rest], [fts.c.rowid.asc()]
    return stmt, list(clauses), list(order)


def plan_each_execution(session: Session, clauses: Sequence[ColumnElement[bool]]) -> None:
    """On PostgreSQL, when ``clauses`` hold a :class:`Substring`: the rest of the transaction
    planned for each execution's values. psycopg prepares a statement run five times and the
    server may then keep one generic plan for any value; for a substring that plan read the
    table in key order — right for a common one, the whole directory for one that matches
    nobody (0.5 s instead of 0.3 ms). Only there: planning every statement of the platform
    cost the identity feed a quarter of its throughput (docs/benchmarks.md)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    if any(isinstance(e, Substring) for c in clauses for e in visitors.iterate(c)):
        session.execute(text("SET LOCAL plan_cache_mode TO force_custom_plan"))
