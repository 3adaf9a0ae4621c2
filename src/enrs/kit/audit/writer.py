"""Group commit for the audit chain.

Appending to the chain takes the chain-head lock (one writer at a time across every process),
so one transaction per request caps the platform near a few hundred audited requests per second.
An :class:`AuditWriter` is one thread per process that drains the entries every request of that
process submitted meanwhile and appends them in a single transaction: the lock is taken once per
batch. A request still waits until its own entries are committed before it answers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from enrs.kit.audit.trail import AuditEntry, write_entries
from enrs.kit.db import Database

log = logging.getLogger(__name__)
_Item = tuple[list[AuditEntry], "Future[list[int]]"]


class AuditWriter:
    def __init__(self, db: Database, *, max_batch: int = 500) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, entries: Sequence[AuditEntry]) -> Future[list[int]]:
        """Queue ``entries``; the future gives their sequence numbers once committed."""
        future: Future[list[int]] = Future()
        if not entries:
            future.set_result([])
            return future
        self._ensure_started()
        self._queue.put((list(entries), future))
        return future

    def write(self, entries: Sequence[AuditEntry], timeout: float = 60) -> list[int]:
        """Blocking :meth:`submit`, for code running in a worker thread."""
        return self.submit(entries).result(timeout=timeout)

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _next_batch(self, first: _Item) -> tuple[list[_Item], bool]:
        batch, count, stop = [first], len(first[0]), False
        while count < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            batch.append(item)
            count += len(item[0])
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._next_batch(first)
            try:
                seqs = write_entries(self._db, [e for entries, _ in batch for e in entries])
            except Exception as exc:
                log.exception("audit batch of %d request(s) not written", len(batch))
                for _, future in batch:
                    future.set_exception(exc)
            else:
                start = 0
                for entries, future in batch:
                    future.set_result(seqs[start : start + len(entries)])
                    start += len(entries)
            if stop:
                return

    def close(self, timeout: float = 30) -> None:
        """Write what is queued, then stop the thread."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)
