"""Filing a received instance: the one code path of the DICOM listener's C-STORE
(:mod:`.dicom`) and of STOW-RS (:mod:`.web`).

:meth:`Filing.store` checks and reads the data set, writes its DICOM file (PS3.10) to the blob
storage, then indexes it and records its audit entry in one unit of work; when that fails the
bytes are deleted, so nothing is kept of a failed instance. It answers a DICOM status (PS3.4
B.2.3, PS3.7 C) and its comment; STOW-RS gives the same status as the FailureReason of its
response (PS3.18 10.5.3).

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

import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
        the instances waiting (each in a savepoint) in one transaction, one commit for them
        all (the DICOM listener's associations). Each sender is answered after that commit."""
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
        try:
            indexed = service.read_received(received)
        except UnreadableDataset as exc:
            return self._failed(received, CANNOT_UNDERSTAND, exc.message, Outcome.MINOR_FAILURE)
        except DatasetMismatch as exc:
            return self._failed(
                received, DOES_NOT_MATCH_SOP_CLASS, exc.message, Outcome.MINOR_FAILURE
            )
        key = service.blob_key(utcnow())
        content = part10(
            received.dataset,
            sop_class=received.sop_class_uid,
            sop_instance=received.sop_instance_uid,
            transfer_syntax=received.transfer_syntax,
            source_aet=caller.aet if received.via == "C-STORE" else "",
        )
        # The blob is encrypted and written (fsync'd) by another thread while this one checks
        # and writes the index; the index is committed only once the blob is durable.
        writing = _blob_writers().submit(self.storage.put, key, content, "application/dicom")
        try:
            with self.db.transaction(write=False) as session:
                archived = service.check_duplicate(session, received)
        except DuplicateInstance as exc:
            self._drop(writing, key)
            return self._failed(
                received, DUPLICATE_SOP_INSTANCE, exc.message, Outcome.MINOR_FAILURE
            )
        except Exception:
            log.exception(
                "%s %s: the index cannot be read", received.via, received.sop_instance_uid
            )
            self._drop(writing, key)
            return self._failed(received, OUT_OF_RESOURCES, "the index cannot be read")
        if archived:
            self._drop(writing, key)
            self._audit_after([service.audit_entry(received, problem="archived already")])
            return SUCCESS, None
        group = self._group
        if group is not None:
            return group.file(_Waiting(received, indexed, caller, key, writing))
        return self._file(received, indexed, caller, key, writing)

    def _file(
        self,
        received: Received,
        indexed: service.Indexed,
        caller: Caller,
        key: str,
        writing: Future[Any],
    ) -> tuple[int, str | None]:
        for attempt in (1, 2):
            unit = UnitOfWork(self.db, self.audit, write=True)
            try:
                filed = service.file_instance(
                    unit.session,
                    self.config,
                    received,
                    indexed,
                    peer_authority=caller.authority,
                    key=key,
                )
                # --- a report instance, recorded for the document repository (:mod:`.reports`)
                reports.on_filed(unit.session, received, filed)
                unit.entries.append(service.audit_entry(received, filed=filed))
                if not self._written(writing, received):
                    unit.rollback()
                    return self._failed(received, OUT_OF_RESOURCES, "the storage cannot be written")
                unit.commit()
            except IntegrityError:  # a concurrent association filed the same rows first
                unit.rollback()
                if attempt == 1:
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
            if filed.duplicate:  # the same bytes were filed meanwhile: ours are not needed
                self._forget(key)
            return SUCCESS, None
        raise AssertionError("unreachable")  # pragma: no cover

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
    """Files the instances of concurrent stores in shared transactions (group commit): while
    one transaction is being filed and committed, the instances that arrive wait, then go in
    the next one together. Each instance has its savepoint: one refused leaves the others; a
    failed commit fails them all (their blobs deleted). Durability as one by one: an instance
    is answered after the commit that holds it, its blob written before."""

    MAX_GROUP = 32

    def __init__(self, filing: Filing) -> None:
        self.filing = filing
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="imaging-filer", daemon=True)
        self._thread.start()

    def file(self, waiting: _Waiting) -> tuple[int, str | None]:
        self._queue.put(waiting)
        waiting.done.wait()
        return waiting.status

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            wait([first.writing])  # meanwhile, more instances come to join the group
            group, stopping = [first], False
            while len(group) < self.MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
            try:
                self._file_group(group)
            except Exception:  # pragma: no cover - each instance's own failures are handled
                log.exception("a group of %d instances not filed", len(group))
            finally:
                for waiting in group:
                    waiting.done.set()
            if stopping:
                return

    def _file_group(self, group: list[_Waiting]) -> None:
        filing = self.filing
        ready: list[_Waiting] = []
        for waiting in group:
            if filing._written(waiting.writing, waiting.received):
                ready.append(waiting)
            else:
                waiting.status = filing._failed(
                    waiting.received, OUT_OF_RESOURCES, "the storage cannot be written"
                )
        filed: list[tuple[_Waiting, service.Filed]] = []
        alone: list[_Waiting] = []  # met a concurrent filing: filed again on its own
        refused: list[tuple[_Waiting, int, str, str]] = []
        minor, serious = Outcome.MINOR_FAILURE, Outcome.SERIOUS_FAILURE
        unwritten = "the index cannot be written"
        unit = UnitOfWork(filing.db, filing.audit, write=True)
        try:
            for waiting in ready:
                received = waiting.received
                try:
                    with unit.session.begin_nested():
                        done = service.file_instance(
                            unit.session,
                            filing.config,
                            received,
                            waiting.indexed,
                            peer_authority=waiting.caller.authority,
                            key=waiting.key,
                        )
                        reports.on_filed(unit.session, received, done)
                except IntegrityError:
                    alone.append(waiting)
                    continue
                except DuplicateInstance as exc:
                    refused.append((waiting, DUPLICATE_SOP_INSTANCE, exc.message, minor))
                    continue
                except DatasetMismatch as exc:
                    refused.append((waiting, DOES_NOT_MATCH_SOP_CLASS, exc.message, minor))
                    continue
                except Exception:
                    log.exception("%s %s: not filed", received.via, received.sop_instance_uid)
                    refused.append((waiting, OUT_OF_RESOURCES, unwritten, serious))
                    continue
                unit.entries.append(service.audit_entry(received, filed=done))
                filed.append((waiting, done))
            if filed:
                unit.commit()
            else:
                unit.rollback()
        except Exception:
            log.exception("a group of %d instances not committed", len(filed))
            unit.rollback()
            refused.extend((waiting, OUT_OF_RESOURCES, unwritten, serious) for waiting, _ in filed)
            filed = []
        finally:
            unit.close()
        # refusals audited once the group's transaction is over (on SQLite it holds the writes)
        for waiting, status, problem, outcome in refused:
            filing._forget(waiting.key)
            waiting.status = filing._failed(waiting.received, status, problem, outcome)
        for waiting, done in filed:
            if done.duplicate:  # the same bytes were filed meanwhile: ours are not needed
                filing._forget(waiting.key)
            waiting.status = (SUCCESS, None)
        for waiting in alone:
            waiting.status = filing._file(
                waiting.received, waiting.indexed, waiting.caller, waiting.key, waiting.writing
            )
