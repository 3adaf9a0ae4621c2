"""Live readers of the event outbox (:mod:`enrs.kit.events`): what wakes them.

A live reader (a chat stream held open by a browser) reads the committed events from the
outbox table, in ``id`` (commit) order, from the last one it sent; between two reads it waits
on an :class:`EventWaker`, one per process, so that a new event reaches every open stream of
every HTTP worker at once without each of them asking the database:

- on PostgreSQL one connection ``LISTEN``\\ s to :data:`enrs.kit.events.CHANNEL`, which every
  transaction that emits events ``NOTIFY``\\ s at its commit (PostgreSQL is the broker);
- on SQLite (one machine) one thread looks at the outbox's last id every :data:`POLL` seconds.

The wake-up carries nothing: a lost one (a reconnection of the listening connection) costs at
most a reader's ``timeout``, never an event, since events are always read from the table.

Use: ``token = waker.token()`` *before* reading the table, then ``await waker.wait(token,
timeout)``: an event committed between the read and the wait still wakes the reader.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import psycopg
from sqlalchemy import func, select

from enrs.kit.db import Database
from enrs.kit.events import CHANNEL, EventRecord

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between two looks at the outbox on SQLite
RETRY = 1.0  # seconds before listening again after a lost connection


class EventWaker:
    """Wakes this process's live readers when events are committed (see the module)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: asyncio.Event | None = None

    def token(self) -> asyncio.Event:
        """What to wait on after the next read of the outbox (starts the waker if needed)."""
        self._ensure_started()
        assert self._current is not None
        return self._current

    async def wait(self, token: asyncio.Event, timeout: float) -> bool:
        """Until an event committed since ``token`` was taken, or ``timeout`` seconds:
        whether it was woken."""
        try:
            await asyncio.wait_for(token.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop:  # the first reader, or a new event loop (tests)
                self._loop, self._current = loop, asyncio.Event()
            if self._thread is not None:
                return
            target = self._listen if not self.db.is_sqlite else self._poll
            self._thread = threading.Thread(target=target, name="event-waker", daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        """In the event loop: release every waiter of the current token, start a new one."""
        previous, self._current = self._current, asyncio.Event()
        if previous is not None:
            previous.set()

    def _signal(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _poll(self) -> None:
        last: int | None = None
        while not self._stop.is_set():
            try:
                with self.db.connect(write=False) as conn:
                    newest = conn.execute(select(func.max(EventRecord.id))).scalar()
            except Exception:
                log.warning("event waker: the outbox could not be read", exc_info=True)
                newest = last
            if last is not None and newest != last:
                self._signal()
            last = newest
            self._stop.wait(POLL)

    def _listen(self) -> None:
        url = self.db.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._signal()  # what was committed while not listening is read now
                    while not self._stop.is_set():
                        for _note in conn.notifies(timeout=1.0):
                            self._signal()
            except psycopg.Error:
                log.warning("event waker: listening again in %.0f s", RETRY, exc_info=True)
                self._stop.wait(RETRY)
