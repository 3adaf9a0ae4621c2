"""Teleradiology and second reading in the portal (French UI, mobile-first), over
:mod:`enrs.imaging.reading`:

- ``GET /lectures`` — "Vacations de lecture": the radiologist's worklist across their reading
  groups (overdue first, flagged *en retard*; theirs, then open to claim, each with its
  "Prendre" button), and the requests of the sites where the professional practises with
  their state and turnaround time; the form asking for a reading of an archived study;
- ``POST /lectures`` — a reading asked for (study UID, group, kind, priority, site);
- ``GET /lectures/{request}`` — a request's page: the study, the readings as the person may
  see them (the other independent screening reading's result withheld), the claim, release
  and report form of the reading they hold, the link to the filed report once done;
- ``POST /lectures/{request}/{reading}`` — ``prendre``, ``rendre`` or ``signer``, on the
  version the page showed: a reading changed in between is refused (409, "Cette lecture a
  été prise ou modifiée entre-temps"), never overwritten.

Forms carry the session's CSRF token; pages are for professionals (role ``professional``
with an RPPS). Every page and change is audited with the patient (a worklist: one record per
patient listed).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.documents.access import Reader, reader_of
from enrs.imaging import reading as service
from enrs.imaging.reading import Filing
from enrs.imaging.reading_models import ReadingRequest
from enrs.kit.errors import Conflict, Forbidden, Unprocessable
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _audit, _checked, _zone
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

STATE_FR = {"open": "en attente", "discordant": "discordance : 3e lecture", "done": "signé"}
READING_FR = {"waiting": "à prendre", "claimed": "prise", "signed": "signée"}
KIND_FR = {"teleradiology": "Téléradiologie", "screening": "Dépistage (double lecture)"}
PRIORITY_FR = {"routine": "programmée", "urgent": "urgente"}
STALE = (
    "Cette lecture a été prise ou modifiée entre-temps : rien n'a été changé. Rechargez la "
    "page pour voir son état actuel."
)


def _professional(session: Session, user: Principal) -> Reader:
    if "professional" not in user.roles or not user.rpps:
        raise Forbidden("les lectures sont réservées aux professionnels de santé (RPPS)")
    return reader_of(session, user)


def _audit_patients(request: Request, user: Principal, rris: list[str]) -> None:
    """The list's audit record names its first patient; each other one gets its own."""
    if rris:
        request.state.audit[-1].patient_ref = f"Patient/{rris[0]}"
    for rri in rris[1:]:
        entry = new_entry(request, "rest", "search-type", action="E",
                          resource_type="ServiceRequest")  # fmt: skip
        set_agent(entry, user)
        entry.patient_ref = f"Patient/{rri}"


def duration_fr(taken: timedelta | None) -> str:
    if taken is None:
        return "—"
    minutes = int(taken.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _filing(request: Request) -> Filing:
    settings = request.app.state.settings
    return Filing(
        request.app.state.storage,
        request.app.state.identity_config,
        settings.oid_root,
        settings.max_document_bytes,
        _zone(request),
    )


@router.get("/lectures")
def worklist(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    """ "Vacations de lecture": the worklist, the requests of my sites, the request form."""
    _audit(request, user, "search-type", "ServiceRequest", None)
    request.state.audit[-1].query = "worklist=me"
    reader = _professional(session, user)
    member = bool(reader.rpps and service.is_member_anywhere(session, reader))
    items = service.worklist(session, reader) if member else []
    asked = service.requests_of_my_sites(session, reader)
    studies = {r.id: service.study_of(session, r) for r in [i.request for i in items] + asked}
    rris = {r.id: service.patient_of(session, r).rri for r in [i.request for i in items] + asked}
    _audit_patients(request, user, sorted(set(rris.values())))
    return _render(
        request,
        "reading_worklist.html",
        member=member,
        items=items,
        asked=asked,
        studies=studies,
        rris=rris,
        groups=[g.name for g, _ in service.groups(session)],
        sites=sorted(reader.structures),
        state_fr=STATE_FR,
        step_fr=service.STEP_FR,
        kind_fr=KIND_FR,
        priority_fr=PRIORITY_FR,
        turnaround=lambda r: duration_fr(service.turnaround(r)),
        late=service.is_overdue,
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/lectures")
def ask(
    request: Request,
    user: PortalUser,
    session: DbSession,
    etude: Annotated[str, Form()] = "",
    groupe: Annotated[str, Form()] = "",
    type_lecture: Annotated[str, Form()] = "teleradiology",
    priorite: Annotated[str, Form()] = "routine",
    site: Annotated[str, Form()] = "",
    question: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """A professional of the requesting site asks for a reading of an archived study."""
    _audit(request, user, "create", "ServiceRequest", None)
    reader = _professional(session, user)
    _checked(session, user, csrf)
    asked, patient = service.request_reading(
        session, reader, study_uid=etude, group=groupe, kind=type_lecture, priority=priorite,
        finess=site.strip(), reason=question,
    )  # fmt: skip
    request.state.audit[-1].patient_ref = f"Patient/{patient.rri}"
    request.state.audit[-1].entity_ref = f"ServiceRequest/{asked.resource_id}"
    return RedirectResponse(f"/lectures/{quote(asked.resource_id)}", status_code=303)


def _followed(
    request: Request, session: Session, user: Principal, request_id: str, interaction: str
) -> tuple[ReadingRequest, Reader]:
    """The request, for a reader of its group or a professional of its site (else 403); the
    audit record names its patient."""
    _audit(request, user, interaction, "ServiceRequest", None)
    request.state.audit[-1].entity_ref = f"ServiceRequest/{request_id}"[:256]
    reader = _professional(session, user)
    asked = service.request_by_id(session, request_id)
    rri = service.patient_of(session, asked).rri
    request.state.audit[-1].patient_ref = f"Patient/{rri}"
    if not service.may_follow(session, reader, asked):
        raise Forbidden("cette demande de lecture est réservée à son groupe et au site demandeur")
    return asked, reader


@router.get("/lectures/{request_id}")
def reading_page(
    request: Request, request_id: str, user: PortalUser, session: DbSession
) -> HTMLResponse:
    """A request's page: the study, its readings as the person may see them, the forms."""
    asked, reader = _followed(request, session, user, request_id, "read")
    member = service.is_member(session, reader, asked.group_id)
    shown = service.shown(session, reader, asked)
    return _render(
        request,
        "reading_page.html",
        asked=asked,
        study=service.study_of(session, asked),
        group=service.group_of(session, asked).name,
        rri=service.patient_of(session, asked).rri,
        shown=shown,
        member=member,
        my_rpps=reader.rpps,
        assessments=service.ASSESSMENTS,
        state_fr=STATE_FR,
        reading_fr=READING_FR,
        step_fr=service.STEP_FR,
        kind_fr=KIND_FR,
        priority_fr=PRIORITY_FR,
        turnaround=duration_fr(service.turnaround(asked)),
        late=service.is_overdue(asked),
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/lectures/{request_id}/{reading_id}")
def act(
    request: Request,
    request_id: str,
    reading_id: str,
    user: PortalUser,
    session: DbSession,
    action: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    conclusion: Annotated[str, Form()] = "",
    classification: Annotated[str, Form()] = "",
    retour: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Claim (``prendre``), release (``rendre``) or sign (``signer``) a reading."""
    asked, reader = _followed(request, session, user, request_id, "update")
    request.state.audit[-1].resource_type = "DiagnosticReport"
    request.state.audit[-1].entity_ref = f"DiagnosticReport/{reading_id}"[:256]
    _checked(session, user, csrf)
    found = service.reading_by_id(session, reading_id)
    if found.request_id != asked.id:
        raise Unprocessable("cette lecture n'est pas celle de cette demande")
    if not version.isdigit():
        raise Unprocessable("version de la lecture manquante : rechargez la page")
    try:
        if action == "prendre":
            service.claim(session, reader, reading_id, int(version))
        elif action == "rendre":
            service.release(session, reader, reading_id, int(version))
        elif action == "signer":
            _sign(request, session, user, reader, reading_id, int(version), conclusion,
                  classification)  # fmt: skip
        else:
            raise Unprocessable("action inconnue : prendre, rendre ou signer")
    except service.ReadingChanged:
        raise Conflict(STALE) from None
    except service.SameReader:
        raise Forbidden(
            "vous avez déjà fait une autre lecture de ce dépistage : les lectures sont faites "
            "par des radiologues différents"
        ) from None
    if retour == "liste":
        return RedirectResponse("/lectures", status_code=303)
    return RedirectResponse(f"/lectures/{quote(asked.resource_id)}", status_code=303)


def _sign(
    request: Request,
    session: Session,
    user: Principal,
    reader: Reader,
    reading_id: str,
    version: int,
    conclusion: str,
    classification: str,
) -> None:
    try:
        _, asked = service.sign(
            session, reader, reading_id, version, conclusion=conclusion,
            assessment=classification or None, filing=_filing(request),
        )  # fmt: skip
    except service.ReadingChanged:
        raise
    except Conflict as exc:
        raise Conflict(f"signature impossible : {exc.message}") from None
    except Unprocessable as exc:
        raise Unprocessable(f"compte rendu incomplet : {exc.message}") from None
    if asked.document_id is not None:  # the report filed in the patient's record
        entry = new_entry(request, "rest", "create", action="C",
                          resource_type="DocumentReference")  # fmt: skip
        set_agent(entry, user)
        entry.entity_ref = f"DocumentReference/{asked.document_id}"
        entry.patient_ref = request.state.audit[0].patient_ref
