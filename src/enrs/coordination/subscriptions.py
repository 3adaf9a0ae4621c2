"""Subscriptions of the care circles' members' software to their events (FHIR R4
``Subscription``, channel ``rest-hook``): the notifications of :mod:`.notify` POSTed to a hook,
from the durable outbound queue (:mod:`enrs.kit.outbound`: in order per hook, retried while the
hook is down, every delivery audited).

- **Who subscribes**: a professional (for themselves, by RPPS) or a facility's software (a
  system client bound to a member facility: for its structure, by FINESS). The subscriber must
  be a current member of the care circle of the patient named, or of at least one circle when
  no patient is named (403 otherwise). Whatever the criteria, a notification reaches it only
  for patients whose circle has it as a current member when the event is fanned out: a
  subscriber removed from a circle stops receiving at once.
- **Criteria**: ``CommunicationRequest`` (every kind of event, every patient of its circles),
  optionally ``?category=`` a comma-separated list of :data:`enrs.coordination.notify.KINDS`
  (``admission``, ``discharge``, ``new-document``, ``task-assigned``, ``mention``; each as
  ``code`` or ``system|code``), or ``?event-type=`` the same events by the ANS *Notification
  d'événements* (NdE) guide's parameter (``ADM``, ``SOR``, ``DOC`` of TRE_R254-TypeEvenement,
  or one of ours), and ``&patient=Patient/{RRI}``.
- **Endpoint**: an ``https://`` URL; ``http://`` only to this machine (``localhost``,
  ``127.0.0.1``, ``[::1]``): health data never crosses a network in clear.
- The one who made a subscription reads and ends it; ended, nothing more is queued for it.

Errors: 403 (not a member, no RPPS, a client bound to no facility), 404 (unknown or another's
subscription), 422 (criteria, channel or endpoint malformed).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.coordination import circle, notify, service
from enrs.documents.access import Reader
from enrs.identity import service as identity_service
from enrs.kit.errors import BadRequest, Forbidden, NotFound, Unprocessable
from enrs.kit.outbound import queue
from enrs.kit.outbound.models import OutboundDestination

CRITERIA_RESOURCE = "CommunicationRequest"
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class Criteria:
    kinds: tuple[str, ...]
    patient: str | None  # RRI


@dataclass(frozen=True)
class Subscription:
    """A coordination subscription as stored in its destination."""

    id: str
    by: str
    criteria: str
    endpoint: str
    reason: str
    active: bool
    error: str | None
    patient: str | None  # RRI


def parse_criteria(text: str) -> Criteria:
    """``CommunicationRequest[?category=k1,k2][&event-type=S|C,…][&patient=Patient/{RRI}]``,
    else 422. ``event-type``: the NdE guide's, a TRE_R254-TypeEvenement code (``ADM``, ``SOR``,
    ``DOC``) or one of ours; kept as the ``category`` it means."""
    resource, _, query = text.strip().partition("?")
    if resource != CRITERIA_RESOURCE:
        raise Unprocessable(
            f"Subscription.criteria: '{CRITERIA_RESOURCE}?category={{kinds}}&patient="
            "Patient/{RRI}' (care circle events) or 'Patient…' (identity feed)"
        )
    kinds: list[str] = []
    patient = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "category":
            for raw in value.split(","):
                system, bar, code = raw.strip().rpartition("|")
                if (bar and system != notify.EVENT_SYSTEM) or code not in notify.KINDS:
                    raise Unprocessable(
                        f"Subscription.criteria: category {raw!r} is not one of "
                        f"{', '.join(notify.KINDS)} ({notify.EVENT_SYSTEM})"
                    )
                if code not in kinds:
                    kinds.append(code)
        elif name == "event-type":  # the ANS NdE guide's search parameter
            for raw in value.split(","):
                system, _, code = raw.strip().rpartition("|")
                kind = notify.event_kinds(system, code)
                if kind is None:
                    raise Unprocessable(
                        f"Subscription.criteria: event-type {raw!r} is not one of "
                        f"{', '.join(c for c, _ in notify.NDE_CODES.values())} "
                        f"({notify.NDE_EVENT_SYSTEM}) or {', '.join(notify.KINDS)}"
                    )
                if kind not in kinds:
                    kinds.append(kind)
        elif name in ("patient", "subject"):
            if not value.startswith("Patient/") or len(value) <= len("Patient/"):
                raise Unprocessable("Subscription.criteria: patient=Patient/{RRI}")
            patient = value.removeprefix("Patient/")
        else:
            raise Unprocessable(f"Subscription.criteria: unknown parameter {name!r}")
    return Criteria(tuple(kinds) or notify.KINDS, patient)


def criteria_text(kinds: list[str], patient: str | None) -> str:
    text = f"{CRITERIA_RESOURCE}?category={','.join(kinds)}"
    return text + (f"&patient=Patient/{patient}" if patient else "")


def check_endpoint(url: str) -> str:
    """The hook's URL: https, or http to this machine only; else 422."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError as exc:
        raise Unprocessable(f"Subscription.channel.endpoint: {exc}") from exc
    if not host:
        raise Unprocessable("Subscription.channel.endpoint: an https:// URL with a host")
    if parts.scheme == "https":
        return url.strip()
    if parts.scheme == "http" and _loopback(host):
        return url.strip()
    raise Unprocessable(
        "Subscription.channel.endpoint: an https:// URL (http:// only to localhost)"
    )


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _subscriber(reader: Reader) -> tuple[str | None, str | None]:
    """``(RPPS, FINESS)``: who a subscription is for."""
    if reader.kind == "user":
        if not reader.rpps:
            raise Forbidden("a professional's subscription needs their RPPS")
        return reader.rpps, None
    if len(reader.structures) != 1:
        raise Forbidden(f"{reader.key} is bound to no member facility: it cannot subscribe")
    return None, next(iter(reader.structures))


def _require_member(
    session: Session, rpps: str | None, finess: str | None, patient: str | None
) -> None:
    sites = {finess} if finess else set()
    if patient is not None:
        found = identity_service.patient_by_rri(session, patient)
        ids = identity_service.merged_patient_ids(session, found.id) if found else []
        if not ids or circle.circle_relationship(session, rpps, sites, ids) is None:
            raise Forbidden(f"the subscriber is in no care circle of Patient/{patient}")
        return
    who = Reader("subscriber", "", "user" if rpps else "client", rpps, frozenset(sites))
    if not service.circles_with(session, who):
        raise Forbidden("the subscriber is in no care circle")


def subscribe(
    session: Session,
    reader: Reader,
    *,
    criteria: str,
    endpoint: str,
    headers: dict[str, str] | None = None,
    reason: str = "",
) -> Subscription:
    """A new subscription of the reader (a professional, or their facility's software)."""
    wanted = parse_criteria(criteria)
    url = check_endpoint(endpoint)
    rpps, finess = _subscriber(reader)
    _require_member(session, rpps, finess, wanted.patient)
    resource_id = uuid.uuid4().hex
    while resource_id.isdigit():  # never taken for one of the identity feed's (digits)
        resource_id = uuid.uuid4().hex
    selector: dict[str, Any] = {
        "service": notify.SERVICE,
        "subscription": resource_id,
        "by": reader.key,
        "rpps": rpps,
        "finess": finess,
        "events": list(wanted.kinds),
        "patient": wanted.patient,
        "reason": reason[:256],
    }
    try:
        queue.add_destination(
            session,
            name=f"{notify.SERVICE}:{resource_id}",
            transport="http",
            endpoint=url,
            selector=selector,
            headers=headers,
        )
    except BadRequest as exc:
        raise Unprocessable(f"Subscription.channel.endpoint: {exc.message}") from exc
    return one(session, reader, resource_id)


def _of(row: OutboundDestination, error: str | None) -> Subscription:
    sel = json.loads(row.selector or "{}")
    return Subscription(
        sel["subscription"],
        sel["by"],
        criteria_text(sel.get("events") or [], sel.get("patient")),
        row.endpoint,
        sel.get("reason") or "",
        row.active,
        error,
        sel.get("patient"),
    )


def _errors(session: Session, names: set[str]) -> dict[str, str | None]:
    return {d.name: d.head_error for d in queue.statuses(session) if d.name in names}


def own(session: Session, reader: Reader) -> list[Subscription]:
    """The reader's subscriptions, oldest first."""
    rows = [
        row
        for row in session.scalars(
            select(OutboundDestination)
            .where(OutboundDestination.name.like(f"{notify.SERVICE}:%"))
            .order_by(OutboundDestination.id)
        )
        if json.loads(row.selector or "{}").get("by") == reader.key
    ]
    errors = _errors(session, {r.name for r in rows})
    return [_of(r, errors.get(r.name)) for r in rows]


def _row(session: Session, reader: Reader, resource_id: str) -> OutboundDestination:
    row = session.scalar(
        select(OutboundDestination).where(
            OutboundDestination.name == f"{notify.SERVICE}:{resource_id}"
        )
    )
    if row is None or json.loads(row.selector or "{}").get("by") != reader.key:
        raise NotFound(f"Subscription/{resource_id} not found")
    return row


def one(session: Session, reader: Reader, resource_id: str) -> Subscription:
    row = _row(session, reader, resource_id)
    return _of(row, _errors(session, {row.name}).get(row.name))


def end(session: Session, reader: Reader, resource_id: str) -> None:
    """Nothing more is queued for the subscription (what is queued is still sent)."""
    row = _row(session, reader, resource_id)
    queue.set_active(session, row.name, False)


def to_fhir(sub: Subscription) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": sub.id,
        "status": "off" if not sub.active else "error" if sub.error else "active",
        "reason": sub.reason or "care circle notifications",
        "criteria": sub.criteria,
        "channel": {
            "type": "rest-hook",
            "endpoint": sub.endpoint,
            "payload": "application/fhir+json",
        },
    }
    if sub.error and sub.active:
        resource["error"] = sub.error
    return resource
