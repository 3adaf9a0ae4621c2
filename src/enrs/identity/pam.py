"""IHE PAM *Patient Identity Feed* (ITI-30) over HL7 v2.5, applied to the identity service.

- ADT^A28 create, A31 update, and ITI-8 style A01, A03, A04, A05, A08 (the same PID): the
  identity is created or updated, then matched (``service.feed``); an A01 (admission) or an
  A03 (discharge) is then announced as an event (:data:`ENCOUNTERS`: the patient and the
  facility, for the care circles' notifications, :mod:`enrs.coordination.notify`);
- A40 merge (``updates.merge_sources``) and A47 change of identifier
  (``updates.change_identifier``);
- A24 link and A37 unlink of two identities of the facility (``updates.link_identities``,
  ``updates.unlink_identities``): its manual decision that they are one person, or two;

the PID read with the French extension (:mod:`enrs.identity.pamfr`). A handler first does what
needs no database (read and check the segments), then returns the work of the message's
transaction; both raise :class:`~enrs.kit.hl7v2.V2Error` or the service's errors to refuse, and
the work returns what it touched, for the audit trail. Handlers get the identity server's
configuration (:class:`~enrs.identity.config.IdentityConfig`: FINESS authorities, accepted INS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.orm import Session

from enrs.identity import repository, service, updates
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import Matcher
from enrs.identity.pamfr import authority_of, identity_from_pid, ipp_of, location_of
from enrs.identity.traits import InvalidTrait
from enrs.kit.errors import Unprocessable
from enrs.kit.events import emit
from enrs.kit.hl7v2 import Message, Segment, V2Error

FEED_EVENTS = frozenset({"A01", "A03", "A04", "A05", "A08", "A28", "A31"})
# The events an ADT message announces once its identity is applied: the patient's admission
# (A01) and discharge (A03) in the sending facility.
ENCOUNTERS = {"A01": "encounter.admitted", "A03": "encounter.discharged"}


@dataclass(frozen=True)
class Sender:
    """Who sent the message: MSH-3 and MSH-4, and MSH-4 as an OID when it is one."""

    app: str
    facility: str
    facility_oid: str | None

    @property
    def actor(self) -> str:
        return f"hl7:{self.app}@{self.facility}"[:256]


@dataclass(frozen=True)
class Touched:
    """One identity a message read or changed (an audit entry): its RRI, key, action (CRUDE)."""

    rri: str | None
    entity: str
    action: str


@dataclass
class Handled:
    """The outcome of a message: MSA-1, the errors, and the answer's type and body if not a
    plain ACK."""

    ack: str = "AA"
    errors: list[V2Error] = field(default_factory=list)
    message_type: str | None = None
    body: list[str] = field(default_factory=list)
    touched: list[Touched] = field(default_factory=list)
    query: str | None = None
    resource_type: str = "Patient"  # what the audit records name (a DocumentReference…)


def sender_of(msg: Message, config: IdentityConfig) -> Sender:
    """The sending application and facility (MSH-3, MSH-4)."""
    msh = msg.msh
    oid = authority_of(config, msh.get(4, 1), msh.get(4, 2), msh.get(4, 3))
    return Sender(msh.get(3, 1) or msh.get(3, 2), msh.get(4, 1) or msh.get(4, 2), oid)


def required(msg: Message, name: str) -> Segment:
    seg = msg.segment(name)
    if seg is None:
        raise V2Error(100, f"{msg.message_type}^{msg.event} needs a {name} segment", location=name)
    return seg


@dataclass(frozen=True)
class Work:
    """What a message does in its transaction (``apply``), and what may be read ahead of that
    transaction (``ahead``, read-only: it only saves ``apply`` work, never changes its result;
    what changed since may make the first ``apply`` fail with ``IntegrityError``, and the
    caller then runs it again in a new transaction, as for any concurrent write)."""

    apply: Callable[[Session], Handled]
    ahead: Callable[[Session], None] | None = None


# A handler: what it does before the message's transaction (read and check the segments,
# raising V2Error to refuse), returning the work of that transaction.
Prepare = Callable[[IdentityConfig, Matcher, Message, Sender], Work]


@dataclass(frozen=True)
class Route:
    """How the listener handles one (message type, event): its handler, whether it writes,
    and the resource of the SMART scope its sender needs (``c`` and ``u`` on it to write,
    ``s`` to query). Other services give the listener their routes (``enrs.mllp_routes``)."""

    prepare: Prepare
    writes: bool
    resource: str = "Patient"


def _refusal(exc: Unprocessable) -> Exception:
    """A trait the identity rules refuse: AE, ERR-2 pointing at its field."""
    if isinstance(exc, InvalidTrait):
        return V2Error(102, exc.message, ack="AE", location=location_of(exc.field))
    return exc


def announce_encounter(session: Session, name: str, rri: str, authority: str) -> None:
    """Emit ``name`` (:data:`ENCOUNTERS`) for the patient ``rri`` in the transaction of its
    message: ``patient_id``, the ``facility`` (the FINESS owning the IPP's domain, if it is
    registered with one) and the ``authority``; ids only. Its origin is the sender's
    authority (``service.feed_prepared`` set it)."""
    patient = service.patient_by_rri(session, rri)
    if patient is None:  # just fed: never
        return
    domain = repository.domain(session, authority)
    facility = domain.finess if domain is not None else None
    emit(session, name, {"patient_id": patient.id, "facility": facility, "authority": authority})


def feed(config: IdentityConfig, matcher: Matcher, msg: Message, sender: Sender) -> Work:
    """ITI-30 A28/A31 (and A01/A03/A04/A05/A08): create or update the identity, then match;
    an admission or a discharge is announced (:func:`announce_encounter`)."""
    pid = required(msg, "PID")
    data = identity_from_pid(
        config,
        pid,
        msg.segment("ZFD"),
        msg.repairs,
        facility=sender.facility_oid,
        segments=msg.segments,
    )
    try:
        prepared: service.Prepared | None = service.prepare(data, config)
        refused = None
    except Unprocessable as exc:  # refused in the transaction, after the identity's state
        prepared, refused = None, _refusal(exc)
    keyed = (data.authority, data.ipp)

    # The read ahead found no identity of this key: the first attempt does not look again (an
    # identity of the same key created since makes its insert fail on the unique key, and the
    # attempt that follows, after that rollback, looks).
    absent: list[bool] = []

    def apply(session: Session) -> Handled:
        key = None if absent and absent.pop() else repository.key_of(session, *keyed)
        if key is not None and not key.active:
            raise V2Error(
                204,
                f"identity {data.ipp!r} was merged or deactivated",
                ack="AE",
                location="PID^1^3",
            )
        if refused is not None:
            raise refused
        assert prepared is not None
        known = repository.source(session, key.id) if key is not None else None
        result = service.feed_prepared(session, matcher, prepared, known, actor=sender.actor)
        msg.repairs.extend(f"PID-3: {note}" for note in result.ignored)
        if duplicate := service.same_facility_note(result):
            msg.repairs.append(f"PID-3: {duplicate}")
        if (encounter := ENCOUNTERS.get(msg.event.upper())) is not None:
            announce_encounter(session, encounter, result.rri, data.authority)
        action = "C" if result.created else "U"
        return Handled(touched=[Touched(result.rri, f"{data.authority}|{data.ipp}", action)])

    def ahead(session: Session) -> None:
        if prepared is not None and repository.key_of(session, *keyed) is None:
            absent.append(True)
            service.prescore(session, matcher, prepared)

    return Work(apply, ahead)


def merge(config: IdentityConfig, matcher: Matcher, msg: Message, sender: Sender) -> Work:
    """ITI-30 A40: each PID/MRG group merges MRG-1's identity into PID-3's."""
    return Work(partial(_merge, config=config, matcher=matcher, msg=msg, sender=sender))


def _merge(
    session: Session, *, config: IdentityConfig, matcher: Matcher, msg: Message, sender: Sender
) -> Handled:
    handled, pid = Handled(), None
    facility = sender.facility_oid
    for seg in msg.segments:
        if seg.name == "PID":
            pid = seg
        elif seg.name == "MRG" and pid is not None:
            authority, surviving = ipp_of(config, pid, 3, msg.repairs, facility=facility)
            merged = _prior(config, seg, authority, msg.repairs)
            if repository.source_by_key(session, authority, surviving) is None:
                data = identity_from_pid(config, pid, None, msg.repairs, facility=facility)
                try:
                    fed = service.feed(session, matcher, data, actor=sender.actor, config=config)
                    msg.repairs.extend(f"PID-3: {note}" for note in fed.ignored)
                except Unprocessable as exc:
                    raise _refusal(exc) from None
            result = updates.merge_sources(
                session,
                authority=authority,
                surviving_ipp=surviving,
                merged_ipp=merged,
                actor=sender.actor,
            )
            handled.touched.append(Touched(result.merged_rri, f"{authority}|{merged}", "U"))
            if result.surviving_rri != result.merged_rri:
                entity = f"{authority}|{surviving}"
                handled.touched.append(Touched(result.surviving_rri, entity, "U"))
            pid = None
    if not handled.touched:
        raise V2Error(100, "ADT^A40 needs PID and MRG segments", location="MRG")
    return handled


def change(config: IdentityConfig, _matcher: Matcher, msg: Message, sender: Sender) -> Work:
    """ITI-30 A47: MRG-1's IPP becomes PID-3's."""
    return Work(partial(_change, config=config, msg=msg, sender=sender))


def _change(session: Session, *, config: IdentityConfig, msg: Message, sender: Sender) -> Handled:
    pid, mrg = required(msg, "PID"), required(msg, "MRG")
    authority, new = ipp_of(config, pid, 3, msg.repairs, facility=sender.facility_oid)
    old = _prior(config, mrg, authority, msg.repairs)
    rri = updates.change_identifier(
        session, authority=authority, old_ipp=old, new_ipp=new, actor=sender.actor
    )
    return Handled(touched=[Touched(rri, f"{authority}|{new}", "U")])


def link(config: IdentityConfig, _matcher: Matcher, msg: Message, sender: Sender) -> Work:
    """ITI-30 A24: the identities of the two PID segments are one person (the second joins the
    first's regional patient)."""
    pair = _pair(config, msg, sender)
    return Work(partial(_link, pair=pair, actor=sender.actor, unlink=False))


def unlink(config: IdentityConfig, _matcher: Matcher, msg: Message, sender: Sender) -> Work:
    """ITI-30 A37: the identities of the two PID segments are two persons (the second leaves
    the first's regional patient)."""
    pair = _pair(config, msg, sender)
    return Work(partial(_link, pair=pair, actor=sender.actor, unlink=True))


def _pair(config: IdentityConfig, msg: Message, sender: Sender) -> tuple[str, str, str]:
    """(authority, first IPP, second IPP) of the two PID segments of an A24 or A37."""
    pids = [seg for seg in msg.segments if seg.name == "PID"]
    if len(pids) < 2:
        raise V2Error(100, f"ADT^{msg.event} needs two PID segments", location="PID")
    authority, first = ipp_of(config, pids[0], 3, msg.repairs, facility=sender.facility_oid)
    other, second = ipp_of(config, pids[1], 3, msg.repairs, facility=authority)
    if other != authority:
        raise V2Error(
            102,
            "the two PID-3 must be identifiers of the same assigning authority",
            ack="AE",
            location="PID^2^3",
        )
    return authority, first, second


def _link(session: Session, *, pair: tuple[str, str, str], actor: str, unlink: bool) -> Handled:
    authority, first, second = pair
    change = updates.unlink_identities if unlink else updates.link_identities
    result = change(session, authority=authority, first_ipp=first, second_ipp=second, actor=actor)
    return Handled(
        touched=[
            Touched(result.first_rri, f"{authority}|{first}", "U"),
            Touched(result.second_rri, f"{authority}|{second}", "U"),
        ]
    )


def _prior(config: IdentityConfig, mrg: Segment, authority: str, notes: list[str]) -> str:
    prior_authority, prior = ipp_of(config, mrg, 1, notes, facility=authority, default=authority)
    if prior_authority != authority:
        raise V2Error(
            102,
            "MRG-1 and PID-3 must be identifiers of the same assigning authority",
            ack="AE",
            location="MRG^1^1",
        )
    return prior
