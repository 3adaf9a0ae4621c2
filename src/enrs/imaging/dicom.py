"""The imaging archive's DICOM listener (pynetdicom): the ``dicom`` listener of ``enrs serve``.

- Verification (C-ECHO) for every registered AE;
- Storage (C-STORE) of every storage SOP class pynetdicom knows
  (``AllStoragePresentationContexts``), each with every transfer syntax it knows
  (``ALL_TRANSFER_SYNTAXES``: the uncompressed ones, deflate, JPEG, JPEG-LS, JPEG 2000, RLE,
  MPEG/H.264/HEVC…), for the AEs registered with ``--store``;
- Query/Retrieve (PS3.4 C): C-FIND, C-GET and C-MOVE of the Patient Root and Study Root
  information models, for the AEs registered with ``--retrieve``;
- Storage Commitment Push Model (PS3.4 J), for the AEs registered with ``--store``: an N-ACTION
  (commit, action type 1) is answered ``0x0000`` (``0x0124`` without the store right,
  ``0x0120`` without TransactionUID or references, ``0x0110`` when the index cannot be read),
  then each instance is checked (indexed with that SOP class, its bytes present in the blob
  storage) and the N-EVENT-REPORT (event type 1: all committed, 2: some failed, with the
  Failure Reason ``0x0112`` no such instance, ``0x0119`` class/instance conflict, ``0x0110``
  bytes missing) is sent on the same association if it is still open; else it is kept in the
  database and sent on a new one to the requester's registered host and port, the archive
  proposing the SCP role, retried with back-off until delivered or given up
  (:mod:`enrs.imaging.commitment`). Audited (``N-ACTION``; ``N-EVENT-REPORT`` per attempt on
  a new association).

Who may associate (PS3.8 7.1.1.9): an association that calls another AE title than the
archive's (``ENRS_DICOM_AET``) is rejected at once with A-ASSOCIATE-RJ result
*rejected-permanent* (1), source *DICOM UL service-user* (1), reason
*called-AE-title-not-recognized* (7); one whose calling AE title is not registered
(``enrs imaging ae add``), or that comes from another address than the registered host's,
with the same result and source, reason *calling-AE-title-not-recognized* (3); when the
registry cannot be read, *rejected-transient* (2) by the *service-provider* (3),
*temporary-congestion* (1), so that the sender tries again. Each rejection is audited.

What a C-STORE answers (PS3.4 B.2.3, PS3.7 C):

===========  ====================================================================
``0x0000``   stored (or archived already with the same bytes: a resend is a success)
``0x0124``   *Refused: Not Authorized*: the AE is registered without the store right
``0x0111``   *Duplicate SOP Instance*: archived already with other content; the original is
             kept (the general status that names exactly this case: a Storage SCP may return
             PS3.7's general failures; 0xA7xx would tell the sender to retry later, 0xCxxx
             that the data set could not be read, neither is true)
``0xA900``   *Data Set does not match SOP Class*: the SOP class or instance differs from the
             request's, or the Study / Series Instance UID is missing
``0xC000``   *Cannot understand*: the data set is truncated or its encoding broken
``0xA700``   *Refused: Out of Resources*: the database, the blob storage or the audit trail
             failed (a transient failure: the sender keeps the instance and retries)
===========  ====================================================================

Each failure carries an Error Comment (0000,0902). Nothing is kept of a failed instance: its
bytes are written to the blob storage before its unit of work and deleted when it fails. The
bytes kept are a DICOM file (PS3.10) made of the data set exactly as received (the P-DATA
bytes), after a file meta information naming the sending AE.

What a C-FIND, C-GET or C-MOVE answers (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4), decided before
pynetdicom runs the request (:meth:`Archive.plan`, called by :mod:`.dicom_net`: the right, the
identifier, the index, the move destination), each request audited (``C-FIND`` action E,
``C-GET`` / ``C-MOVE`` action R, the regional patient named when the answer is about exactly
one):

===========  ====================================================================
``0xFF00``   pending: one match (C-FIND) or one sub-operation done (C-GET, C-MOVE)
``0x0000``   done; ``0xB000`` when sub-operations failed (Failed SOP Instance UID List)
``0x0124``   *Refused: Not Authorized*: the AE is registered without the retrieve right (the
             general status PS3.7 C.5 gives every DIMSE service, as for C-STORE; 0xA7xx would
             say "retry later", 0xCxxx "cannot process", neither is true)
``0xA801``   *Move Destination unknown*: the C-MOVE destination is not a registered AE
``0xA900``   *Identifier does not match SOP Class*: a bad level, a value not of its
             attribute's form, a retrieve without the unique key of its level
``0xC000``   the identifier cannot be decoded
``0xA700``   C-FIND: *Out of Resources*: the index cannot be read
``0xA701``   C-GET / C-MOVE: *Out of Resources, unable to calculate number of matches*
``0xA702``   C-GET / C-MOVE: every sub-operation failed
===========  ====================================================================

The instances are sent from the blob storage (:class:`.dicom_net.Outgoing`): the data set byte
for byte in the transfer syntax it was received in when the peer accepted it (pynetdicom's
chunked sending of a file, ``STORE_SEND_CHUNKED_DATASET``); else in the uncompressed syntax the
peer accepted, compressed pixel data decoded (:mod:`.transcoding`); else (no uncompressed
syntax accepted for its SOP class, or pixel data that cannot be decoded) that sub-operation
fails.
The instances of a study the cell corrected carry its corrected Patient ID, issuer and
Accession Number (:mod:`.outgoing`).
The storage contexts prefer Explicit VR Little Endian, and accept a C-GET requestor's SCP/SCU
role selection (it is the storage SCP of its C-GET). A C-MOVE proposes to its destination one
context per SOP class and transfer syntax to send. An instance whose bytes cannot be read fails
its sub-operation; the others are sent.

Accepted sockets get ``TCP_NODELAY`` (pynetdicom leaves Nagle on: a C-STORE-RSP then waits for
the peer's delayed ACK, holding one association near twenty instances a second).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator, MutableSequence
from functools import partial
from types import FrameType
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import (
    _config,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE, N_ACTION
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
)

from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.imaging import commitment, dicom_net, outgoing, query, repository, service
from enrs.imaging.dicom_net import (
    ArchiveAE,
    DicomServer,
    Failure,
    Outgoing,
    Plan,
    contexts,
    move_contexts,
)
from enrs.imaging.filing import (  # noqa: F401  (the statuses: re-exported for the listener's users)
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    SUCCESS,
    Caller,
    Filing,
)
from enrs.imaging.service import Received
from enrs.kit.audit.trail import AuditEntry, Outcome
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database
from enrs.kit.listeners import Listener, run_group
from enrs.kit.mllp import Balancer, bind
from enrs.kit.storage import open_storage
from enrs.settings import Settings

log = logging.getLogger(__name__)


UNABLE_TO_COUNT_MATCHES = 0xA701  # C-GET / C-MOVE: Refused, Out of Resources (matches)
IDENTIFIER_MISMATCH = 0xA900  # C-FIND / C-GET / C-MOVE: Identifier does not match SOP Class
MOVE_DESTINATION_UNKNOWN = 0xA801
PENDING, CANCELLED = 0xFF00, 0xFE00
# Storage Commitment (PS3.4 J): N-ACTION statuses and the failure reasons of its report.
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
NO_SUCH_ACTION = 0x0123
CLASS_INSTANCE_CONFLICT = 0x0119
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance
RELEASE_GRACE = 0.5  # s: the report waits this long for a requester's release (J.3.3)
# A-ASSOCIATE-RJ: rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized.
REJECT_UNKNOWN_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_UNKNOWN_CALLED_AE = (0x01, 0x01, 0x07)
# … and rejected-transient, DICOM UL service-provider (presentation), temporary congestion.
REJECT_TRANSIENT = (0x02, 0x03, 0x01)
MAX_ASSOCIATIONS = 32
MAX_PDU = 131072  # what peers may send per PDU: fewer PDUs to decode per instance


def _addresses(host: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {_plain(str(info[4][0])) for info in infos}


def _plain(address: str) -> str:
    """An IPv4 address given as IPv6-mapped (``::ffff:a.b.c.d``) as its IPv4 form."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _qr_entry(
    caller: Caller,
    kind: str,
    outcome: str,
    problem: str | None,
    detail: dict[str, object],
    rris: list[str],
) -> AuditEntry:
    """The audit record of a C-FIND (action E), C-GET or C-MOVE (action R) request, or of a
    Storage Commitment request (``N-ACTION``, action E)."""
    return AuditEntry(
        category="dicom",
        interaction=kind,
        action="R" if kind in ("C-GET", "C-MOVE") else "E",
        outcome=outcome,
        outcome_desc=problem,
        agent_kind="client",
        agent_id=caller.aet[:128] or None,
        source_ip=caller.address[:64] or None,
        patient_ref=f"Patient/{rris[0]}" if len(rris) == 1 else None,
        resource_type="ImagingStudy",
        detail=json.dumps(detail, separators=(",", ":")),
    )


class Archive(Filing):
    """The listener's work, outside pynetdicom: who may associate, query and retrieve, Storage
    Commitment; storing an instance is :class:`~enrs.imaging.filing.Filing`'s (STOW-RS files
    through the same code)."""

    # -- associations -------------------------------------------------------------------------

    def admit(
        self, calling_aet: str, address: str, *, called_aet: str, own_aet: str
    ) -> Caller | tuple[int, int, int]:
        """The caller if it called this archive (``called_aet`` is ``own_aet``), its
        ``calling_aet`` is registered and ``address`` is its host's, else the A-ASSOCIATE-RJ
        (result, source, reason) to answer, the refusal audited: the called or calling AE
        title not recognised, or, when the registry cannot be read, a transient rejection
        (the sender tries again later)."""
        aet = calling_aet.strip()
        if called_aet.strip() != own_aet.strip():
            reason = f"called AE title {called_aet.strip()!r} is not this archive's ({own_aet})"
            log.warning("DICOM association refused: %s", reason)
            self._audit_after([service.refusal_entry(aet, address, reason)])
            return REJECT_UNKNOWN_CALLED_AE
        try:
            with self.db.transaction(write=False) as session:
                peer = service.peer(session, aet) if aet else None
                found = (
                    (peer.host, peer.may_store, peer.authority, peer.may_retrieve) if peer else None
                )
        except Exception:
            log.exception("DICOM association of %r: the AE registry cannot be read", aet)
            reason, answer = "the AE registry cannot be read", REJECT_TRANSIENT
            found = None
        else:
            reason = f"calling AE title {aet!r} is not registered"
            answer = REJECT_UNKNOWN_CALLING_AE
        if found is not None:
            host, may_store, authority, may_retrieve = found
            if _plain(address) in _addresses(host):
                return Caller(aet, address, may_store, authority, may_retrieve)
            reason = f"calling AE {aet!r} connects from {address}, not from its host {host}"
        log.warning("DICOM association refused: %s", reason)
        self._audit_after([service.refusal_entry(aet, address, reason)])
        return answer

    # -- C-FIND, C-GET, C-MOVE ------------------------------------------------------------------

    def plan(
        self,
        caller: Caller,
        kind: str,
        model: str,
        identifier: Dataset,
        move_destination: str | None = None,
    ) -> Plan | Failure:
        """What a C-FIND answers, or which instances a C-GET / C-MOVE sends (and, for a C-MOVE,
        where), or the failure status to answer at once; audited either way."""
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
        filters = query.filters_of(identifier)
        detail: dict[str, object] = {"model": model, "level": level}
        if move_destination is not None:
            detail["move_destination"] = move_destination
        if not caller.may_retrieve:
            problem = f"AE {caller.aet} is not registered to query and retrieve"
            return self._refuse(caller, kind, NOT_AUTHORIZED, problem, detail)
        matches: list[query.Match] = []
        stored: list[query.Stored] = []
        destination: tuple[str, int] | None = None
        corrected: dict[str, outgoing.Identifiers] = {}
        try:
            with self.db.transaction(write=False) as session:
                if kind == "C-FIND":
                    matches = query.find_matches(session, level, filters, model=model)
                    ids = set().union(*(m.patients for m in matches))
                else:
                    stored = query.to_retrieve(session, level, filters, model=model)
                    ids = {s.patient for s in stored if s.patient is not None}
                    for study_uid in {s.study_uid for s in stored}:
                        study = repository.study(session, study_uid)
                        found = outgoing.corrected(session, study) if study else None
                        if found is not None:
                            corrected[study_uid] = found
                    if move_destination is not None:
                        peer = service.peer(session, move_destination)
                        destination = (peer.host, peer.port) if peer is not None else None
                refs = [identity_service.current_patient(session, i) for i in sorted(ids)]
        except query.QueryError as exc:
            return self._refuse(caller, kind, IDENTIFIER_MISMATCH, str(exc), detail)
        except Exception:
            log.exception("%s from %s: the index cannot be read", kind, caller.aet)
            status = OUT_OF_RESOURCES if kind == "C-FIND" else UNABLE_TO_COUNT_MATCHES
            return self._refuse(
                caller, kind, status, "the index cannot be read", detail, Outcome.SERIOUS_FAILURE
            )
        if move_destination is not None and destination is None:
            problem = f"move destination {move_destination!r} is not a registered AE"
            return self._refuse(caller, kind, MOVE_DESTINATION_UNKNOWN, problem, detail)
        rris = sorted({r.rri for r in refs if r is not None})
        if kind == "C-FIND":
            detail["matches"] = len(matches)
        else:
            detail["instances"] = len(stored)
            detail["studies"] = sorted({s.study_uid for s in stored})[:50]
        if len(rris) > 1:
            detail["patients"] = rris[:50]
        entry = _qr_entry(caller, kind, Outcome.SUCCESS, None, detail, rris)
        self._audit_after([entry])
        return Plan(kind, matches, stored, destination, corrected)

    def _refuse(
        self,
        caller: Caller,
        kind: str,
        status: int,
        problem: str,
        detail: dict[str, object],
        outcome: str = Outcome.MINOR_FAILURE,
    ) -> Failure:
        log.warning("%s from %s refused (0x%04X): %s", kind, caller.aet, status, problem)
        self._audit_after([_qr_entry(caller, kind, outcome, problem, detail, [])])
        return Failure(status, problem)

    # -- Storage Commitment ---------------------------------------------------------------------

    def commit(
        self, caller: Caller, info: Dataset
    ) -> tuple[int, str | None, tuple[int, Dataset] | None]:
        """A Storage Commitment request (N-ACTION 1): its status, error comment, and the
        N-EVENT-REPORT (event type 1: all committed, 2: some failed; its data set) to send."""
        transaction = str(info.get("TransactionUID", "") or "").strip()
        refs = [
            (str(i.get("ReferencedSOPClassUID", "")), str(i.get("ReferencedSOPInstanceUID", "")))
            for i in info.get("ReferencedSOPSequence") or []
        ]
        detail: dict[str, object] = {"transaction_uid": transaction, "instances": len(refs)}
        if not caller.may_store:
            problem = f"AE {caller.aet} is not registered to store"
            self._audit_after([_qr_entry(caller, "N-ACTION", Outcome.MINOR_FAILURE, problem,
                                            detail, [])])  # fmt: skip
            return NOT_AUTHORIZED, problem, None
        if not transaction or not refs:
            problem = "TransactionUID and ReferencedSOPSequence are required"
            self._audit_after([_qr_entry(caller, "N-ACTION", Outcome.MINOR_FAILURE, problem,
                                            detail, [])])  # fmt: skip
            return MISSING_ATTRIBUTE, problem, None
        try:
            with self.db.transaction(write=False) as session:
                found = {
                    uid: (i.sop_class_uid, i.blob_key)
                    for uid in {u for _, u in refs}
                    if (i := repository.instance(session, uid)) is not None
                }
            verdicts: list[tuple[str, str, int | None]] = []
            for sop_class, uid in refs:
                row = found.get(uid)
                if row is None:
                    reason: int | None = NO_SUCH_OBJECT_INSTANCE
                elif row[0] != sop_class:
                    reason = CLASS_INSTANCE_CONFLICT
                elif not self.storage.exists(row[1]):
                    reason = PROCESSING_FAILURE
                else:
                    reason = None
                verdicts.append((sop_class, uid, reason))
        except Exception:
            log.exception("storage commitment from %s: the archive cannot be read", caller.aet)
            problem = "the archive cannot be read"
            self._audit_after([_qr_entry(caller, "N-ACTION", Outcome.SERIOUS_FAILURE,
                                            problem, detail, [])])  # fmt: skip
            return PROCESSING_FAILURE, problem, None
        report = Dataset()
        report.TransactionUID = transaction
        committed, failed = [], []
        for sop_class, uid, reason in verdicts:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, uid
            if reason is None:
                committed.append(item)
            else:
                item.FailureReason = reason
                failed.append(item)
        if committed:
            report.ReferencedSOPSequence = committed
        if failed:
            report.FailedSOPSequence = failed
        detail.update(committed=len(committed), failed=len(failed))
        self._audit_after([_qr_entry(caller, "N-ACTION", Outcome.SUCCESS, None, detail, [])])
        return SUCCESS, None, (2 if failed else 1, report)

    def load(self, stored: query.Stored, corrected: outgoing.Identifiers | None = None) -> bytes:
        """The DICOM file of an instance to send (raises when the storage fails), with the
        corrected identifiers of a study the cell corrected (:mod:`.outgoing`)."""
        content = self.storage.get(stored.blob_key)
        return content if corrected is None else outgoing.rewrite(content, corrected)


def _report(
    listener: DicomListener, assoc: Association, caller: Caller, event_type: int, report: Dataset
) -> None:
    """Send a Storage Commitment report on the request's association while it is open, else
    (or when the requester did not answer it with success there, or released it meanwhile)
    keep it, to be sent on a new association to the requester's registered host and port
    (PS3.4 J.3.3) by the listener's :class:`~enrs.imaging.commitment.Sender`."""
    if dicom_net.open_after_grace(assoc, RELEASE_GRACE):
        sent = threading.Event()
        threading.Thread(
            target=dicom_net.wake_on_release,
            args=(assoc, sent),
            name="dicom-commitment-wait",
            daemon=True,
        ).start()
        try:
            answer = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE
            )
        except Exception:
            log.warning("storage commitment report to %s: association lost", caller.aet)
        else:
            if answer[0] and answer[0].get("Status") == SUCCESS:
                return
            log.warning("storage commitment report to %s refused on its association", caller.aet)
        finally:
            sent.set()
    try:
        with listener.archive.db.transaction(write=True) as session:
            commitment.keep(session, caller.aet, event_type, report)
    except Exception:
        log.exception("storage commitment report to %s not kept", caller.aet)
        return
    listener.commitments.wake()


def _status(code: int, comment: str | None) -> Dataset | int:
    if comment is None:
        return code
    answer = Dataset()
    answer.Status = code
    answer.ErrorComment = comment[:64]
    return answer


class DicomListener:
    """The archive's DICOM listener on ``host:port`` (0: a free port), as ``aet``."""

    def __init__(
        self,
        archive: Archive,
        *,
        host: str,
        port: int,
        aet: str,
        commitments: commitment.Policy | None = None,
        sock: socket.socket | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        """``sock``: a listening socket to accept on, shared with other processes (then
        ``host`` and ``port`` are its own), ``balancer`` their association counts."""
        self.archive = archive
        archive.start_group()  # the associations' instances filed in shared transactions
        _config.STORE_SEND_CHUNKED_DATASET = True  # sending archived files as kept
        self.ae = ArchiveAE(ae_title=aet)
        for cx in contexts():  # (AE.supported_contexts would drop the roles)
            assert cx.abstract_syntax is not None
            self.ae.add_supported_context(
                cx.abstract_syntax, cx.transfer_syntax, scu_role=cx.scu_role, scp_role=cx.scp_role
            )
        self.ae.maximum_associations = MAX_ASSOCIATIONS
        self.ae.maximum_pdu_size = MAX_PDU
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_N_ACTION, self._on_commit),
            (evt.EVT_DIMSE_SENT, self._on_sent),
        ]
        server = self.ae.make_server(
            (host, port),
            evt_handlers=handlers,
            server_class=DicomServer,
            archive=archive,
            sock=sock,
            balancer=balancer,
        )
        assert isinstance(server, DicomServer)
        self.server = server
        self.ae._servers.append(server)  # as AE.start_server does: AE.shutdown stops it
        self._thread: threading.Thread | None = None
        # the reports kept (:func:`_report`): sent from this process too
        self.commitments = commitment.Sender(
            archive.db, self.ae, commitments or commitment.Policy()
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def _on_store(self, event: evt.Event) -> Dataset | int:
        caller = self.server.callers.get(event.assoc)
        if caller is None:  # not through the archive's check: cannot happen
            return _status(NOT_AUTHORIZED, "association not checked")
        request = event.request
        assert isinstance(request, C_STORE)
        received = Received(
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax=str(event.context.transfer_syntax),
            dataset=event.encoded_dataset(include_meta=False),
            calling_aet=caller.aet,
            address=caller.address,
        )
        try:
            return _status(*self.archive.store(received, caller))
        except Exception:  # the association and the listener keep serving
            log.exception("C-STORE %s failed", received.sop_instance_uid)
            return _status(OUT_OF_RESOURCES, "internal error")

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        plan = self.server.plans[event.assoc]
        for match in plan.matches:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, match.dataset

    def _on_get(self, event: evt.Event) -> Iterator[Any]:
        plan = self.server.plans[event.assoc]
        yield len(plan.stored)
        yield from self._sub_operations(event, plan)

    def _on_move(self, event: evt.Event) -> Iterator[Any]:
        plan = self.server.plans[event.assoc]
        assert plan.destination is not None
        host, port = plan.destination
        yield host, port, {"contexts": move_contexts(plan.stored)}
        yield len(plan.stored)
        yield from self._sub_operations(event, plan)

    def _sub_operations(self, event: evt.Event, plan: Plan) -> Iterator[tuple[int, Dataset | None]]:
        for stored in plan.stored:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            corrected = plan.corrected.get(stored.study_uid)
            yield PENDING, Outgoing(stored, partial(self.archive.load, corrected=corrected))

    def _on_commit(self, event: evt.Event) -> tuple[Dataset | int, None]:
        caller = self.server.callers.get(event.assoc)
        if caller is None:  # not through the archive's check: cannot happen
            return _status(NOT_AUTHORIZED, "association not checked"), None
        request = event.request
        assert isinstance(request, N_ACTION)
        if str(request.RequestedSOPClassUID) != StorageCommitmentPushModel:
            return _status(NO_SUCH_ACTION, "not a Storage Commitment request"), None
        if request.ActionTypeID != 1:
            return _status(NO_SUCH_ACTION, "action type 1 (commit) only"), None
        try:
            info = event.action_information
            for _ in info.iterall():
                pass
            status, comment, report = self.archive.commit(caller, info)
        except Exception:  # the association and the listener keep serving
            log.exception("storage commitment from %s failed", caller.aet)
            return _status(PROCESSING_FAILURE, "internal error"), None
        if report is not None:
            self.server.reports[event.assoc] = report
        return _status(status, comment), None

    def _on_sent(self, event: evt.Event) -> None:
        """Once the N-ACTION response is sent: the N-EVENT-REPORT, on the same association
        (from a thread of its own: the association's reactor waits for its response)."""
        if type(event.message).__name__ != "N_ACTION_RSP":
            return
        report = self.server.reports.pop(event.assoc, None)
        caller = self.server.callers.get(event.assoc)
        if report is not None and caller is not None:
            threading.Thread(
                target=_report,
                args=(self, event.assoc, caller, *report),
                name="dicom-commitment",
                daemon=True,
            ).start()

    def start(self) -> None:
        """Serve from a thread of this process."""
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="dicom-listener", daemon=True
        )
        self._thread.start()
        self.commitments.start()

    def stop(self) -> None:
        """Stop accepting, end the associations in progress, close the socket."""
        self.commitments.stop()
        self.ae.shutdown()  # aborts the associations, shuts the server down
        if self._thread is not None:
            self._thread.join(10)
        self.archive.stop_group()


# --------------------------------------------------------------------------- enrs serve


def describe(settings: Settings) -> str:
    return (
        f"dicom://{settings.dicom_host}:{settings.dicom_port} (AE title {settings.dicom_aet}, "
        f"{settings.dicom_workers} process(es))"
    )


def _serve(
    settings: Settings,
    sock: socket.socket | None,
    counts: MutableSequence[int] | None,
    slot: int,
) -> None:
    """One listener process (slot 0: the one ``enrs serve`` started), with its own database
    engine and storage, until SIGTERM. (This module's import, in each process, puts in the
    ``poll()`` readiness check above.)"""
    logging.basicConfig(level=settings.log_level.upper())
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    db = Database(settings.database_url)
    db.start_checkpoints()
    audit = AuditWriter(db)
    archive = Archive(db, open_storage(settings), audit, IdentityConfig.from_settings(settings))
    listener = DicomListener(
        archive,
        host=settings.dicom_host,
        port=settings.dicom_port,
        aet=settings.dicom_aet,
        commitments=commitment.Policy(
            settings.imaging_commitment_retries, settings.imaging_commitment_interval
        ),
        sock=sock,
        balancer=Balancer(counts, slot) if counts is not None else None,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    listener.start()
    log.info(
        "DICOM listening on %s:%s as %s (process %d of %d)",
        settings.dicom_host,
        listener.port,
        settings.dicom_aet,
        slot + 1,
        settings.dicom_workers,
    )
    try:
        while not stop.wait(1):
            pass
    finally:
        listener.stop()
        audit.close()
        db.dispose()


def run(settings: Settings) -> None:
    """Serve the DICOM listener on ``dicom_host:dicom_port`` until SIGTERM (``enrs serve``),
    from ``settings.dicom_workers`` processes accepting on one listening socket (bound here,
    handed to each): the C-STORE filing of one process holds the GIL, so more processes use
    more cores. A process that stops on its own stops the group, which stops ``enrs serve``
    (logged); one process (the default) binds its socket itself."""
    logging.basicConfig(level=settings.log_level.upper())
    processes = settings.dicom_workers
    if processes == 1:
        _serve(settings, None, None, 0)
        return
    sock = bind(settings.dicom_host, settings.dicom_port)
    counts = Balancer.shared(processes)  # new associations go to the least busy process
    code = run_group(partial(_serve, settings, sock, counts), processes, name="enrs-dicom")
    sock.close()
    if code:
        sys.exit(code)


LISTENER = Listener("dicom", describe, run)
