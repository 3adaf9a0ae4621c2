"""HL7 v2.5 feed of the regional identity server over MLLP: the listener of ``enrs serve``.

- IHE PAM *Patient Identity Feed* (ITI-30) with PAM-FR 2.11: ADT^A28 create, A31 update, A40
  merge, A47 change identifier, A24 link, A37 unlink; ITI-8 style A01, A03, A04, A05, A08 fed the
  same way (the messages: :mod:`enrs.identity.pam`, their PID: :mod:`enrs.identity.pamfr`);
- IHE PIX query (ITI-9): QBP^Q23 answered by RSP^K23.
- IHE PDQ query (ITI-21): QBP^Q22 answered by RSP^K22 (:mod:`.pdq`).

One database transaction per message, committed before the acknowledgement is sent; every
message whose header can be read is audited (category ``hl7``): a write that succeeded in its
own transaction (data and audit records commit together), any other message after its
transaction.
Acknowledgements (original mode): ``AA`` applied; ``AE`` understood but refused (INS key, status
rules, unknown or duplicate identifier, an identifier of an assigning authority the sender may
not write: ERR-3 102, 103, 204, 205); ``AR`` rejected (no or incomplete MSH: 100/101,
unsupported type or event: 200/201, unreadable PID: 101/102, internal error: 207 - the sender
should retry; an unregistered sender: 103 at ``MSH^1^4``, a message type it is not registered
for: 200 at ``MSH^1^9``).

Senders are registered by the admin (``enrs clients create NAME --mllp-sender OID --authority
OID``), known by MSH-4 as an OID (its universal id, or the OID of its FINESS), with SMART
scopes (ADT writes need ``system/Patient.cu``, QBP^Q23 and QBP^Q22 ``system/Patient.s``) and
the assigning authorities whose identities they may write: every facility identifier of every
PID-3 and MRG-1 of a message must be one of them. With no sender registered, every message is
refused.
Refusing an unknown sender or a type it may not send is ``AR``: HL7 v2.5 (2.9.2, original
mode) rejects a message the receiver does not accept for reasons unrelated to its content, as
for an unsupported type or version; the sender's interface holds it until the admin registers
it, then resends. An identifier outside the sender's authorities is an error in the content
(``AE``): that message must not be resent unchanged, the sender's next messages go through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableSequence
from dataclasses import replace
from functools import partial

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.accounts.service import FeederGrant
from enrs.identity import domains, pam, pdq, xref
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import Matcher, matcher_for
from enrs.identity.pam import Handled, Route, Sender, Touched, Work
from enrs.identity.pamfr import cx_out, identifiers
from enrs.kit.audit.trail import AuditEntry, Outcome
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database
from enrs.kit.errors import Conflict, EnrsError, NotFound
from enrs.kit.hl7v2 import STANDARD, Message, Segment, V2Error, build_response, warning
from enrs.kit.hl7v2 import parse_message as parse_v2
from enrs.kit.listeners import Listener, run_group
from enrs.kit.mllp import Balancer, Limits, MLLPServer, bind
from enrs.kit.unit_of_work import UnitOfWork
from enrs.settings import Settings

log = logging.getLogger(__name__)

RSP_K23 = "RSP^K23^RSP_K23"
SENDER_TTL = 5.0  # seconds a listener process keeps a sender's registration
_Entries = Callable[[Handled], list[AuditEntry]]
_OUTCOMES = {"AA": Outcome.SUCCESS, "AE": Outcome.MINOR_FAILURE, "AR": Outcome.SERIOUS_FAILURE}


def pix_query(config: IdentityConfig, session: Session, msg: Message) -> Handled:
    """ITI-9 PIX query: QPD-3 one identifier, QPD-4 the domains wanted (all if empty) →
    RSP^K23 with QAK OK / NF / AE and a PID listing the patient's identifiers (the rules of
    :mod:`enrs.identity.xref`; several patients behind one INS: all their identifiers).

    AE with ERR 204 (ITI-9 3.9.4.2.2.6): QPD-3 of an unknown domain (ERR-2 at its CX-4) or an
    unknown identifier (at its CX-1), a QPD-4 domain not known (at that repetition)."""
    qpd = pam.required(msg, "QPD")
    tag = STANDARD.escape(qpd.get(2))

    def answer(status: str, error: V2Error | None = None, pid: str = "") -> Handled:
        body = [f"QAK|{tag}|{status}", qpd.text(), *([pid] if pid else [])]
        errors = [error] if error else []
        ack = "AE" if error else "AA"
        return Handled(ack, errors, RSP_K23, body, query=qpd.text())

    cxs = identifiers(qpd, 3)
    if not cxs:
        return answer("AE", V2Error(101, "QPD-3 is required", ack="AE", location="QPD^1^3"))
    cx = cxs[0]
    system = cx.ins_system if cx.is_ins else cx.authority(config)
    try:
        if system is None:
            raise xref.UnknownDomain(f"{cx.namespace!r} names no assigning authority")
        patients = xref.resolve(session, config, system, cx.value)
    except xref.UnknownDomain:
        text = f"QPD-3: assigning authority {system or cx.namespace!r} not recognised"
        return answer("AE", V2Error(204, text, ack="AE", location="QPD^1^3^1^4"))
    except xref.UnknownPatient:
        text = f"QPD-3: identifier {cx.value!r} of {system} not known"
        return answer("AE", V2Error(204, text, ack="AE", location="QPD^1^3^1^1"))
    try:
        wanted = pdq.requested_domains(session, config, qpd, 4)
    except V2Error as err:
        return answer("AE", err)
    found = xref.cross_reference(session, config, patients, system, cx.value, domains=wanted)
    listed = found.identifiers
    names = domains.namespaces(session) if listed else {}
    cxs_out = "~".join(cx_out(i.value, i.system, i.type, names) for i in listed)
    handled = answer("OK", pid="PID|||" + cxs_out + "||~^^^^^^S")
    if not listed:
        handled = answer("NF")
    for patient in found.patients:
        handled.touched.append(Touched(patient.rri, f"{system}|{cx.value}", "E"))
    return handled


def _pix(config: IdentityConfig, _matcher: Matcher, msg: Message, _sender: Sender) -> Work:
    return Work(partial(pix_query, config, msg=msg))


def _pdq(config: IdentityConfig, _matcher: Matcher, msg: Message, _sender: Sender) -> Work:
    return Work(partial(pdq.pdq_query, config, msg=msg))


# (message type, event) -> its route (handler, whether it writes, the scope's resource).
ROUTES: dict[tuple[str, str], Route] = {
    **{("ADT", event): Route(pam.feed, True) for event in pam.FEED_EVENTS},
    ("ADT", "A40"): Route(pam.merge, True),
    ("ADT", "A47"): Route(pam.change, True),
    ("ADT", "A24"): Route(pam.link, True),
    ("ADT", "A37"): Route(pam.unlink, True),
    ("QBP", "Q23"): Route(_pix, False),
    ("QBP", "Q22"): Route(_pdq, False),
}


class Senders:
    """The registered MLLP senders, by MSH-4 OID, as one listener process sees them: each
    registration (or its absence) is read from the accounts service at most once per ``ttl``
    seconds, so that hundreds of messages a second cost no look-up, and a revocation or a new
    registration applies within ``ttl`` seconds (plus the message being handled)."""

    def __init__(self, db: Database, *, ttl: float = SENDER_TTL, size: int = 1024) -> None:
        self.db, self.ttl, self.size = db, ttl, size
        self._known: dict[str, tuple[float, FeederGrant | None]] = {}
        self._lock = threading.Lock()

    def grant(self, sender_oid: str) -> FeederGrant | None:
        now = time.monotonic()
        with self._lock:
            hit = self._known.get(sender_oid)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.db.transaction(write=False) as session:
            grant = domains.feeder_grant(
                session, accounts_service.mllp_sender_grant(session, sender_oid)
            )
        with self._lock:
            if len(self._known) >= self.size:  # unknown MSH-4s must not grow it without end
                self._known.clear()
            self._known[sender_oid] = (now + self.ttl, grant)
        return grant


class IdentityFeed:
    """The MLLP handler: one HL7 v2 message in, its acknowledgement out.

    Each message is one unit of work (:mod:`enrs.kit.unit_of_work`): a write commits its audit
    entries with it; a query or a refusal has them written after, through ``audit`` (a thread
    writing them in batches). On SQLite a message's candidates are read and scored ahead of its
    unit of work, in a read-only transaction, out of the write turn (:func:`service.prescore`).
    Senders' registrations are read through ``senders`` (:class:`Senders`)."""

    def __init__(
        self,
        db: Database,
        matcher: Matcher,
        audit: AuditWriter,
        *,
        config: IdentityConfig,
        sender_ttl: float = SENDER_TTL,
        routes: Mapping[tuple[str, str], Route] = ROUTES,
    ) -> None:
        self.db, self.matcher, self.audit, self.config = db, matcher, audit, config
        self.senders = Senders(db, ttl=sender_ttl)
        self.routes = routes

    def __call__(self, payload: bytes, peer: str) -> bytes:
        try:
            msg = parse_v2(payload)
        except V2Error as err:
            log.warning("%s: frame refused: %s", peer, err.text)
            return build_response(None, "AR", errors=[err])
        sender = pam.sender_of(msg, self.config)
        work = self._prepare(msg, sender)
        entries = partial(self._entries, msg, sender, peer=peer)
        handled, after = self._handle(msg, work, entries)
        audited = True
        if after:  # a refusal or a query: its entries are written after its transaction
            try:
                self.audit.write(after)
            except Exception:
                audited = False
                log.exception("message %s: audit trail not written", msg.control_id)
        if msg.repairs:
            log.info("%s: message %s repaired: %s", peer, msg.control_id, "; ".join(msg.repairs))
        if not audited and handled.message_type in (RSP_K23, pdq.RSP_K22):
            handled = Handled("AR", [V2Error(207, "audit trail unavailable, try again later")])
        warnings = [warning(note) for note in dict.fromkeys(msg.repairs)]
        return build_response(
            msg,
            handled.ack,
            message_type=handled.message_type,
            errors=[*handled.errors, *warnings],
            body=handled.body,
        )

    def _handle(
        self, msg: Message, work: Handled | tuple[Work, bool], entries: _Entries
    ) -> tuple[Handled, list[AuditEntry]]:
        """The message's outcome, and the audit entries left to write after its transaction
        (none when they were committed with it)."""
        if isinstance(work, Handled):
            return work, entries(work)
        handled, after = self._process(msg, *work, entries)
        msg.repairs[:] = dict.fromkeys(msg.repairs)  # a retried transaction repeats them
        return handled, after

    def _prepare(self, msg: Message, sender: Sender) -> Handled | tuple[Work, bool]:
        """What can be done before the message's transaction (header checks, reading and
        checking the segments; on SQLite, the reads ahead), or the refusal."""
        try:
            self._check_header(msg, sender)
            route = self._route(msg)
            self._check_sender(msg, sender, route)
            work = route.prepare(self.config, self.matcher, msg, sender)
            writes = route.writes
        except Exception as exc:
            return self._refusal(msg, exc)
        if work.ahead is not None and self.db.is_sqlite:
            try:
                with self.db.transaction(write=False) as session:
                    work.ahead(session)
            except Exception:
                log.exception("message %s: reading ahead failed", msg.control_id)
        return work, writes

    def _process(
        self, msg: Message, work: Work, writes: bool, entries: _Entries
    ) -> tuple[Handled, list[AuditEntry]]:
        """One unit of work (:class:`~enrs.kit.unit_of_work.UnitOfWork`; retried once after a
        conflicting concurrent write): a write that succeeds commits its audit entries with it;
        a query, or a refusal after its rollback, returns them to write after."""
        for attempt in (1, 2):
            uow = UnitOfWork(self.db, self.audit, write=writes)
            try:
                handled = work.apply(uow.session)
                uow.entries.extend(entries(handled))
                return handled, uow.commit()
            except IntegrityError:
                uow.rollback()
                if attempt == 2:
                    log.exception("message %s: conflicting writes", msg.control_id)
                    break
                log.info("message %s: concurrent write, retrying once", msg.control_id)
            except Exception as exc:
                uow.rollback()
                refused = self._refusal(msg, exc)
                return refused, entries(refused)
            finally:
                uow.close()
        refused = Handled("AR", [V2Error(207, "application internal error, try again later")])
        return refused, entries(refused)

    @staticmethod
    def _refusal(msg: Message, exc: Exception) -> Handled:
        if isinstance(exc, V2Error):
            return Handled(exc.ack, [exc])
        if isinstance(exc, EnrsError):
            if exc.status >= 500:
                return Handled("AR", [V2Error(207, exc.message)])
            code = 204 if isinstance(exc, NotFound) else 205 if isinstance(exc, Conflict) else 102
            return Handled("AE", [V2Error(code, exc.message, ack="AE")])
        log.error("message %s failed", msg.control_id, exc_info=exc)
        return Handled("AR", [V2Error(207, "application internal error, try again later")])

    def _check_header(self, msg: Message, sender: Sender) -> None:
        msh = msg.msh
        for n, what in (
            (7, "date/time"),
            (9, "message type"),
            (10, "control id"),
            (11, "processing id"),
            (12, "version id"),
        ):
            if not msh.get(n):
                raise V2Error(101, f"MSH-{n} ({what}) is required", location=f"MSH^1^{n}")
        if not msg.event:
            raise V2Error(101, "MSH-9.2 (trigger event) is required", location="MSH^1^9^1^2")
        if not msh.get(12).startswith("2."):
            raise V2Error(203, f"version {msh.get(12)!r} not supported", location="MSH^1^12")
        self._grant(msg, sender)

    def _grant(self, msg: Message, sender: Sender) -> FeederGrant:
        """The registration of the message's sender (MSH-4), else AR 103."""
        grant = self.senders.grant(sender.facility_oid) if sender.facility_oid else None
        if grant is None:
            known = f"OID {sender.facility_oid}" if sender.facility_oid else "no OID or FINESS"
            raise V2Error(
                103,
                f"sending facility {sender.facility or '(none)'} ({known}) is not registered "
                "on this server",
                location="MSH^1^4",
            )
        return grant

    def _registered(self, authority: str) -> bool:
        """Whether ``authority`` is a registered domain (read only when a sender is refused
        an authority: a sender is bound only to registered domains)."""
        with self.db.transaction(write=False) as session:
            return xref.known_domain(session, self.config, authority)

    def _check_sender(self, msg: Message, sender: Sender, route: Route) -> None:
        """The sender may send this type of message (AR 200) and, for a write, every facility
        identifier of every PID-3 and MRG-1 is of an authority registered for it (AE 103)."""
        grant = self._grant(msg, sender)
        needed = "cu" if route.writes else "s"
        if not all(grant.can(route.resource, letter) for letter in needed):
            raise V2Error(
                200,
                f"sender {sender.facility_oid} is not registered for {msg.message_type}^"
                f"{msg.event} (scope system/{route.resource}.{needed} required)",
                location="MSH^1^9",
            )
        if not route.writes:
            return
        for where, rep, authority in _written_authorities(msg, self.config):
            if not grant.may_write(authority):
                name, _, field = where.split("^")
                if not self._registered(authority):  # a typo, or a domain nobody declared
                    raise V2Error(
                        204,
                        f"{name}-{field}: the assigning authority {authority} is not registered "
                        "on this server",
                        ack="AE",
                        location=f"{where}^{rep}^4",
                    )
                raise V2Error(
                    103,
                    f"{name}-{field}: sender {sender.facility_oid} may not write identities of "
                    f"the assigning authority {authority}",
                    ack="AE",
                    location=where,
                )

    def _route(self, msg: Message) -> Route:
        kind, event = msg.message_type.upper(), msg.event.upper()
        route = self.routes.get((kind, event))
        if route is not None:
            return route
        if kind in {k for k, _ in self.routes}:
            raise V2Error(201, f"{kind}^{event} is not supported", location="MSH^1^9^1^2")
        raise V2Error(200, f"message type {kind!r} is not supported", location="MSH^1^9^1^1")

    @staticmethod
    def _entries(msg: Message, sender: Sender, handled: Handled, *, peer: str) -> list[AuditEntry]:
        """The message's audit entries: one per identity it touched (at least one)."""
        kind, event = msg.message_type.upper(), msg.event.upper()
        default = "E" if kind == "QBP" else "C" if event in ("A01", "A04", "A05", "A28") else "U"
        template = AuditEntry(
            category="hl7",
            interaction=f"{kind}^{event}"[:32],
            action=default,
            outcome=_OUTCOMES.get(handled.ack, Outcome.SERIOUS_FAILURE),
            outcome_desc="; ".join(e.text for e in handled.errors) or None,
            agent_kind="client",
            agent_id=(sender.facility_oid or sender.facility)[:128] or None,
            agent_name=sender.app[:256] or None,
            source_ip=peer.rsplit(":", 1)[0][:64],
            resource_type=handled.resource_type,
            query=handled.query,
            request_id=msg.control_id[:64] or None,
            detail=json.dumps({"repairs": list(dict.fromkeys(msg.repairs))}, ensure_ascii=False)
            if msg.repairs
            else None,
        )
        return [
            replace(
                template,
                action=t.action,
                patient_ref=f"Patient/{t.rri}" if t.rri else None,
                entity_ref=t.entity[:256],
            )
            for t in handled.touched
        ] or [template]


def _written_authorities(msg: Message, config: IdentityConfig) -> list[tuple[str, int, str]]:
    """(ERR location of the field, repetition, authority) of each facility identifier of the
    message's PID-3 and MRG-1, in every PID/MRG group: every identifier but the INS and the
    regional id, whose assigning authority can be read (one that cannot is refused by the
    handler)."""
    out: list[tuple[str, int, str]] = []
    seen: dict[str, int] = {}
    for seg in msg.segments:
        if seg.name not in ("PID", "MRG"):
            continue
        seen[seg.name] = seen.get(seg.name, 0) + 1
        field = 3 if seg.name == "PID" else 1
        where = f"{seg.name}^{seen[seg.name]}^{field}"
        out += [(where, rep, a) for rep, a in _facility_authorities(seg, field, config)]
    return out


def _facility_authorities(
    seg: Segment, field: int, config: IdentityConfig
) -> list[tuple[int, str]]:
    found = [(cx, cx.authority(config)) for cx in identifiers(seg, field)]
    return [
        (cx.rep, authority)
        for cx, authority in found
        if authority is not None and not cx.is_ins and cx.type_code not in ("INS-C", "RRI")
    ]


# --------------------------------------------------------------------------- the listener


def describe(settings: Settings) -> str:
    processes = settings.mllp_processes
    return f"mllp://{settings.mllp_host}:{settings.mllp_port} ({processes} process(es))"


Routes = Callable[[Settings], Mapping[tuple[str, str], Route]]


def identity_routes(_settings: Settings) -> Mapping[tuple[str, str], Route]:
    """The identity server's own routes (the listener of other services adds theirs)."""
    return ROUTES


async def _serve(
    settings: Settings, sock: socket.socket, balancer: Balancer | None, routes: Routes
) -> None:
    # No ping at each checkout (a round trip per transaction): a connection found dead fails
    # its message (AR 207, which the sender resends) and SQLAlchemy then renews the pool.
    db = Database(settings.database_url, pre_ping=False)
    db.start_checkpoints()
    matcher = matcher_for(settings.identity_model)
    # Each process handles one message at a time, in its event loop's thread: the processes
    # share the load (SQLite's writers take turns anyway), and no thread handoff or contention
    # for the GIL slows a message.
    audit = AuditWriter(db)
    config = IdentityConfig.from_settings(settings)
    feed = IdentityFeed(db, matcher, audit, config=config, routes=routes(settings))
    server = MLLPServer(
        feed, host=settings.mllp_host, sock=sock, balancer=balancer, limits=Limits(workers=0)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.serve(stop)
    finally:
        audit.close()
        db.dispose()


def _listen(
    settings: Settings,
    sock: socket.socket,
    counts: MutableSequence[int] | None,
    routes: Routes,
    slot: int,
) -> None:
    """One listener process of the group (slot 0: the one ``enrs serve`` started)."""
    logging.basicConfig(level=settings.log_level.upper())
    balancer = Balancer(counts, slot) if counts is not None else None
    asyncio.run(_serve(settings, sock, balancer, routes))


def run(settings: Settings, routes: Routes = identity_routes) -> None:
    """Serve the HL7 v2 listener on ``mllp_host:mllp_port`` until SIGTERM (``enrs serve``),
    from ``settings.mllp_processes`` processes sharing the port, with ``routes`` (a
    module-level function, given to each process: the identity feed's, and those of the
    services ``enrs.mllp_routes`` adds)."""
    logging.basicConfig(level=settings.log_level.upper())
    processes = settings.mllp_processes
    sock = bind(settings.mllp_host, settings.mllp_port)
    counts = Balancer.shared(processes) if processes > 1 else None
    log.info("MLLP on %s:%s, %d process(es)", settings.mllp_host, settings.mllp_port, processes)
    code = run_group(partial(_listen, settings, sock, counts, routes), processes, name="enrs-mllp")
    sock.close()
    if code:
        sys.exit(code)


LISTENER = Listener("mllp", describe, run)
