"""The patient file's pages (French UI) over the document repository: find a patient by an
identifier, their documents filtered by type and date, a document opened (a PDF in the
browser's viewer, a structured CDA as readable HTML), a professional's upload form, the
declaration of an access (with its reason, or *bris de glace*), and the access log ("qui a
consulté mes documents"). The repository's rule decides what each person sees
(:mod:`enrs.documents.access`); every page is audited with the patient."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from typing import Annotated
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.documents import cda, cda_html, dmp_feed, mhd, repository, service
from enrs.documents.access import Reader, reader_of
from enrs.documents.models import DocumentEntry
from enrs.documents.terminology import Binding, Terminology
from enrs.documents.upload import Upload, file_upload
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.kit.errors import BadRequest, Forbidden
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser, csrf_matches
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
PAGE_SIZE = 100
READERS = frozenset({"professional", "admin"})


def _audit(
    request: Request, user: Principal, interaction: str, kind: str, patient: PatientRef | None
) -> None:
    action = {"create": "C", "read": "R"}.get(interaction, "E")
    entry = new_entry(request, "rest", interaction, action=action, resource_type=kind)
    set_agent(entry, user)
    if patient is not None:
        entry.patient_ref = f"Patient/{patient.rri}"


def _may_open(user: Principal) -> None:
    if not READERS & user.roles:
        raise Forbidden("le dossier patient est réservé aux professionnels de santé")


def _checked(session: Session, user: Principal, csrf: str) -> None:
    if not csrf_matches(accounts_service.session_csrf(session, user), csrf):
        raise Forbidden("jeton CSRF invalide")


def _zone(request: Request) -> ZoneInfo:
    """The time zone the pages show times in (``ENRS_TIMEZONE``)."""
    return ZoneInfo(request.app.state.settings.timezone)


def _patient(request: Request, session: Session, rri: str) -> PatientRef:
    config: IdentityConfig = request.app.state.identity_config
    return service.resolve_patient(session, config, ("rri", rri))


@router.get("/dossiers")
def find_patient(
    request: Request, user: PortalUser, session: DbSession, identifiant: str = ""
) -> Response:
    """A patient by INS (15 characters), RRI, or ``domaine|IPP``."""
    _may_open(user)
    value = identifiant.strip()
    if not value:
        return _render(request, "documents_find.html", asked="", csrf=None)
    config: IdentityConfig = request.app.state.identity_config
    if "|" in value:
        domain, _, ipp = value.partition("|")
        named = (domain.removeprefix("urn:oid:").strip(), ipp.strip())
    elif len(value.replace(" ", "")) == 15:
        named = (sorted(config.accepted_ins)[0], value.replace(" ", ""))
    else:
        named = ("rri", value)
    _audit(request, user, "search-type", "Patient", None)
    try:
        patient = service.resolve_patient(session, config, named)
    except service.UnknownDocumentPatient:
        return _render(request, "documents_find.html", status=404, asked=value, csrf=None)
    return RedirectResponse(f"/dossiers/{quote(patient.rri)}", status_code=303)


def relation_fr(relationship: str | None) -> str | None:
    """How the page says why the person reads the patient's documents (the access rule's
    reasons, written for the audit trail, put in French)."""
    if relationship is None:
        return None
    kind, _, detail = relationship.partition(": ")
    if relationship.startswith("in care at "):
        return f"le patient est pris en charge par votre structure (FINESS {relationship[11:]})"
    if kind == "declared":
        return f"accès déclaré — {detail}"
    if kind == "emergency":
        return f"accès en urgence (bris de glace) — {detail}"
    return relationship


def _bound(text: str, *, end: bool) -> datetime | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"date {text!r} : AAAA-MM-JJ attendue") from None
    return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)


@router.get("/dossiers/{rri}")
def patient_file(
    request: Request,
    rri: str,
    user: PortalUser,
    session: DbSession,
    type: str = "",
    du: str = "",
    au: str = "",
    message: str = "",
) -> HTMLResponse:
    """The patient's documents this person may read, newest first, with the filters."""
    _may_open(user)
    patient = _patient(request, session, rri)
    _audit(request, user, "search-type", "DocumentReference", patient)
    reader = reader_of(session, user)
    granted = service.access_to(session, reader, patient)
    request.state.audit[-1].detail = service.read_detail(granted)
    stmt = repository.readable_entries(reader, granted)
    if type:
        stmt = stmt.where(DocumentEntry.type_code == type)
    if (start := _bound(du, end=False)) is not None:
        stmt = stmt.where(DocumentEntry.date >= start)
    if (stop := _bound(au, end=True)) is not None:
        stmt = stmt.where(DocumentEntry.date <= stop)
    rows = list(
        session.scalars(
            stmt.order_by(DocumentEntry.date.desc(), DocumentEntry.id.desc()).limit(PAGE_SIZE)
        )
    )
    terms = Terminology.load()
    types = {c.code: c.display for c in terms.concepts(Binding.TYPE)}
    return _render(
        request,
        "documents_patient.html",
        patient=patient,
        documents=rows,
        types=types,
        chosen={"type": type, "du": du, "au": au},
        filter_types=sorted({r.type_code for r in rows} | ({type} if type else set())),
        relationship=relation_fr(granted.relationship),
        emergency=granted.emergency,
        opposed=granted.opposed_all,
        can_upload="professional" in user.roles and bool(reader.rpps),
        facility_types=terms.concepts(Binding.FACILITY_TYPE),
        practice_settings=terms.concepts(Binding.PRACTICE_SETTING),
        all_types=sorted(types.items(), key=lambda item: item[1]),
        message=message,
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
    )


def _visible(
    request: Request, session: Session, user: Principal, rri: str, doc_id: str, kind: str
) -> tuple[DocumentEntry, PatientRef, Reader]:
    _may_open(user)
    reader = reader_of(session, user)
    patient = _patient(request, session, rri)
    _audit(request, user, "read", kind, patient)
    request.state.audit[-1].entity_ref = f"DocumentReference/{doc_id}"
    entry, found, granted = service.visible_entry(session, reader, doc_id)
    if found.id != patient.id:
        raise Forbidden("ce document n'est pas dans ce dossier")
    request.state.audit[-1].detail = service.read_detail(granted)
    return entry, patient, reader


def _shown(entry: DocumentEntry, data: bytes) -> tuple[bytes, str] | None:
    """What the browser's own viewer shows: the content, or a CDA's PDF body."""
    if entry.mime_type in mhd.CDA_TYPES:
        header = cda.parse_cda(data)
        if header.body is not None and header.body_media_type in ("application/pdf", "text/plain"):
            return header.body, header.body_media_type
        return None
    return data, entry.mime_type


@router.get("/dossiers/{rri}/documents/{doc_id}")
def document_page(
    request: Request, rri: str, doc_id: str, user: PortalUser, session: DbSession, message: str = ""
) -> HTMLResponse:
    """One document: a PDF in the browser's viewer, a structured CDA as HTML."""
    entry, patient, reader = _visible(request, session, user, rri, doc_id, "DocumentReference")
    data = service.content_of(request.app.state.storage, entry)
    shown = _shown(entry, data)
    rendered = cda_html.render_html(data) if shown is None else None
    types = {c.code: c.display for c in Terminology.load().concepts(Binding.TYPE)}
    return _render(
        request,
        "documents_view.html",
        patient=patient,
        entry=entry,
        type_label=types.get(entry.type_code, entry.type_code),
        rendered=rendered,
        viewer=shown is not None,
        hidden=entry.visibility_codes & mhd.ONLY_LIFTED,
        may_disclose="professional" in user.roles
        and entry.status == "current"
        and repository.is_own(session, reader, entry.id),
        message=message,
        tz=_zone(request),
        dmp=dmp_feed.status_of(session, entry),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/dossiers/{rri}/documents/{doc_id}/visibilite")
def disclose(
    request: Request,
    rri: str,
    doc_id: str,
    user: PortalUser,
    session: DbSession,
    code: Annotated[str, Form()] = "",
    confirme: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The author's structure makes a document visible to the patient (or to their legal
    representatives) once the announcement is made: for good, so it is confirmed."""
    if "professional" not in user.roles:
        raise Forbidden("seul un professionnel de santé rend un document visible")
    patient = _patient(request, session, rri)
    _audit(request, user, "update", "DocumentReference", patient)
    request.state.audit[-1].entity_ref = f"DocumentReference/{doc_id}"
    _checked(session, user, csrf)
    if not confirme:
        raise BadRequest("confirmez : un document rendu visible le reste")
    reader = reader_of(session, user)
    _shown_entry, found, _granted = service.visible_entry(session, reader, doc_id)
    if found.id != patient.id:
        raise Forbidden("ce document n'est pas dans ce dossier")
    _entry, before = service.disclose(session, reader, doc_id, code)
    previous = {"previous": json.loads(before)}
    request.state.audit[-1].detail = json.dumps(previous, ensure_ascii=False)
    return RedirectResponse(
        f"/dossiers/{quote(rri)}/documents/{quote(doc_id)}?message=visible", status_code=303
    )


@router.get("/dossiers/{rri}/documents/{doc_id}/contenu")
def document_content(
    request: Request, rri: str, doc_id: str, user: PortalUser, session: DbSession
) -> Response:
    """The document's content for the browser's viewer (inline, never cached)."""
    entry, _patient, _reader = _visible(request, session, user, rri, doc_id, "Binary")
    shown = _shown(entry, service.content_of(request.app.state.storage, entry))
    if shown is None:
        raise BadRequest("ce document structuré s'affiche en HTML")
    return Response(
        shown[0],
        media_type=shown[1],
        headers={
            "Content-Disposition": "inline",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


@router.post("/dossiers/{rri}/acces")
def declare_access(
    request: Request,
    rri: str,
    user: PortalUser,
    session: DbSession,
    motif: Annotated[str, Form()] = "",
    urgence: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Declare an access with its reason, or break the glass (``urgence``)."""
    _may_open(user)
    patient = _patient(request, session, rri)
    _audit(request, user, "create", "Consent", patient)
    _checked(session, user, csrf)
    kind = "emergency" if urgence else "declared"
    row = service.declare_access(
        session, reader_of(session, user), patient, kind=kind, reason=motif
    )
    request.state.audit[-1].detail = service.declaration_detail(row)
    return RedirectResponse(f"/dossiers/{quote(rri)}?message=acces", status_code=303)


@router.post("/dossiers/{rri}/documents")
def upload(
    request: Request,
    rri: str,
    user: PortalUser,
    session: DbSession,
    fichier: Annotated[UploadFile, File()],
    type: Annotated[str, Form()] = "",
    titre: Annotated[str, Form()] = "",
    date_document: Annotated[str, Form()] = "",
    secteur: Annotated[str, Form()] = "",
    cadre: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """A professional files a document (PDF, image, text) in the patient's file."""
    if "professional" not in user.roles:
        raise Forbidden("seul un professionnel de santé dépose un document")
    patient = _patient(request, session, rri)
    _audit(request, user, "create", "DocumentReference", patient)
    _checked(session, user, csrf)
    settings = request.app.state.settings
    content = fichier.file.read(settings.max_document_bytes + 1)
    media = (fichier.content_type or "").split(";")[0].strip().lower()
    doc_id = file_upload(
        session,
        request.app.state.storage,
        request.app.state.identity_config,
        reader_of(session, user),
        patient,
        Upload(
            content,
            media,
            type,
            titre.strip()[:256],
            _bound(date_document, end=False),
            secteur,
            cadre,
        ),
        oid_root=settings.oid_root,
        max_bytes=settings.max_document_bytes,
    )
    request.state.audit[-1].entity_ref = f"DocumentReference/{doc_id}"
    return RedirectResponse(
        f"/dossiers/{quote(rri)}?{urlencode({'message': 'depot'})}", status_code=303
    )


@router.get("/dossiers/{rri}/journal")
def access_log(request: Request, rri: str, user: PortalUser, session: DbSession) -> HTMLResponse:
    """Who searched, read, downloaded or filed the patient's documents (the RGPD report):
    the regional team, and the professionals in the patient's care."""
    _may_open(user)
    patient = _patient(request, session, rri)
    _audit(request, user, "read", "AuditEvent", patient)
    if "admin" not in user.roles:
        granted = service.access_to(session, reader_of(session, user), patient)
        if granted.relationship is None:
            raise Forbidden(
                "le journal d'accès est réservé à l'équipe régionale et aux soignants du patient"
            )
    return _render(
        request,
        "documents_log.html",
        patient=patient,
        lines=service.access_report(session, patient),
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/admin/bris-de-glace")
def emergency_page(
    request: Request, user: PortalUser, session: DbSession, tout: str = ""
) -> HTMLResponse:
    """The emergency accesses (*bris de glace*) for the regional team to review."""
    if "admin" not in user.roles:
        raise Forbidden("réservé à l'équipe régionale")
    _audit(request, user, "search-type", "Consent", None)
    rows = service.emergency_accesses(session, unreviewed_only=not tout)
    lines = [(row, service.rri_of_patient(session, row.patient_id)) for row in rows]
    return _render(
        request,
        "documents_emergencies.html",
        lines=lines,
        everything=bool(tout),
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.post("/admin/bris-de-glace/{access_id}")
def emergency_reviewed(
    request: Request,
    access_id: int,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Mark an emergency access reviewed."""
    if "admin" not in user.roles:
        raise Forbidden("réservé à l'équipe régionale")
    _audit(request, user, "update", "Consent", None)
    _checked(session, user, csrf)
    service.review_emergency(session, access_id, actor=f"{user.kind}:{user.subject}")
    return RedirectResponse("/admin/bris-de-glace", status_code=303)
