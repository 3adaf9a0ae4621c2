"""Protocol listeners that ``enrs serve`` starts, each in its own process of one process tree.

HTTP is the first; the MLLP, DICOM and SMTP listeners register the same way: a name and a
blocking ``run(settings)`` function. The supervisor stops every listener when one dies.

A listener may serve from several processes (:func:`run_group`): it binds its socket, then
runs one process per slot, every one accepting on that socket (as uvicorn's HTTP workers do).
On SQLite, the writers of those processes take turns (:class:`SqliteWriters`).
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from enrs.kit.db import Database
from enrs.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    name: str
    describe: Callable[[Settings], str]
    run: Callable[[Settings], None]


def supervise(listeners: list[Listener], settings: Settings) -> int:
    """Run each listener in a child process; return when all stopped (SIGTERM/SIGINT stop all)."""
    ctx = multiprocessing.get_context("spawn")
    procs: dict[str, BaseProcess] = {}
    for listener in listeners:
        proc: BaseProcess = ctx.Process(
            target=listener.run, args=(settings,), name=f"enrs-{listener.name}"
        )
        proc.start()
        procs[listener.name] = proc
        log.info(
            "started %s listener (pid %s): %s", listener.name, proc.pid, listener.describe(settings)
        )
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    while not stopping:
        dead = [name for name, p in procs.items() if not p.is_alive()]
        if dead:
            log.error("listener(s) %s stopped; stopping the platform", ", ".join(dead))
            exit_code = 1
            break
        time.sleep(0.5)
    for proc in procs.values():
        if proc.is_alive():
            proc.terminate()
    for proc in procs.values():
        proc.join(timeout=15)
        if proc.is_alive():
            proc.kill()
    return exit_code


def run_group(
    target: Callable[[int], None], processes: int, *, name: str, grace: float = 15
) -> int:
    """Run ``target(0)`` in this process and ``target(1)`` … ``target(processes - 1)`` each in a
    child process (spawned: ``target`` and what it holds, e.g. a listening socket, must
    pickle). Returns when ``target(0)`` returns, after stopping the children (SIGTERM, SIGKILL
    after ``grace`` seconds); returns 1 if a child had stopped on its own, else 0.

    A child that stops on its own stops the group: this process gets SIGTERM, so ``target(0)``
    must return on SIGTERM. A child whose parent disappeared stops itself (SIGTERM)."""
    ctx = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = []
    for slot in range(1, processes):
        child: BaseProcess = ctx.Process(
            target=_child, args=(target, slot, os.getpid()), name=f"{name}-{slot}"
        )
        child.start()
        children.append(child)
    stopping = threading.Event()
    died = threading.Event()

    def watch() -> None:
        wait([c.sentinel for c in children])
        if not stopping.is_set():
            gone = ", ".join(f"{c.name} ({c.exitcode})" for c in children if not c.is_alive())
            log.error("%s: process(es) %s stopped; stopping the group", name, gone)
            died.set()
            os.kill(os.getpid(), signal.SIGTERM)

    if children:
        threading.Thread(target=watch, name=f"{name}-watch", daemon=True).start()
    try:
        target(0)
    finally:
        stopping.set()
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(timeout=grace)
            if child.is_alive():
                child.kill()
                child.join()
    return 1 if died.is_set() else 0


def _child(target: Callable[[int], None], slot: int, parent: int) -> None:
    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        log.warning("parent process %s is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="orphan-watch", daemon=True).start()
    target(slot)


class SqliteWriters:
    """The writers of one SQLite database in the processes of a listener group, in turn.

    SQLite has one writer at a time, and a writer finding the database locked sleeps and polls
    (busy timeout): under load, writers idle while the lock is free. A turn is taken on a
    thread lock, then an exclusive ``flock`` of a file beside the database, whose release wakes
    the next process at once. The connections of ``db`` leave the WAL checkpoints to a thread
    (:meth:`start_checkpoints`), out of the turns."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        database = db.engine.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            self._fd = os.open(f"{database}.writers-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._stop = threading.Event()
        self._checkpoints: threading.Thread | None = None

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def start_checkpoints(self, every: float = 0.2, restart_every: int = 5) -> None:
        """Checkpoint the WAL from a thread rather than in the commit crossing the automatic
        threshold, inside a turn: every ``every`` seconds out of the turns (``PASSIVE``: the
        copy into the database file), and every ``restart_every`` of those in a turn
        (``RESTART``: the rest, waiting for older readers, so that the next writer starts the
        WAL over; readers that never pause would otherwise let it grow without end). Call
        before the first connection."""
        event.listen(self.db.engine, "connect", _no_autocheckpoint)
        self._checkpoints = threading.Thread(
            target=self._checkpoint, args=(every, restart_every), name="wal", daemon=True
        )
        self._checkpoints.start()

    def _checkpoint(self, every: float, restart_every: int) -> None:
        count = 0
        while not self._stop.wait(every):
            count += 1
            try:
                with self.db.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                    if count % restart_every == 0:
                        with self:
                            self._restart(conn)
            except Exception:
                log.exception("WAL checkpoint failed")

    @staticmethod
    def _restart(conn: Connection) -> None:
        # Wait for older readers briefly, not for the busy timeout: other writers wait for
        # this turn; a reader still there at the next round is waited for then.
        timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        conn.exec_driver_sql("PRAGMA busy_timeout=100")
        try:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)")
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(timeout or 0)}")

    def close(self) -> None:
        self._stop.set()
        if self._checkpoints is not None:
            self._checkpoints.join(30)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()
