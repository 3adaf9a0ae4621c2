"""The pynetdicom glue of the archive's DICOM listener (:mod:`.dicom`): the association
server and its request handler (``TCP_NODELAY``, the archive's check of the caller before the
association is negotiated, the planning of a C-FIND / C-GET / C-MOVE before pynetdicom runs
it, several processes sharing one listening socket), the presentation contexts, the instances
sent as kept, the wait of a Storage Commitment report on its association, ``poll()`` in
place of pynetdicom's ``select()``, and reactor threads woken by their work rather than by the
end of a 1 ms sleep. Checked against pynetdicom 3.0 (pinned in
pyproject.toml): several of these replace or wrap pynetdicom internals."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pynetdicom.association
import pynetdicom.dul
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from enrs.imaging import decoding, outgoing, query, transcoding
from enrs.imaging.encoding import read_file
from enrs.imaging.filing import CANNOT_UNDERSTAND, NOT_AUTHORIZED, OUT_OF_RESOURCES, Caller
from enrs.kit.mllp import Balancer

if TYPE_CHECKING:
    from enrs.imaging.dicom import Archive

log = logging.getLogger(__name__)


def _ready(self: AssociationSocket) -> bool:
    """Whether the association's socket has data to read: pynetdicom's
    ``AssociationSocket.ready`` with ``poll()`` instead of ``select()``. ``select()`` cannot watch
    a descriptor numbered 1024 or more (ValueError, which pynetdicom reads as the connection
    closed: every association of a process holding that many files and sockets dropped at
    once); ``poll()`` has no such limit. A hang-up or an error counts as ready: the read then
    sees the connection closed, as with ``select()``."""
    if self.socket is None or self._is_connected is False:
        return False
    poller = select.poll()
    try:
        poller.register(self.socket, select.POLLIN | select.POLLPRI)
        ready = bool(poller.poll(0))
    except (OSError, ValueError):
        self.event_queue.put("Evt17")  # Evt17: transport connection closed
        return False
    if isinstance(self.socket, ssl.SSLSocket):  # TLS may hold data poll() does not see
        return ready or bool(self.socket.pending())
    return ready


# Process-wide, for the listener's associations and those it opens (C-MOVE, commitment
# reports); checked against pynetdicom 3.0 (pinned in pyproject.toml).
AssociationSocket.ready = property(_ready)  # type: ignore[method-assign,assignment]


class _WakingQueue(queue.Queue[Any]):
    """A queue of pynetdicom's that wakes the reactor waiting for it."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _Reactors:
    """An accepted association's two reactor threads, woken when they have work. pynetdicom
    runs each as a loop that sleeps 1 ms whenever it finds nothing to do: the DUL thread
    (reading the socket, sending what the association queued) and the association's thread
    (serving each DIMSE message the DUL decoded). Every instance of a C-STORE waited up to
    1 ms at each of three hand-offs (its PDUs read, its request served, its response sent).
    Here a tick of the DUL thread ends when the socket is readable or a primitive is queued
    for it, and a tick of the association's thread when a message or a primitive is queued
    for it; ticks still end after their 1 ms (pynetdicom's timers are checked as before)."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc
        self.messages = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()  # (a wake racing the pipe's closing)
        self._closed = False
        dul, dimse = assoc.dul, assoc.dimse
        dul.to_provider_queue = _WakingQueue(self._wake_dul)
        dul.to_user_queue = _WakingQueue(self.messages.set)
        dimse.msg_queue = _WakingQueue(self.messages.set)
        dul._enrs_tick = self._dul_tick  # type: ignore[attr-defined]
        assoc._enrs_tick = self._assoc_tick  # type: ignore[attr-defined]

    def close(self) -> None:
        """At the end of the association's thread: the pipe closed once the DUL thread is
        over (pynetdicom has stopped it, or is stopping it), so no tick of it can follow."""
        dul = self.assoc.dul
        if dul.is_alive():
            dul.join(5)
        if dul.is_alive():
            return
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)

    def _wake_dul(self) -> None:
        with self._lock, contextlib.suppress(BlockingIOError):  # full: a wake is pending
            if not self._closed:
                os.write(self._write, b"\0")

    def _dul_tick(self, delay: float) -> None:  # (the pipe is closed after the DUL thread)
        sock = self.assoc.dul.socket
        raw = sock.socket if sock is not None else None
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        try:
            if raw is not None:
                poller.register(raw, select.POLLIN | select.POLLPRI)
        except (OSError, ValueError):  # closed: pynetdicom's next look sees it
            time.sleep(delay)
            return
        if poller.poll(delay * 1000):
            with contextlib.suppress(BlockingIOError):
                os.read(self._read, 4096)

    def _assoc_tick(self, delay: float) -> None:
        self.messages.wait(delay)
        self.messages.clear()


class _ReactorClock:
    """The ``time`` module as pynetdicom's DUL and association modules see it: a sleep of a
    thread of an association with :class:`_Reactors` is one of its ticks (it may end early:
    pynetdicom sleeps only in loops that look again), other threads sleep as before."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(delay: float) -> None:
        tick = getattr(threading.current_thread(), "_enrs_tick", None)
        if tick is None or delay <= 0:
            time.sleep(delay)
        else:
            tick(delay)


pynetdicom.dul.time = _ReactorClock()  # type: ignore[attr-defined,assignment]
pynetdicom.association.time = _ReactorClock()  # type: ignore[attr-defined,assignment]

# The Query/Retrieve SOP classes: their information model (PATIENT or STUDY root).
MODELS = {
    PatientRootQueryRetrieveInformationModelFind: query.PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelGet: query.PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelMove: query.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: query.STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelGet: query.STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelMove: query.STUDY_ROOT,
}
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# The acceptor's order of preference: Explicit VR Little Endian first (the VRs kept; what a
# C-GET requestor then most often receives of an archived instance byte for byte).
_PREFERRED = [
    ExplicitVRLittleEndian,
    *(t for t in ALL_TRANSFER_SYNTAXES if t != ExplicitVRLittleEndian),
]


def contexts() -> list[PresentationContext]:
    """What the archive accepts: Verification, Patient / Study Root Query/Retrieve FIND, GET
    and MOVE, and every storage SOP class with every transfer syntax pynetdicom knows, the
    SCP/SCU role selection of a C-GET's requestor accepted (it is then the storage SCP)."""
    found = [build_context(Verification)]
    found += [build_context(uid) for uid in MODELS]
    found.append(build_context(StorageCommitmentPushModel))
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        storage = build_context(cx.abstract_syntax, _PREFERRED)
        storage.scu_role, storage.scp_role = True, True
        found.append(storage)
    return found


def move_contexts(stored: list[query.Stored]) -> list[PresentationContext]:
    """The presentation contexts a C-MOVE proposes to its destination: one per SOP class and
    transfer syntax kept, the uncompressed ones offered together (pynetdicom converts between
    them), then the lossless ones the archive encodes to (:data:`.transcoding.ENCODABLE`), for
    a destination that takes only those; for a compressed syntax, that second context too,
    for a destination that does not take it (the instance is then decoded, and maybe encoded
    again: :mod:`.decoding`)."""
    found: dict[tuple[str, str], PresentationContext] = {}
    for s in stored:
        kept = s.transfer_syntax_uid
        if kept not in _UNCOMPRESSED:
            found.setdefault((s.sop_class_uid, kept), build_context(s.sop_class_uid, [kept]))
            kept = ExplicitVRLittleEndian
        syntaxes = [kept, *(t for t in _UNCOMPRESSED if t != kept), *transcoding.ENCODABLE]
        found.setdefault((s.sop_class_uid, kept), build_context(s.sop_class_uid, syntaxes))
    return list(found.values())[:128]  # PS3.8: at most 128 contexts


class Outgoing(Dataset):
    """An archived instance a C-GET or C-MOVE sub-operation sends: only its identity as
    elements (what pynetdicom reports of a failed sub-operation); the association's
    ``send_c_store`` (:func:`sending_archived`) sends its bytes as kept."""

    def __init__(self, stored: query.Stored, load: Callable[[query.Stored], bytes]) -> None:
        super().__init__()
        self.SOPClassUID = stored.sop_class_uid
        self.SOPInstanceUID = stored.sop_instance_uid
        object.__setattr__(self, "_archived", (stored, load))

    def archived(self) -> tuple[query.Stored, Callable[[query.Stored], bytes]]:
        return object.__getattribute__(self, "_archived")  # type: ignore[no-any-return]


def sending_archived(assoc: Association) -> None:
    """Make ``assoc.send_c_store`` send an :class:`Outgoing` instance's data set byte for byte
    in its transfer syntax when the peer accepted it (pynetdicom's chunked sending of a
    file); else, when the peer accepted an uncompressed syntax for its SOP class, in Explicit
    VR Little Endian, the pixel data decoded (:mod:`.transcoding`; pynetdicom encodes it
    again in Implicit VR when only that one was accepted); else, when it accepted one of the
    lossless syntaxes the archive encodes to, in that one; else, or when it cannot be
    transcoded, the sub-operation fails."""
    original = assoc.send_c_store

    def taken(sop_class: str) -> set[UID]:
        """The transfer syntaxes of the contexts accepted for ``sop_class`` in which the
        archive may send (pynetdicom's own look-up logs an error for each miss)."""
        return {
            UID(cx.transfer_syntax[0])
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu is True
        }

    def send(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, Outgoing):
            return original(dataset, *args, **kwargs)
        stored, load = dataset.archived()
        syntax, sop_class = UID(stored.transfer_syntax_uid), stored.sop_class_uid
        syntaxes = taken(sop_class)
        content = load(stored)
        if syntax not in syntaxes:
            # pynetdicom converts between the uncompressed little endian syntaxes
            if any(t.is_little_endian and not t.is_compressed for t in syntaxes):
                explicit = decoding.explicit(content, syntax)
                return original(read_file(explicit), *args, **kwargs)
            encodable = [t for t in transcoding.ENCODABLE if t in syntaxes]
            if not encodable:  # the sub-operation fails
                raise ValueError(f"the peer accepted no transfer syntax for {sop_class} "
                                 f"that {stored.sop_instance_uid} can be sent in")  # fmt: skip
            content = decoding.transcoded(content, syntax, encodable[0])
        with tempfile.NamedTemporaryFile(suffix=".dcm") as file:
            file.write(content)
            file.flush()
            return original(Path(file.name), *args, **kwargs)

    assoc.send_c_store = send  # type: ignore[method-assign]


class ArchiveAE(AE):
    """pynetdicom's AE whose C-MOVE sub-associations send archived instances as kept."""

    def associate(self, *args: Any, **kwargs: Any) -> Association:
        assoc = super().associate(*args, **kwargs)
        sending_archived(assoc)
        return assoc


@dataclass(frozen=True)
class Plan:
    """What a C-FIND, C-GET or C-MOVE request is to do (its handler runs it)."""

    kind: str
    matches: list[query.Match]
    stored: list[query.Stored]
    destination: tuple[str, int] | None  # C-MOVE: the destination's host and port
    # The identifiers the data sets of the studies the cell corrected carry out (by study UID).
    corrected: dict[str, outgoing.Identifiers] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """The status a query or retrieve request is answered at once."""

    status: int
    comment: str


class _CheckedACSE(ACSE):
    """The acceptor's association negotiation, after the archive's check of the caller."""

    def __init__(self, assoc: Association, server: DicomServer) -> None:
        super().__init__(assoc)
        self.server = server

    def _negotiate_as_acceptor(self) -> None:
        request = self.requestor.primitive
        assert request is not None
        calling = str(request.calling_ae_title)
        caller = self.server.archive.admit(
            calling,
            str(self.assoc.requestor.address),
            called_aet=str(request.called_ae_title),
            own_aet=str(self.assoc.ae.ae_title),
        )
        if not isinstance(caller, Caller):
            self.requestor.ae_title = calling
            self.send_reject(*caller)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        self.server.callers[self.assoc] = caller
        super()._negotiate_as_acceptor()


class _Handler(RequestHandler):
    server: DicomServer

    def handle(self) -> None:
        sock = self.request
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        assoc.acse = _CheckedACSE(assoc, self.server)
        reactors = _Reactors(assoc)
        sending_archived(assoc)
        _planning(assoc, self.server)
        balancer = self.server.balancer
        if balancer is not None:  # counted while its thread runs (from here to its end)
            balancer.opened()
        run = assoc.run

        def run_to_end() -> None:  # the association's thread
            try:
                run()
            finally:
                if balancer is not None:
                    balancer.closed()
                reactors.close()

        assoc.run = run_to_end  # type: ignore[method-assign]
        return assoc


def _planning(assoc: Association, server: DicomServer) -> None:
    """Before pynetdicom serves a C-FIND, C-GET or C-MOVE request: the archive's
    :meth:`Archive.plan` (the right to retrieve, the identifier, the index, the move
    destination), its failure answered at once, else the plan left for the handler."""
    original = assoc._serve_request

    def serve(msg: Any, context_id: int) -> None:
        kind = {C_FIND: "C-FIND", C_GET: "C-GET", C_MOVE: "C-MOVE"}.get(type(msg))
        context = assoc._accepted_cx.get(context_id)
        model = MODELS.get(str(getattr(msg, "AffectedSOPClassUID", "") or ""))
        if kind is None or context is None or model is None or not msg.is_valid_request:
            original(msg, context_id)
            return
        caller = server.callers.get(assoc)
        answer: Plan | Failure
        if caller is None:  # not through the archive's check: cannot happen
            answer = Failure(NOT_AUTHORIZED, "association not checked")
        else:
            answer = _plan(server.archive, caller, kind, model, msg, context)
        if isinstance(answer, Failure):
            rsp = type(msg)()
            rsp.MessageIDBeingRespondedTo = msg.MessageID
            rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
            rsp.Status = answer.status
            rsp.ErrorComment = answer.comment[:64]
            assoc.dimse.send_msg(rsp, context_id)
            return
        server.plans[assoc] = answer
        try:
            original(msg, context_id)
        finally:
            server.plans.pop(assoc, None)

    assoc._serve_request = serve  # type: ignore[method-assign]


def release_pending(assoc: Association) -> bool:
    """Whether the peer's A-RELEASE-RQ waits for the association's reactor (peeked, not
    taken: the reactor answers it)."""
    primitive = assoc.dul.peek_next_pdu()
    return isinstance(primitive, A_RELEASE) and primitive.result is None


def open_after_grace(assoc: Association, grace: float) -> bool:
    """Whether the association is still open ``grace`` seconds after the
    N-ACTION answer: a requester that releases at once (and takes the report on a new
    association) has done it by then, and its release is answered normally."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not assoc.is_established or release_pending(assoc):
            return False
        time.sleep(0.01)
    return assoc.is_established and not release_pending(assoc)


def wake_on_release(assoc: Association, done: threading.Event) -> None:
    """While a report waits for its answer (pynetdicom pauses the association's reactor
    meanwhile), a release from the requester would only end the wait at the DIMSE timeout
    (30 s): wake the wait at once instead (it then aborts the association)."""
    while not done.wait(0.02):
        if release_pending(assoc):
            assoc.dimse.msg_queue.put((None, None))
            return


def _plan(
    archive: Archive,
    caller: Caller,
    kind: str,
    model: str,
    msg: Any,
    context: PresentationContext,
) -> Plan | Failure:
    syntax = context.transfer_syntax[0]
    try:
        msg.Identifier.seek(0)
        identifier = decode(
            msg.Identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
        for _ in identifier.iterall():
            pass
    except Exception as exc:
        return Failure(CANNOT_UNDERSTAND, f"identifier cannot be decoded: {exc}")
    destination = str(msg.MoveDestination).strip() if kind == "C-MOVE" else None
    try:
        return archive.plan(caller, kind, model, identifier, destination)
    except Exception:  # the association and the listener keep serving
        log.exception("%s from %s failed", kind, caller.aet)
        return Failure(OUT_OF_RESOURCES, "internal error")


class DicomServer(ThreadedAssociationServer):
    """pynetdicom's threaded server (one thread per association) with the archive's caller
    check and ``TCP_NODELAY``."""

    def __init__(
        self,
        ae: AE,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[PresentationContext],
        ssl_context: Any = None,
        evt_handlers: list[Any] | None = None,
        *,
        archive: Archive,
        sock: socket.socket | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self.archive = archive
        self.shared = sock  # a listening socket of the group (enrs serve): not bound here
        self.balancer = balancer
        self.callers: weakref.WeakKeyDictionary[Association, Caller] = weakref.WeakKeyDictionary()
        self.plans: weakref.WeakKeyDictionary[Association, Plan] = weakref.WeakKeyDictionary()
        self.reports: weakref.WeakKeyDictionary[Association, tuple[int, Dataset]] = (
            weakref.WeakKeyDictionary()
        )
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            ssl_context=ssl_context,
            evt_handlers=evt_handlers,
            request_handler=_Handler,
        )

    def server_bind(self) -> None:
        if self.shared is None:
            super().server_bind()
            return
        if self.socket is not None:  # the one socketserver made: unused
            self.socket.close()
        self.socket = self.shared
        # Non-blocking: every process of the group wakes up for a connection and one accepts
        # it; the others' accept() then fails at once (socketserver skips it) and never waits.
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.shared is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """With a ``balancer``: leave the connection to a less busy process of the group (the
        kernel wakes them all; whichever runs first would take it)."""
        if self.balancer is not None and not self.balancer.may_accept():
            time.sleep(0.005)  # the socket stays readable until another process accepts
            raise BlockingIOError  # (socketserver: no request this time)
        return super().get_request()

    def server_close(self) -> None:
        if self.shared is None:
            super().server_close()
        elif self.socket is not None:  # no shutdown(): it would stop the others' listening too
            self.socket.close()
