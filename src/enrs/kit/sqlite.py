"""SQLite as the platform's embedded database: how its connections are set up, and how its
writers, in every thread and process, take turns.

- Every connection: WAL, ``synchronous=FULL`` (a commit is on disk before it returns: NORMAL
  may lose the last commits on a power failure), foreign keys, a busy timeout. SQLAlchemy, not
  the driver, decides when a transaction begins (``BEGIN`` is issued here, on the driver's
  connection: it needs none of SQLAlchemy's execution machinery).
- Read-only connections (a pool of their own) are opened with ``PRAGMA query_only``: a unit of
  work declared read-only that writes fails loudly.
- **Write turns.** SQLite has one writer at a time. A writer asking for the lock while another
  holds it sleeps and polls (SQLite's busy handler: 1, 2, 5, 10 … 100 ms), so under load
  writers idle while the lock is free, and a transaction that read first and then writes
  fails at once if another writer committed meanwhile. A writing unit of work therefore takes
  its *turn* first — a thread lock, then an exclusive ``flock`` of a file beside the database
  (``<db>.writers-lock``), whose release wakes the next process at once — then ``BEGIN
  IMMEDIATE`` (the write lock, at the start); the turn is released once its ``COMMIT`` or
  ``ROLLBACK`` has returned. Connections not asking for a turn (migrations, maintenance, tests)
  fall back on the busy timeout.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

# The execution option asking a connection's transactions to take a write turn.
WRITE_OPTION = "enrs_tx_write"
_HOLDS = "enrs.sqlite.turn"
BUSY_TIMEOUT_S = 30


def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_conn.isolation_level = None  # BEGIN is ours (see _on_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cur.close()


def _on_connect_read_only(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
    _on_connect(dbapi_conn, record)
    dbapi_conn.execute("PRAGMA query_only=1")


class WriteTurns:
    """The turns of the writers of one database file: in this process (a thread lock) and
    across processes (``flock`` of ``<file>.writers-lock``; none for an in-memory database)."""

    def __init__(self, database: str | None) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        if database and database != ":memory:" and not database.startswith("file:"):
            self._fd = os.open(f"{database}.writers-lock", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        if not self._lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise sqlite3.OperationalError("database is locked (no write turn within 30 s)")
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _end(dbapi_conn: Any, statement: str, info: dict[Any, Any], turns: WriteTurns) -> None:
    """Run ``COMMIT`` or ``ROLLBACK`` ourselves, then give the turn back (the driver's own
    commit or rollback that follows finds no transaction: a no-op)."""
    try:
        if statement == "COMMIT" or dbapi_conn.in_transaction:
            dbapi_conn.execute(statement)
    finally:
        if info.pop(_HOLDS, False):
            turns.release()


def install(engine: Engine, *, read_only: bool = False) -> WriteTurns:
    """Set up ``engine``'s SQLite connections (see the module docstring); returns its turns."""
    turns = WriteTurns(engine.url.database)
    event.listen(engine, "connect", _on_connect_read_only if read_only else _on_connect)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        if not conn.get_execution_options().get(WRITE_OPTION):
            dbapi_conn.execute("BEGIN")
            return
        turns.acquire()
        conn.info[_HOLDS] = True  # the pool entry's info: follows the driver's connection
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            conn.info.pop(_HOLDS, None)
            turns.release()
            raise

    @event.listens_for(engine, "commit")
    def _on_commit(conn: Connection) -> None:
        if conn.info.get(_HOLDS):
            _end(conn.connection.dbapi_connection, "COMMIT", conn.info, turns)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn: Connection) -> None:
        if conn.info.get(_HOLDS):
            _end(conn.connection.dbapi_connection, "ROLLBACK", conn.info, turns)

    @event.listens_for(engine, "reset")
    def _on_reset(dbapi_conn: Any, record: ConnectionPoolEntry, _state: Any) -> None:
        # A connection returned to the pool without a commit or a rollback of its own.
        if record.info.get(_HOLDS):
            _end(dbapi_conn, "ROLLBACK", record.info, turns)

    return turns
