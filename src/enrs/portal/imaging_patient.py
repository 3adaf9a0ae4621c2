"""A patient's imaging studies in the portal, for professionals (French UI), and the access
codes of a study (issue 16, "Sharing and reading"):

- ``GET /imagerie/patients/{rri}`` — "Examens d'imagerie": the studies of the patient this
  person may read, newest first (date, modalities, description, number of images), each with
  its link to the OHIF viewer (:mod:`enrs.imaging.viewer`) and to its page. Who reads is
  :mod:`enrs.imaging.access`'s rule, nothing else: the cell reads every study of the patient;
  a professional with a care relationship their resolved studies; any other person is refused
  (403, a French message), audited with the patient. Reached from the patient's file
  (``/dossiers/{rri}``).
- ``GET /imagerie/patients/{rri}/examens/{uid}`` — a study: its series, the viewer link, its
  access codes (created by, expiry, uses, state) and the forms to create or revoke one.
- ``POST …/codes`` — a new code (:func:`enrs.imaging.share.create`): the page shows it once,
  with its link and expiry, printable for the patient or their GP.
- ``POST …/codes/{id}/revocation`` — the code revoked (:func:`enrs.imaging.share.revoke`).

Forms carry the session's CSRF token. Every page and form is audited as the access code API
is (category ``imaging``, resource ``ImagingStudy``, the patient named)."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.documents import service as documents_service
from enrs.identity import service as identity_service
from enrs.identity.service import PatientRef
from enrs.imaging import repository, share
from enrs.imaging.access import (
    StudyForbidden,
    care_relationship,
    patient_of,
    study_reader,
    visible_clause,
)
from enrs.imaging.models import Instance, Series
from enrs.imaging.share_models import Share
from enrs.imaging.viewer import PREFIX
from enrs.kit.db import utcnow
from enrs.kit.errors import Forbidden, NotFound
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _checked, _patient, _zone
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
LIMIT = 200
NOT_IN_CARE = (
    "Vous n'avez pas de relation de soins avec ce patient : ses examens d'imagerie ne vous "
    "sont pas accessibles. Déclarez votre accès depuis son dossier si vous le prenez en charge."
)
NOT_OF_PATIENT = "Cet examen d'imagerie n'est pas dans le dossier de ce patient."
STATUS_FR = {"active": "actif", "expired": "expiré", "revoked": "révoqué"}


def viewer_url(study_uid: str) -> str:
    """The OHIF viewer opened on one study."""
    return f"{PREFIX}/viewer?StudyInstanceUIDs={quote(study_uid)}"


def _opened(
    request: Request, session: Session, user: Principal, rri: str, interaction: str, action: str
) -> PatientRef:
    """Start the page's audit record, check the person's role, then find the patient (404
    when unknown) and name them in the record."""
    entry = new_entry(request, "imaging", interaction, action=action, resource_type="ImagingStudy")
    set_agent(entry, user)
    if not share.PROFESSIONALS & user.roles:
        raise Forbidden("l'imagerie est réservée aux professionnels de santé")
    if not user.can("ImagingStudy", "r"):
        raise Forbidden("votre compte ne permet pas de consulter l'imagerie")
    try:
        patient = _patient(request, session, rri)
    except documents_service.UnknownDocumentPatient:
        raise NotFound(f"patient inconnu : {rri}") from None
    entry.patient_ref = f"Patient/{patient.rri}"
    return patient


@router.get("/imagerie/patients/{rri}")
def patient_studies(request: Request, rri: str, user: PortalUser, session: DbSession) -> Response:
    """The patient's studies this person may read (:func:`visible_clause`), newest first."""
    patient = _opened(request, session, user, rri, "search-type", "E")
    who = study_reader(session, user)
    if not who.admin:
        try:
            care_relationship(session, who, patient)
        except StudyForbidden:
            raise Forbidden(NOT_IN_CARE) from None
    # The rule's clause (every study for the cell), narrowed to this patient's studies.
    ids = identity_service.merged_patient_ids(session, patient.id)
    visible = visible_clause(session, who, patient)
    found = repository.study_summaries(session, visible, ids, limit=LIMIT)
    request.state.audit[-1].detail = json.dumps({"studies": len(found)})
    return _render(
        request,
        "imaging_patient.html",
        patient=patient,
        studies=found,
        limit=LIMIT,
        viewer_url=viewer_url,
    )


def _shares_page(
    request: Request,
    session: Session,
    user: Principal,
    patient: PatientRef,
    found: share.Reading,
    *,
    created: tuple[Share, str] | None = None,
    message: str = "",
) -> HTMLResponse:
    study = found.study
    series = session.execute(
        select(Series, Instance.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
        .order_by(Series.series_number, Series.id)
    ).all()
    counted: dict[int, tuple[Series, int]] = {}
    for one, instance in series:
        before = counted.get(one.id, (one, 0))[1]
        counted[one.id] = (one, before + (instance is not None))
    codes = share.shares_of(session, study)
    now = utcnow()
    settings = request.app.state.settings
    return _render(
        request,
        "imaging_patient_study.html",
        status=201 if created else 200,
        patient=patient,
        study=study,
        series=list(counted.values()),
        codes=[c for c in reversed(codes) if share.status(c, now) == "active"],
        past=[c for c in reversed(codes) if share.status(c, now) != "active"],
        uses=share.uses(session, [c.id for c in codes]),
        state=lambda c: STATUS_FR[share.status(c, now)],
        created=created,
        link=(lambda code: share.link(settings.base_url, code)),
        code_page=f"{settings.base_url}/imagerie/code",
        viewer=viewer_url(study.study_uid),
        message=message,
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
    )


def _readable(
    request: Request, session: Session, user: Principal, patient: PatientRef, uid: str
) -> share.Reading:
    """The study if this person may read it (share's rule) and it is the patient's."""
    try:
        found = share.readable(request, session, user, uid)
    except StudyForbidden:
        raise Forbidden("Vous n'avez pas accès à cet examen d'imagerie.") from None
    except NotFound:
        raise NotFound("Examen d'imagerie inconnu.") from None
    of = patient_of(session, found.study)
    if of is None or of.id != patient.id:
        raise NotFound(NOT_OF_PATIENT)
    return found


@router.get("/imagerie/patients/{rri}/examens/{study_uid}")
def study_page(
    request: Request,
    rri: str,
    study_uid: str,
    user: PortalUser,
    session: DbSession,
    message: str = "",
) -> HTMLResponse:
    """A study of the patient: its series, the viewer, its access codes and their forms."""
    patient = _opened(request, session, user, rri, "read", "R")
    found = _readable(request, session, user, patient, study_uid)
    return _shares_page(request, session, user, patient, found, message=message)


@router.post("/imagerie/patients/{rri}/examens/{study_uid}/codes")
def create_code(
    request: Request,
    rri: str,
    study_uid: str,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """A new access code (:func:`enrs.imaging.share.create`), shown once on the page."""
    patient = _opened(request, session, user, rri, "create", "C")
    _checked(session, user, csrf)
    found = _readable(request, session, user, patient, study_uid)
    created = share.create(request, session, user, study_uid)
    return _shares_page(request, session, user, patient, found, created=created)


@router.post("/imagerie/patients/{rri}/examens/{study_uid}/codes/{share_id}/revocation")
def revoke_code(
    request: Request,
    rri: str,
    study_uid: str,
    share_id: int,
    user: PortalUser,
    session: DbSession,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Revoke a code of the study (:func:`enrs.imaging.share.revoke`)."""
    patient = _opened(request, session, user, rri, "delete", "D")
    _checked(session, user, csrf)
    _readable(request, session, user, patient, study_uid)
    try:
        share.revoke(request, session, user, study_uid, share_id)
    except NotFound:
        raise NotFound("Ce code d'accès n'existe pas pour cet examen.") from None
    return RedirectResponse(
        f"/imagerie/patients/{quote(patient.rri)}/examens/{quote(study_uid)}?message=revoque",
        status_code=303,
    )
