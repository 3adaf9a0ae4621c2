"""Notifications of events to the members of a patient's care circles (issue 15; the ANS
*Notification d'événements* guide's core events), by the platform (the portal's list and
badge, and MSSanté mail for who chose it) and to their software (FHIR ``Subscription``
rest-hooks, :mod:`.subscriptions`).

**Events** (emitted by the service that makes the change, in its transaction; ids only):

============================  =================  =============================================
outbox event                  kind (criteria)    who is told
============================  =================  =============================================
``encounter.admitted``        ``admission``      the current members of the patient's circles
``encounter.discharged``      ``discharge``      the same (ADT A01 / A03 of a facility)
``documents.filed``           ``new-document``   the same, for a document shared with them
``coordination.task_assigned````task-assigned``  the task's owner: the professional, the
                                                 structure (and its professionals known to
                                                 the platform: :func:`_structure_staff`), or
                                                 the members holding its role
``coordination.message``      ``mention``        the professionals the message mentions
============================  =================  =============================================

Never the one who caused it (the event's ``origin``: :func:`enrs.kit.events.set_origin`,
``rpps:…``, ``finess:…``, or the sending facility's authority for an ADT message), and only
those who are in the circle when the event is fanned out: a member removed before that is not
told, and what was queued for a removed subscriber is dropped when the removal commits
(:func:`_drop_for_removed`).

**Outputs**:

==================  ==========================================================================
the portal          ``coordination_notification`` rows, written by :class:`Inbox`, a consumer
                    of the outbox with its own cursor (:mod:`enrs.kit.outbound.consumer`)
FHIR rest-hooks     the subscriptions, destinations of the outbound queue, whose messages
                    :class:`CoordinationRenderer` writes (a FHIR R4 notification ``Bundle``,
                    :func:`notification_bundle`, its ``CommunicationRequest`` shaped as the
                    ANS NdE guide's: TRE_R254 event type where there is one)
MSSanté mail        those rows again, for the professionals who chose it: one mail per pass
                    through the operator's Postfix (:mod:`.notify_mail`)
==================  ==========================================================================

**Fan-out**: one reading of each event (:func:`audience`) serves the portal and the hooks,
both driven by the outbox in commit order and never skipping a committed event; all three run
in the ``notifications`` listener of ``enrs serve`` (the mail only when the mail servers run
with the platform).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.accounts.models import User
from enrs.coordination import circle, service
from enrs.coordination.chat_models import Message
from enrs.coordination.models import CareTeam, Member
from enrs.coordination.notify_models import Notification
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.directory.models import Activity, Professional
from enrs.documents import service as documents_service
from enrs.identity import service as identity_service
from enrs.identity.service import PatientRef
from enrs.kit.db import insert_ignoring_duplicates, utcnow
from enrs.kit.events import Event, enrich_at_commit
from enrs.kit.outbound.models import PENDING, REJECTED, OutboundDestination, OutboundMessage
from enrs.kit.outbound.queue import Destination, Outgoing

SERVICE = "coordination"  # the outbound destinations' selector "service" of the subscriptions
EVENT_KINDS: dict[str, str] = {
    "encounter.admitted": "admission",
    "encounter.discharged": "discharge",
    documents_service.FILED: "new-document",
    "coordination.task_assigned": "task-assigned",
    "coordination.message": "mention",
}
KINDS = tuple(EVENT_KINDS.values())
LABELS = {  # as the portal says them
    "admission": "Admission en établissement",
    "discharge": "Sortie d'établissement",
    "new-document": "Nouveau document dans le dossier",
    "task-assigned": "Tâche qui vous est attribuée",
    "mention": "Vous êtes mentionné(e) dans la messagerie",
}
EVENT_SYSTEM = "https://enrs.fr/fhir/CodeSystem/coordination-event"
# The ANS guide *Notification d'événements* (CI-SIS NdE): the event type of a notification's
# CommunicationRequest, from the national list TRE_R254-TypeEvenement where it has the event
# (a task given and a mention in the chat have no national code: ours then).
NDE_STRUCTURE = "https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/"
NDE_EVENT_SYSTEM = (
    "https://mos.esante.gouv.fr/NOS/TRE_R254-TypeEvenement/FHIR/TRE-R254-TypeEvenement"
)
NDE_CODES = {
    "admission": ("ADM", "Admission d'un patient dans un établissement de santé"),
    "discharge": ("SOR", "Sortie d'un patient de l'établissement de santé"),
    "new-document": ("DOC", "Dépôt de document pour un patient"),
}
NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-notification-r4"
)
STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
INBOX_CURSOR = "coordination-inbox"
REMOVED_REASON = "the subscriber is no longer in the patient's care circle"


@dataclass(frozen=True)
class Audience:
    """What an event is, and whom it concerns, as read once when it is fanned out.

    ``rpps`` / ``finess``: the current members of the circles concerned (each with the first
    circle they are in: where their notification leads); ``to_rpps`` / ``to_finess``: the
    event's addressees among them (``None``: every member); ``by_rpps`` / ``by_finess``: who
    caused it."""

    event_id: int
    kind: str
    patient: PatientRef
    focus: str | None
    facility: str | None
    at: datetime
    rpps: dict[str, str]
    finess: dict[str, str]
    to_rpps: frozenset[str] | None
    to_finess: frozenset[str] | None
    by_rpps: str | None
    by_finess: str | None

    def professionals(self) -> list[tuple[str, str]]:
        """``(RPPS, circle)`` of each professional to notify on the portal."""
        return [
            (rpps, team)
            for rpps, team in sorted(self.rpps.items())
            if (self.to_rpps is None or rpps in self.to_rpps) and rpps != self.by_rpps
        ]

    def reaches(self, rpps: str | None, finess: str | None) -> bool:
        """Whether a subscriber (a professional's RPPS, or a structure's FINESS) is told: a
        current member, an addressee, not the one who caused it."""
        if rpps:
            return (
                rpps in self.rpps
                and (self.to_rpps is None or rpps in self.to_rpps)
                and rpps != self.by_rpps
            )
        if finess:
            return (
                finess in self.finess
                and (self.to_finess is None or finess in self.to_finess)
                and finess != self.by_finess
            )
        return False


def _members(session: Session, teams: list[CareTeam]) -> tuple[dict[str, str], dict[str, str]]:
    """The current members of the active ``teams``: RPPS → circle, FINESS → circle."""
    rpps: dict[str, str] = {}
    finess: dict[str, str] = {}
    active = {t.id: t.resource_id for t in teams if t.status == circle.ACTIVE}
    if not active:
        return rpps, finess
    stmt = (
        select(Member.team_id, Member.rpps, Member.finess)
        .where(Member.team_id.in_(sorted(active)), circle.current_clause(utcnow()))
        .order_by(Member.team_id, Member.id)
    )
    for team_id, member_rpps, member_finess in session.execute(stmt):
        if member_rpps:
            rpps.setdefault(member_rpps, active[team_id])
        if member_finess:
            finess.setdefault(member_finess, active[team_id])
    return rpps, finess


def _origin(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    origin = str(payload.get("origin") or "")
    if origin.startswith("rpps:"):
        return origin.removeprefix("rpps:"), None
    if origin.startswith("finess:"):
        return None, origin.removeprefix("finess:")
    if origin and origin == payload.get("authority"):  # an ADT message: its facility
        return None, payload.get("facility")
    return None, None


def audience(session: Session, event: Event) -> Audience | None:
    """Read what ``event`` is and whom it concerns now; ``None``: nobody (a document not
    shared with the circles, a patient no longer active, a message mentioning nobody…)."""
    kind = EVENT_KINDS.get(event.name)
    if kind is None:
        return None
    p = event.payload
    by_rpps, by_finess = _origin(p)
    to_rpps: frozenset[str] | None = None
    to_finess: frozenset[str] | None = None
    focus: str | None = None
    if kind in ("admission", "discharge", "new-document"):
        if kind == "new-document":
            if not documents_service.is_shared(session, p["document"]):
                return None
            focus = f"DocumentReference/{p['document']}"
        patient = identity_service.current_patient(session, int(p["patient_id"]))
        if patient is None:
            return None
        teams = service.circles_of(session, patient)
    else:
        team = session.scalar(select(CareTeam).where(CareTeam.resource_id == p["team"]))
        if team is None:
            return None
        patient = identity_service.current_patient(session, team.patient_id)
        if patient is None:
            return None
        teams = [team]
        if kind == "task-assigned":
            focus = f"Task/{p['task']}"
            to_rpps, to_finess = _task_owners(session, team, p)
        else:
            found = _mentions(session, p["message"])
            if found is None:
                return None
            to_rpps, by_rpps = found
            to_finess = frozenset()
            focus = f"Communication/{p['message']}"
    rpps, finess = _members(session, teams)
    if to_finess and to_rpps is not None:
        # A task given to a structure of the circle: its professionals are told too.
        staff = _structure_staff(session, frozenset(f for f in to_finess if f in finess))
        for number, site in staff.items():
            rpps.setdefault(number, finess[site])
        to_rpps = to_rpps | frozenset(staff)
    return Audience(
        event.id,
        kind,
        patient,
        focus,
        p.get("facility"),
        utcnow(),
        rpps,
        finess,
        to_rpps,
        to_finess,
        by_rpps,
        by_finess,
    )


def _task_owners(
    session: Session, team: CareTeam, payload: dict[str, Any]
) -> tuple[frozenset[str], frozenset[str]]:
    """The task's owner as assigned: a professional, a structure, or the professionals holding
    the role in the circle now."""
    if payload.get("rpps"):
        return frozenset({payload["rpps"]}), frozenset()
    if payload.get("finess"):
        return frozenset(), frozenset({payload["finess"]})
    role = payload.get("role")
    if not role:
        return frozenset(), frozenset()
    stmt = select(Member.rpps, Member.finess).where(
        Member.team_id == team.id, Member.role == role, circle.current_clause(utcnow())
    )
    holders = session.execute(stmt).all()
    return (
        frozenset(r for r, _ in holders if r),
        frozenset(f for _, f in holders if f),
    )


def _structure_staff(session: Session, sites: frozenset[str]) -> dict[str, str]:
    """RPPS → FINESS of the professionals known to the platform (an active account with their
    RPPS: made by the admin, or at their first Pro Santé Connect login) who practise at one of
    these structures (an active activity at the site in the directory). Not every professional
    of the directory: a hospital's thousands would each get a row per task."""
    if not sites:
        return {}
    stmt = (
        select(User.rpps, Activity.finess_site)
        .join(Professional, Professional.id_nat_ps == literal("8") + User.rpps)
        .join(Activity, Activity.professional_id == Professional.id)
        .where(
            User.active.is_(True),
            Professional.active.is_(True),
            Activity.active.is_(True),
            Activity.finess_site.in_(sorted(sites)),
        )
        .order_by(User.rpps, Activity.finess_site)
    )
    found: dict[str, str] = {}
    for number, site in session.execute(stmt):
        if number and site:
            found.setdefault(number, site)
    return found


def _mentions(session: Session, message_id: str) -> tuple[frozenset[str], str | None] | None:
    """The RPPS a chat message mentions, and its sender's; ``None`` if it mentions nobody."""
    row = session.execute(
        select(Message.mentions, Message.sender_rpps).where(Message.resource_id == message_id)
    ).first()
    if row is None:
        return None
    mentioned = frozenset(json.loads(row.mentions or "[]"))
    return (mentioned, row.sender_rpps) if mentioned else None


# -- the portal's notifications ------------------------------------------------------------


class Inbox:
    """The :class:`~enrs.kit.outbound.consumer.Consumer` writing each professional's
    notifications."""

    cursor = INBOX_CURSOR
    names = tuple(EVENT_KINDS)

    def consume(self, session: Session, events: list[Event]) -> None:
        rows = []
        for event in events:
            found = audience(session, event)
            if found is None:
                continue
            for rpps, team in found.professionals():
                rows.append(
                    {
                        "event_id": event.id,
                        "rpps": rpps,
                        "kind": found.kind,
                        "patient_rri": found.patient.rri,
                        "team": team,
                        "focus": found.focus,
                        "facility": found.facility,
                        "created_at": found.at,
                        "read_at": None,
                    }
                )
        if rows:  # once per (event, professional), whoever consumed the event before
            table = Notification.__table__
            session.execute(insert_ignoring_duplicates(session.connection(), table), rows)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Shown:
    """A notification as the portal lists it: the circle it leads to only while the reader
    is still in it."""

    id: int
    kind: str
    label: str
    patient_rri: str
    team: str | None
    focus: str | None
    facility: str | None
    created_at: datetime
    read: bool


def _of(rpps: str, kinds: frozenset[str] | None) -> list[ColumnElement[bool]]:
    """A person's notifications, of ``kinds`` only when given
    (:func:`enrs.coordination.auth.notification_kinds`)."""
    where = [Notification.rpps == rpps]
    if kinds is not None:
        where.append(Notification.kind.in_(sorted(kinds)))
    return where


def unread_count(session: Session, rpps: str | None, kinds: frozenset[str] | None = None) -> int:
    if not rpps:
        return 0
    stmt = select(func.count(Notification.id)).where(
        *_of(rpps, kinds), Notification.read_at.is_(None)
    )
    return int(session.scalar(stmt) or 0)


def inbox(
    session: Session,
    rpps: str,
    *,
    kinds: frozenset[str] | None = None,
    limit: int = 100,
    patient: str | None = None,
    unread: bool = False,
) -> list[Shown]:
    """The person's notifications (of ``kinds``; about the patient of RRI ``patient`` only,
    unread only when asked), newest first."""
    where = _of(rpps, kinds)
    if patient is not None:
        where.append(Notification.patient_rri == patient)
    if unread:
        where.append(Notification.read_at.is_(None))
    stmt = select(Notification).where(*where).order_by(Notification.id.desc()).limit(limit)
    return [
        Shown(
            n.id,
            n.kind,
            LABELS.get(n.kind, n.kind),
            n.patient_rri,
            n.team,
            n.focus,
            n.facility,
            n.created_at,
            n.read_at is not None,
        )
        for n in session.scalars(stmt)
    ]


def mark_read(
    session: Session,
    rpps: str,
    ids: list[int] | None = None,
    kinds: frozenset[str] | None = None,
) -> int:
    """Mark the person's notifications (of ``kinds``) read (``ids``, or all of them); how
    many."""
    stmt = update(Notification).where(*_of(rpps, kinds), Notification.read_at.is_(None))
    if ids is not None:
        stmt = stmt.where(Notification.id.in_(ids))
    return int(session.execute(stmt.values(read_at=utcnow())).rowcount or 0)  # type: ignore[attr-defined]


# -- the subscriptions' rest-hooks -----------------------------------------------------------


def event_type(kind: str) -> dict[str, Any]:
    """The event's ``CodeableConcept`` in the NdE ``event-type`` extension: its
    TRE_R254-TypeEvenement code (:data:`NDE_CODES`), else ours."""
    code, display = NDE_CODES.get(kind, (kind, LABELS[kind]))
    system = NDE_EVENT_SYSTEM if kind in NDE_CODES else EVENT_SYSTEM
    return {"coding": [{"system": system, "code": code, "display": display}]}


def event_kinds(system: str, code: str) -> str | None:
    """Our event kind for an NdE event type (``system`` empty: either list), else None."""
    if system in ("", NDE_EVENT_SYSTEM):
        for kind, (national, _) in NDE_CODES.items():
            if national == code.upper():
                return kind
    if system in ("", EVENT_SYSTEM) and code in KINDS:
        return code
    return None


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def notification_bundle(
    found: Audience,
    subscription: str,
    fhir_base: str,
    *,
    rpps: str | None = None,
    finess: str | None = None,
) -> dict[str, Any]:
    """The FHIR R4 notification ``Bundle`` POSTed to a hook (the shape of the Subscriptions R5
    Backport IG for R4): ``history``, its first entry the subscription's status
    (``Parameters``: the subscription, ``event-notification``, the event's number — its outbox
    id —, its time and focus), then the event as a ``CommunicationRequest`` shaped as the ANS
    NdE guide's notification: the ``event-type`` (:func:`event_type`), ``event-time`` and
    ``event-emission-time`` extensions, ``basedOn`` the subscription, the subscriber
    (``rpps`` or ``finess``) as ``recipient``; and our event code as ``category``, the
    patient, what it is about, the facility. References and codes only."""
    request_id = f"urn:uuid:{uuid.uuid4()}"
    instant = found.at.isoformat().replace("+00:00", "Z")
    patient = f"Patient/{found.patient.rri}"
    sub_ref = f"{fhir_base}/Subscription/{subscription}"
    communication: dict[str, Any] = {
        "resourceType": "CommunicationRequest",
        "extension": [
            {"url": f"{NDE_STRUCTURE}event-type", "valueCodeableConcept": event_type(found.kind)},
            {"url": f"{NDE_STRUCTURE}event-time", "valueDateTime": _instant(found.at)},
            {"url": f"{NDE_STRUCTURE}event-emission-time", "valueDateTime": _instant(utcnow())},
        ],
        "basedOn": [{"reference": sub_ref}],
        "status": "active",
        "category": [
            {
                "coding": [
                    {"system": EVENT_SYSTEM, "code": found.kind, "display": LABELS[found.kind]}
                ]
            }
        ],
        "subject": {"reference": patient},
        "authoredOn": instant,
    }
    if found.focus:
        communication["about"] = [{"reference": found.focus}]
    if found.facility:
        communication["sender"] = {"identifier": {"system": FINESS_SYSTEM, "value": found.facility}}
    if rpps:
        communication["recipient"] = [{"identifier": {"system": RPPS_SYSTEM, "value": f"8{rpps}"}}]
    elif finess:
        communication["recipient"] = [{"identifier": {"system": FINESS_SYSTEM, "value": finess}}]
    status = {
        "resourceType": "Parameters",
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": sub_ref}},
            {"name": "topic", "valueCanonical": f"{EVENT_SYSTEM}#{found.kind}"},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": str(found.event_id)},
                    {"name": "timestamp", "valueInstant": instant},
                    {"name": "focus", "valueReference": {"reference": request_id}},
                    {"name": "additional-context", "valueReference": {"reference": patient}},
                ],
            },
        ],
    }
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": instant,
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": status,
                "request": {"method": "GET", "url": f"{sub_ref}/$status"},
                "response": {"status": "200"},
            },
            {
                "fullUrl": request_id,
                "resource": communication,
                "request": {"method": "POST", "url": "CommunicationRequest"},
                "response": {"status": "201"},
            },
        ],
    }


class CoordinationRenderer:
    """The :class:`~enrs.kit.outbound.queue.Renderer` of the coordination subscriptions (the
    outbound destinations whose selector's ``service`` is :data:`SERVICE`)."""

    names = tuple(EVENT_KINDS)

    def __init__(self, fhir_base: str) -> None:
        self.fhir_base = fhir_base.rstrip("/")

    def prepare(self, session: Session, event: Event) -> Audience | None:
        return audience(session, event)

    def render(
        self, prepared: Any, destination: Destination, control_prefix: str
    ) -> list[Outgoing]:
        found: Audience = prepared
        sel = destination.selector
        if sel.get("service") != SERVICE or found.kind not in (sel.get("events") or KINDS):
            return []
        if sel.get("patient") and sel["patient"] != found.patient.rri:
            return []
        if not found.reaches(sel.get("rpps"), sel.get("finess")):
            return []
        body = notification_bundle(
            found,
            str(sel["subscription"]),
            self.fhir_base,
            rpps=sel.get("rpps"),
            finess=sel.get("finess"),
        )
        return [
            Outgoing(
                summary=f"{found.kind} Patient/{found.patient.rri}",
                body=json.dumps(body, separators=(",", ":")),
                content_type="application/fhir+json",
                patient_ref=f"Patient/{found.patient.rri}",
            )
        ]


def _drop_for_removed(session: Session, rows: list[dict[str, Any]]) -> None:
    """When members leave a circle, in the transaction of their removal: the messages still
    queued for a subscription whose subscriber is no longer in any circle of that patient are
    refused (``rejected``, :data:`REMOVED_REASON`), so that none of them is sent afterwards."""
    teams = {str(r["payload"].get("team")) for r in rows}
    for resource_id in sorted(teams):
        team = session.scalar(select(CareTeam).where(CareTeam.resource_id == resource_id))
        patient = identity_service.current_patient(session, team.patient_id) if team else None
        if patient is None:
            continue
        rpps, finess = _members(session, service.circles_of(session, patient))
        ref = f"Patient/{patient.rri}"
        for dest in session.scalars(
            select(OutboundDestination).where(OutboundDestination.name.like(f"{SERVICE}:%"))
        ):
            sel = json.loads(dest.selector or "{}")
            if sel.get("rpps") in rpps or sel.get("finess") in finess:
                continue
            session.execute(
                update(OutboundMessage)
                .where(
                    OutboundMessage.destination_id == dest.id,
                    OutboundMessage.status == PENDING,
                    OutboundMessage.patient_ref == ref,
                )
                .values(status=REJECTED, last_error=REMOVED_REASON, sent_at=utcnow())
            )


enrich_at_commit(service.MEMBERSHIP, _drop_for_removed)
