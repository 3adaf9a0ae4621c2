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
- **Checkpoints out of the turns** (long-running processes: :class:`Checkpointer`). By default
  the commit that makes the WAL cross 1 000 pages copies it into the database file, fsync
  included, inside its write turn: on a large registry every other writer waits for it. A
  thread of each server process does it instead: every 0.2 s a ``PASSIVE`` checkpoint (the
  copy, which writers need not wait for; if another process's is running, this one skips),
  and, when the WAL has grown past 64 MB anyway, a ``RESTART`` in a write turn (the rest, so
  that the next writer starts the WAL over: readers that never pause could let it grow).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

from enrs.kit.errors import ServiceUnavailable

log = logging.getLogger(__name__)

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
            folder = os.path.dirname(os.path.abspath(database))
            if not os.path.isdir(folder):  # say so, rather than fail on the lock file's name
                raise ServiceUnavailable(
                    f"the database folder {folder} does not exist: run the command from the "
                    "folder holding it, or set ENRS_DATA_DIR (`enrs migrate` creates it)"
                )
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


_TURNS: weakref.WeakKeyDictionary[Engine, WriteTurns] = weakref.WeakKeyDictionary()


def turns_of(engine: Engine) -> WriteTurns:
    """The write turns of an engine set up by :func:`install`."""
    return _TURNS[engine]


def install(engine: Engine, *, read_only: bool = False) -> WriteTurns:
    """Set up ``engine``'s SQLite connections (see the module docstring); returns its turns."""
    turns = _TURNS[engine] = WriteTurns(engine.url.database)
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


def no_autocheckpoint(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


class Checkpointer:
    """Checkpoints the WAL of ``engine``'s database from a thread (see the module docstring);
    ``engine``'s connections no longer checkpoint at commit. Start it before the engine's
    first connection; :meth:`stop` when the process ends."""

    def __init__(
        self,
        engine: Engine,
        turns: WriteTurns,
        *,
        every: float = 0.2,
        restart_above: int = 64 * 1024 * 1024,
    ) -> None:
        self.engine, self.turns = engine, turns
        self.every, self.restart_above = every, restart_above
        self._wal = f"{engine.url.database}-wal"
        self._stop = threading.Event()
        event.listen(engine, "connect", no_autocheckpoint)
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self.engine.connect() as conn:
                    raw = conn.connection.dbapi_connection
                    assert raw is not None
                    raw.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if os.path.getsize(self._wal) > self.restart_above:
                        self._restart(raw)
            except FileNotFoundError:
                pass  # no WAL yet
            except Exception:
                log.exception("WAL checkpoint failed")

    def _restart(self, raw: Any) -> None:
        # In a write turn, waiting for older readers briefly rather than for the busy
        # timeout (writers wait for this turn); a reader still there is waited for next time.
        self.turns.acquire()
        try:
            raw.execute("PRAGMA busy_timeout=100")
            try:
                raw.execute("PRAGMA wal_checkpoint(RESTART)")
            finally:
                raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        finally:
            self.turns.release()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
