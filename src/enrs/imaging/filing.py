"""Filing a received instance: the one code path of the DICOM listener's C-STORE
(:mod:`.dicom`) and of STOW-RS (:mod:`.web`).

:meth:`Filing.store` has the instance's DICOM file (PS3.10) written to the blob storage by a
writer thread while it checks and reads the data set, indexes it and records its audit entry
in one unit of work, committed once the file is durable; when that fails the bytes are
deleted, so nothing is kept of a failed instance. The DICOM listener's instances are filed
together (:meth:`Filing.start_group`: group commit, a savepoint each but the first). It
answers a DICOM status (PS3.4 B.2.3, PS3.7 C) and its comment; STOW-RS gives the same status
as the FailureReason of its response (PS3.18 10.5.3).

===========  ====================================================================
``0x0000``   stored (or archived already with the same bytes: a resend is a success)
``0x0124``   *Refused: Not Authorized*: the sender is not registered to store
``0x0111``   *Duplicate SOP Instance*: archived already with other content; the original
             is kept
``0xA900``   *Data Set does not match SOP Class*: the SOP class or instance differs from the
             request's, or the Study / Series Instance UID is missing
``0xC000``   *Cannot understand*: the data set is truncated or its encoding broken
``0xA700``   *Refused: Out of Resources*: the database, the blob storage or the audit trail
             failed (a transient failure: the sender keeps the instance and retries)
===========  ====================================================================
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from enrs.identity.config import IdentityConfig
from enrs.imaging import reports, service
from enrs.imaging.encoding import part10
from enrs.imaging.service import (
    DatasetMismatch,
    DuplicateInstance,
    Received,
    UnreadableDataset,
)
from enrs.kit.audit.trail import AuditEntry, Outcome
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database, utcnow
from enrs.kit.storage import BlobStorage
from enrs.kit.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

SUCCESS = 0x0000
NOT_AUTHORIZED = 0x0124
DUPLICATE_SOP_INSTANCE = 0x0111
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
AUDIT_TIMEOUT = 60.0
# Tries of an instance whose rows another association inserted meanwhile (a unique violation):
# its study, its series, then the instance itself may each be the one met, one after the other.
ATTEMPTS = 4
_UNWRITTEN = "the index cannot be written"
BLOB_WRITERS = 8  # threads writing blobs while the index is checked and written

_writers: ThreadPoolExecutor | None = None
_writers_lock = threading.Lock()


def _blob_writers() -> ThreadPoolExecutor:
    """The process's threads writing received instances' blobs (made at the first store)."""
    global _writers
    with _writers_lock:
        if _writers is None:
            _writers = ThreadPoolExecutor(BLOB_WRITERS, thread_name_prefix="imaging-blob")
        return _writers


@dataclass(frozen=True)
class Caller:
    """Who sends an instance: a registered AE that associated (C-STORE), or a system client
    (STOW-RS, ``aet`` its client id), what filing needs of its registration: whether it may
    store, the assigning authority of the PatientIDs it sends without an issuer (and, for an
    AE, whether it may query and retrieve)."""

    aet: str
    address: str
    may_store: bool
    authority: str | None
    may_retrieve: bool = False  # an AE that may query and retrieve (C-FIND, C-GET, C-MOVE)


class Filing:
    """Storing one instance, whoever sends it (:mod:`.dicom`'s C-STORE, :mod:`.web`'s STOW-RS)."""

    def __init__(
        self, db: Database, storage: BlobStorage, audit: AuditWriter, config: IdentityConfig
    ) -> None:
        self.db, self.storage, self.audit, self.config = db, storage, audit, config
        self._group: _GroupFiler | None = None

    def start_group(self) -> None:
        """File the instances of concurrent stores together from now on: one thread files
        the instances waiting (each in a savepoint but the first) in one transaction, one
        commit for them all (the DICOM listener's associations). Each sender is answered after
        that commit."""
        if self._group is None:
            self._group = _GroupFiler(self)

    def stop_group(self) -> None:
        if self._group is not None:
            self._group.stop()
            self._group = None

    def store(self, received: Received, caller: Caller) -> tuple[int, str | None]:
        """Store one instance; its DICOM status and error comment."""
        if not caller.may_store:
            problem = f"AE {caller.aet} is not registered to store"
            return self._failed(received, NOT_AUTHORIZED, problem, Outcome.MINOR_FAILURE)
        key = service.blob_key(utcnow())
        # The blob is made, encrypted and written (fsync'd) by another thread while this one
        # reads the data set and the index is written; the index is committed only once the
        # blob is durable. An instance that cannot be read has its blob deleted.
        writing = _blob_writers().submit(self._put, key, received, caller)
        try:
            indexed = service.read_received(received)
        except UnreadableDataset as exc:
            self._drop(writing, key)
            return self._failed(received, CANNOT_UNDERSTAND, exc.message, Outcome.MINOR_FAILURE)
        except DatasetMismatch as exc:
            self._drop(writing, key)
            return self._failed(
                received, DOES_NOT_MATCH_SOP_CLASS, exc.message, Outcome.MINOR_FAILURE
            )
        group = self._group
        if group is not None:
            return group.file(_Waiting(received, indexed, caller, key, writing))
        return self._file(received, indexed, caller, key, writing)

    def _put(self, key: str, received: Received, caller: Caller) -> None:
        """Write the instance's DICOM file (PS3.10) under ``key`` (a writer thread's work)."""
        content = part10(
            received.dataset,
            sop_class=received.sop_class_uid,
            sop_instance=received.sop_instance_uid,
            transfer_syntax=received.transfer_syntax,
            source_aet=caller.aet if received.via == "C-STORE" else "",
        )
        self.storage.put(key, content, "application/dicom")

    def _file(
        self,
        received: Received,
        indexed: service.Indexed,
        caller: Caller,
        key: str,
        writing: Future[Any],
    ) -> tuple[int, str | None]:
        for attempt in range(1, ATTEMPTS + 1):
            unit = UnitOfWork(self.db, self.audit, write=True)
            try:
                filed = self._index(unit, received, indexed, caller, key)
                if filed is None:  # archived already, the same bytes
                    unit.rollback()
                    return self._archived(received, writing, key)
                unit.entries.append(service.audit_entry(received, filed=filed))
                if not self._written(writing, received):
                    unit.rollback()
                    return self._failed(received, OUT_OF_RESOURCES, "the storage cannot be written")
                unit.commit()
            except IntegrityError:  # a concurrent association filed the same rows first
                unit.rollback()
                if attempt < ATTEMPTS:
                    continue
                self._drop(writing, key)
                return self._failed(received, OUT_OF_RESOURCES, "concurrent filing, try again")
            except DuplicateInstance as exc:
                unit.rollback()
                self._drop(writing, key)
                return self._failed(
                    received, DUPLICATE_SOP_INSTANCE, exc.message, Outcome.MINOR_FAILURE
                )
            except DatasetMismatch as exc:
                unit.rollback()
                self._drop(writing, key)
                return self._failed(
                    received, DOES_NOT_MATCH_SOP_CLASS, exc.message, Outcome.MINOR_FAILURE
                )
            except Exception:
                log.exception("%s %s: not filed", received.via, received.sop_instance_uid)
                unit.rollback()
                self._drop(writing, key)
                return self._failed(received, OUT_OF_RESOURCES, "the index cannot be written")
            finally:
                unit.close()
            return SUCCESS, None
        raise AssertionError("unreachable")  # pragma: no cover

    def _index(
        self,
        unit: UnitOfWork,
        received: Received,
        indexed: service.Indexed,
        caller: Caller,
        key: str,
    ) -> service.Filed | None:
        """Index an instance in ``unit`` (no commit), alone or in a group; ``None`` when it
        is archived already with the same bytes (:class:`DuplicateInstance` with others)."""
        filed = service.file_instance(
            unit.session, self.config, received, indexed, peer_authority=caller.authority, key=key
        )
        if filed is not None:  # a report is recorded for the document repository
            reports.on_filed(unit.session, received, filed)
        return filed

    def _archived(self, received: Received, writing: Future[Any], key: str) -> tuple[int, None]:
        """A resend of an archived instance: a success; the blob written for it deleted."""
        self._drop(writing, key)
        self._audit_after([service.audit_entry(received, problem="archived already")])
        return SUCCESS, None

    @staticmethod
    def _written(writing: Future[Any], received: Received) -> bool:
        """Wait for the blob's write; whether it is durable."""
        try:
            writing.result()
        except Exception:
            log.exception(
                "%s %s: the blob cannot be written", received.via, received.sop_instance_uid
            )
            return False
        return True

    def refuse(self, received: Received, status: int, problem: str) -> tuple[int, str]:
        """Refuse an instance before filing it (the sender's error), audited."""
        return self._failed(received, status, problem, Outcome.MINOR_FAILURE)

    def _drop(self, writing: Future[Any], key: str) -> None:
        """Delete the blob of an instance not filed, once its write is over (if it was made)."""
        try:
            writing.result()
        except Exception:  # nothing was kept of it
            return
        self._forget(key)

    def _forget(self, key: str) -> None:
        try:
            self.storage.delete(key)
        except Exception:
            log.exception("blob %s of a failed store not deleted", key)

    def _failed(
        self,
        received: Received,
        status: int,
        problem: str,
        outcome: str = Outcome.SERIOUS_FAILURE,
    ) -> tuple[int, str]:
        log.warning(
            "%s %s from %s refused (0x%04X): %s",
            received.via,
            received.sop_instance_uid,
            received.calling_aet,
            status,
            problem,
        )
        self._audit_after([service.audit_entry(received, outcome=outcome, problem=problem)])
        return status, problem

    def _audit_after(self, entries: list[AuditEntry]) -> None:
        try:
            self.audit.write(entries, timeout=AUDIT_TIMEOUT)
        except Exception:
            log.exception("DICOM audit records not written")


@dataclass(eq=False)
class _Waiting:
    """An instance waiting to be filed by the :class:`_GroupFiler`, then its status."""

    received: Received
    indexed: service.Indexed
    caller: Caller
    key: str
    writing: Future[Any]
    done: threading.Event = field(default_factory=threading.Event)
    status: tuple[int, str | None] = (OUT_OF_RESOURCES, "not filed")


class _GroupFiler:
    """Files the instances of concurrent stores in shared transactions (group commit).

    The filer thread indexes an instance as soon as it comes (each in its savepoint: one
    refused leaves the others; the first of a transaction in none: refused, it leaves nothing),
    while its blob is still being written; the instances that come meanwhile join the same
    transaction, committed once every blob in it is durable. So one association's instance
    has its index written during its blob's write, and several associations' instances share
    one commit. An instance of :data:`BIG` bytes or more is indexed only once its blob is
    written (the transaction, which on SQLite holds the database's writes, is not kept open
    through a long write when it can be avoided). A blob that cannot be written undoes the
    group: the others are filed again one by one. Each instance is answered after the commit
    that holds it."""

    MAX_GROUP = 32
    BIG = 4_000_000

    def __init__(self, filing: Filing) -> None:
        self.filing = filing
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._wake = threading.Event()  # an instance came, or a blob was written
        self._thread = threading.Thread(target=self._run, name="imaging-filer", daemon=True)
        self._thread.start()

    def file(self, waiting: _Waiting) -> tuple[int, str | None]:
        waiting.writing.add_done_callback(lambda _written: self._wake.set())
        self._queue.put(waiting)
        self._wake.set()
        waiting.done.wait()
        return waiting.status

    def stop(self) -> None:
        self._queue.put(None)
        self._wake.set()
        self._thread.join(30)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = _Group(self.filing, first)
            try:
                stopping = self._fill(group)
                group.finish()
            except Exception:  # the database failed outside an instance's savepoint
                log.exception("a group of %d instances not filed", len(group.members))
                group.fail()
            finally:
                group.close()

    def _fill(self, group: _Group) -> bool:
        """Index the instances that come until every blob of the group is written; whether
        the filer is to stop after this group."""
        group.index(group.members[0])
        while True:
            while len(group.members) < self.MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    return True
                group.members.append(more)
                group.index(more)
            self._wake.clear()
            full = len(group.members) >= self.MAX_GROUP
            if group.written() and (full or self._queue.empty()):
                return False
            if not full and not self._queue.empty():
                continue
            self._wake.wait(1.0)


class _Group:
    """One transaction of the :class:`_GroupFiler` and what became of its instances."""

    def __init__(self, filing: Filing, first: _Waiting) -> None:
        self.filing = filing
        self.members = [first]
        self.unit = UnitOfWork(filing.db, filing.audit, write=True)
        self.filed: list[tuple[_Waiting, service.Filed]] = []
        self.alone: list[_Waiting] = []  # met a concurrent filing: filed again on its own
        self.archived: list[_Waiting] = []  # archived already, the same bytes
        self.refused: list[tuple[_Waiting, int, str, str]] = []

    def written(self) -> bool:
        return all(waiting.writing.done() for waiting, _ in self.filed)

    def index(self, waiting: _Waiting) -> None:
        received, filing = waiting.received, self.filing
        if len(received.dataset) >= _GroupFiler.BIG:
            wait([waiting.writing])
        # An instance filed while the transaction holds none is filed without a savepoint:
        # if it fails, the whole transaction is rolled back, and nothing else is lost.
        first = not self.filed
        minor = Outcome.MINOR_FAILURE
        try:
            with nullcontext() if first else self.unit.session.begin_nested():
                done = filing._index(
                    self.unit, received, waiting.indexed, waiting.caller, waiting.key
                )
        except Exception as exc:
            if first:
                self.unit.rollback()
            if isinstance(exc, IntegrityError):
                self.alone.append(waiting)
            elif isinstance(exc, DuplicateInstance):
                self.refused.append((waiting, DUPLICATE_SOP_INSTANCE, exc.message, minor))
            elif isinstance(exc, DatasetMismatch):
                self.refused.append((waiting, DOES_NOT_MATCH_SOP_CLASS, exc.message, minor))
            else:
                log.exception("%s %s: not filed", received.via, received.sop_instance_uid)
                serious = Outcome.SERIOUS_FAILURE
                self.refused.append((waiting, OUT_OF_RESOURCES, _UNWRITTEN, serious))
            return
        if done is None:
            self.archived.append(waiting)
            return
        self.unit.entries.append(service.audit_entry(received, filed=done))
        self.filed.append((waiting, done))

    def finish(self) -> None:
        """Commit (every blob written), or undo the group."""
        filing, unit = self.filing, self.unit
        try:
            lost = [w for w, _ in self.filed if not filing._written(w.writing, w.received)]
            if lost:  # the others are filed again, one by one
                unit.rollback()
                for waiting in lost:
                    waiting.status = filing._failed(
                        waiting.received, OUT_OF_RESOURCES, "the storage cannot be written"
                    )
                self.alone.extend(w for w, _ in self.filed if w not in lost)
                self.filed = []
            elif self.filed:
                unit.commit()
            else:
                unit.rollback()
        except Exception:
            log.exception("a group of %d instances not committed", len(self.filed))
            unit.rollback()
            serious = Outcome.SERIOUS_FAILURE
            self.refused.extend((w, OUT_OF_RESOURCES, _UNWRITTEN, serious) for w, _ in self.filed)
            self.filed = []

    def fail(self) -> None:
        """Undo the group: every instance not yet refused nor to be filed alone is refused."""
        with contextlib.suppress(Exception):
            self.unit.rollback()
        settled = {id(w) for w in self.alone + self.archived} | {id(w) for w, *_ in self.refused}
        serious = Outcome.SERIOUS_FAILURE
        self.refused.extend(
            (w, OUT_OF_RESOURCES, _UNWRITTEN, serious) for w in self.members if id(w) not in settled
        )
        self.filed = []

    def close(self) -> None:
        """End the transaction, then answer every instance of the group."""
        filing = self.filing
        try:
            self.unit.close()
            # refusals audited once the group's transaction is over (on SQLite it holds writes)
            for waiting, status, problem, outcome in self.refused:
                filing._drop(waiting.writing, waiting.key)
                waiting.status = filing._failed(waiting.received, status, problem, outcome)
            for waiting in self.archived:
                waiting.status = filing._archived(waiting.received, waiting.writing, waiting.key)
            for waiting, _ in self.filed:
                waiting.status = (SUCCESS, None)
            for waiting in self.alone:
                waiting.status = filing._file(
                    waiting.received, waiting.indexed, waiting.caller, waiting.key, waiting.writing
                )
        finally:
            for waiting in self.members:
                waiting.done.set()
