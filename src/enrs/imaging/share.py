"""Access codes to a study (issue 16): a code and a link, printed on the report, that open one
study in the browser without an account.

**The code.** 12 characters of a 32-letter alphabet without the look-alikes (no ``I``, ``O``,
``0``, ``1``), shown in groups of four (``ABCD-EFGH-JKLM``): 60 bits drawn by :mod:`secrets`,
typable from paper. Only the SHA-256 of its normalised text (upper case, without spaces or
dashes) is stored (``imaging_share.code_hash``): a plain hash is enough for a random 60-bit
secret (no dictionary to try), and it lets the portal find the code by an index. The code is
shown once, in the answer that creates it.

**Who.** Who may read a study may share it: the three calls need the scope ``ImagingStudy.r``
(and, for a person, the role ``professional``, ``admin`` or ``identitovigilance``). A code is
created (``POST /imaging/studies/{uid}/shares``) by whoever may read the study
(:func:`.access.readable_study`): a professional with a care relationship with its patient,
the facility software that stored it (or one of a structure caring for the patient), the
regional cell. The list (``GET``) gives no code. A code is revoked (``DELETE
…/shares/{id}``) by its creator or anyone who may read the study (the patient's care team,
the cell). A code works ``ENRS_IMAGING_SHARE_DAYS`` days (90). Each call is audited with the
study's patient (category ``imaging``; interactions ``create``, ``read``, ``delete``).

**The portal** (``/imagerie/code``, French): the patient or their GP types the code (the link
``{ENRS_BASE_URL}/imagerie/code?c=…`` fills it in), a CSRF-protected form. A right code opens a
session: the cookie ``enrs_imaging_share`` (httpOnly, SameSite=Strict), a random token kept as
its SHA-256 (``imaging_share_session``), for :data:`SESSION_SECONDS` at most and never past the
code's expiry; its principal (role ``imaging-share``) reads that study and nothing else through
the DICOMweb WADO-RS endpoints (:mod:`.access`, rule 5), which the study page
(``/imagerie/examen``) and a browser viewer use. The code and the session are checked on every
request: revoking a code ends its sessions at once. An expired or revoked code opens nothing
and says so.

**Guessing.** Each typed code is kept (``imaging_share_attempt``: when, from which address,
right or wrong) and audited (category ``imaging-share``, the patient named when the code
designates a study). An address with :data:`MAX_FAILURES` failures in the last
:data:`WINDOW` is answered 429 until the oldest leaves the window; and when the whole platform
has had :data:`MAX_FAILURES_ALL` failures in the window (many addresses guessing), an address
with even one failure is answered 429 too. So one address gets 5 guesses a quarter of an hour,
a crowd of addresses one each while the platform is under attack, while whoever types a right
code at the first try is never refused: with 60 bits, even 10^10 guesses (a year of a large
botnet within these limits) find one of a million live codes with a probability of about 1e-2
in the worst case, 1e-5 for 1,000 live codes. Limiting by code prefix was not chosen: random
guesses spread over all prefixes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from enrs.imaging import repository
from enrs.imaging.access import (
    SHARE_ROLE,
    SHARE_SUBJECT,
    StudyForbidden,
    StudyReader,
    patient_of,
    readable_study,
    share_of,
    study_reader,
)
from enrs.imaging.models import Instance, Series, Study
from enrs.imaging.share_models import Share, ShareAttempt, ShareSession
from enrs.kit.db import utcnow
from enrs.kit.errors import Forbidden, NotFound
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, require, set_agent
from enrs.kit.security.principal import Principal
from enrs.kit.security.scopes import ScopeSet
from enrs.portal.auth import CSRF_COOKIE, csrf_matches, new_csrf, set_csrf_cookie
from enrs.portal.endpoints import _render
from enrs.settings import Settings

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 12
COOKIE = "enrs_imaging_share"
SESSION_SECONDS = 4 * 3600
WINDOW = timedelta(minutes=15)
MAX_FAILURES = 5
MAX_FAILURES_ALL = 200
IMAGES_PER_SERIES = 4
PROFESSIONALS = frozenset({"professional", "admin", "identitovigilance"})

router = APIRouter(route_class=TransactionalRoute, tags=["imaging"])
portal_router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


# --- codes -----------------------------------------------------------------------------------


def new_code() -> str:
    """A fresh code, grouped by four: ``ABCD-EFGH-JKLM``."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def normalise(typed: str) -> str | None:
    """The code as typed, upper case, without spaces and dashes; ``None`` when it cannot be
    a code (length, a letter outside the alphabet)."""
    text = "".join(c for c in typed.upper() if c not in " -\t")
    if len(text) != CODE_LENGTH or any(c not in ALPHABET for c in text):
        return None
    return text


def code_hash(code: str) -> str:
    """The SHA-256 (hex) of the normalised code: what is stored."""
    return hashlib.sha256(code.encode()).hexdigest()


def link(base_url: str, code: str) -> str:
    return f"{base_url}/imagerie/code?c={code}"


def status(share: Share, now: datetime) -> str:
    if share.revoked_at is not None:
        return "revoked"
    return "expired" if share.expires_at <= now else "active"


# --- the API ---------------------------------------------------------------------------------

# Who may read a study may share it: the three calls need ``ImagingStudy.r`` (the scope the
# professionals' role gives; a facility's software needs ``system/ImagingStudy.r``), and are
# audited as the create, read and delete of a code.
ShareAccess = Annotated[
    Principal, Depends(require("ImagingStudy", "read", roles=PROFESSIONALS, category="imaging"))
]


def _audited_as(request: Request, interaction: str, action: str) -> None:
    entry = request.state.audit[-1]
    entry.interaction, entry.action = interaction, action


@dataclass(frozen=True)
class Reading:
    study: Study
    who: StudyReader


def readable(request: Request, session: Session, principal: Principal, uid: str) -> Reading:
    """The study if the caller may read it (404 unknown, 403 not readable), the request's
    last audit entry naming it and its patient."""
    entry = request.state.audit[-1]
    entry.entity_ref = f"ImagingStudy/{uid}"
    if share_of(principal) is not None:
        raise Forbidden("an access code's session does not manage codes")
    study = repository.study(session, uid)
    if study is None:
        raise NotFound(f"study {uid} is unknown")
    who = study_reader(session, principal)
    try:
        granted = readable_study(session, who, study)
    except StudyForbidden as exc:
        if exc.patient is not None:
            entry.patient_ref = f"Patient/{exc.patient.rri}"
        raise
    if granted.patient is not None:
        entry.patient_ref = f"Patient/{granted.patient.rri}"
    return Reading(study, who)


def _describe(share: Share, now: datetime) -> dict[str, Any]:
    return {
        "id": share.id,
        "created": share.created_at.isoformat(),
        "createdBy": share.created_by_name,
        "expires": share.expires_at.isoformat(),
        "revoked": share.revoked_at.isoformat() if share.revoked_at else None,
        "status": status(share, now),
    }


def create(
    request: Request, session: Session, principal: Principal, study_uid: str
) -> tuple[Share, str]:
    """A new access code to the study, made by one who may read it (:func:`readable`): the
    code and its text, which is never kept (shown once); the request's last audit entry names
    the study, its patient and the code."""
    found = readable(request, session, principal, study_uid)
    settings: Settings = request.app.state.settings
    code, now = new_code(), utcnow()
    share = Share(
        study_id=found.study.id,
        code_hash=code_hash(normalise(code) or ""),
        created_at=now,
        created_by=found.who.key,
        created_by_name=found.who.reader.name[:255],
        expires_at=now + timedelta(days=settings.imaging_share_days),
    )
    session.add(share)
    session.flush()
    request.state.audit[-1].detail = json.dumps({"share": share.id, "event": "create"})
    return share, code


def shares_of(session: Session, study: Study) -> list[Share]:
    """The study's codes, oldest first (whoever reads the study may see them)."""
    return list(session.scalars(select(Share).where(Share.study_id == study.id).order_by(Share.id)))


def uses(session: Session, share_ids: list[int]) -> dict[int, int]:
    """How many times each code was used: the browser sessions it opened."""
    if not share_ids:
        return {}
    found = session.execute(
        select(ShareSession.share_id, func.count(ShareSession.id))
        .where(ShareSession.share_id.in_(share_ids))
        .group_by(ShareSession.share_id)
    )
    counted = {int(share_id): int(n) for share_id, n in found}
    return {i: counted.get(i, 0) for i in share_ids}


@router.post("/imaging/studies/{study_uid}/shares", status_code=201, summary="Create a code")
def create_share(
    request: Request, study_uid: str, session: DbSession, principal: ShareAccess
) -> JSONResponse:
    """A new access code to the study: its text and link (given once), its expiry."""
    _audited_as(request, "create", "C")
    share, code = create(request, session, principal, study_uid)
    settings: Settings = request.app.state.settings
    body = {**_describe(share, utcnow()), "code": code, "link": link(settings.base_url, code)}
    return JSONResponse(body, status_code=201)


@router.get("/imaging/studies/{study_uid}/shares", summary="The study's codes (not their text)")
def list_shares(
    request: Request, study_uid: str, session: DbSession, principal: ShareAccess
) -> JSONResponse:
    found = readable(request, session, principal, study_uid)
    now = utcnow()
    return JSONResponse([_describe(s, now) for s in shares_of(session, found.study)])


def revoke(
    request: Request, session: Session, principal: Principal, study_uid: str, share_id: int
) -> Share:
    """Revoke the code (its sessions end at once): by its creator, or anyone who may read the
    study (404 for a code not of this study, 403 otherwise); revoking a revoked code changes
    nothing. The request's last audit entry names the study, its patient and the code."""
    entry = request.state.audit[-1]
    entry.detail = json.dumps({"share": share_id, "event": "revoke"})
    study = repository.study(session, study_uid)
    share = session.get(Share, share_id)
    if study is None or share is None or share.study_id != study.id:
        raise NotFound(f"no code {share_id} for study {study_uid}")
    who = study_reader(session, principal)
    if share_of(principal) is not None:
        raise Forbidden("an access code's session does not manage codes")
    if who.key != share.created_by:
        readable(request, session, principal, study_uid)
    else:
        entry.entity_ref = f"ImagingStudy/{study_uid}"
        patient = patient_of(session, study)
        if patient is not None:
            entry.patient_ref = f"Patient/{patient.rri}"
    if share.revoked_at is None:
        share.revoked_at = utcnow()
        share.revoked_by = who.key
    return share


@router.delete("/imaging/studies/{study_uid}/shares/{share_id}", summary="Revoke a code")
def revoke_share(
    request: Request, study_uid: str, share_id: int, session: DbSession, principal: ShareAccess
) -> Response:
    """Revoke the code (:func:`revoke`): 204, also for a code already revoked."""
    _audited_as(request, "delete", "D")
    revoke(request, session, principal, study_uid, share_id)
    return Response(status_code=204)


# --- sessions --------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def principal_of_request(request: Request, session: Session) -> Principal | None:
    """The principal of the access code's session the request's cookie names, if any."""
    token = request.cookies.get(COOKIE)
    return principal_from_cookie(session, token) if token else None


def principal_from_cookie(session: Session, token: str) -> Principal | None:
    """The principal of an access code's session, while the session, and its code, last."""
    now = utcnow()
    found = session.execute(
        select(ShareSession, Share)
        .join(Share, Share.id == ShareSession.share_id)
        .where(ShareSession.token_hash == _token_hash(token))
    ).first()
    if found is None:
        return None
    opened, share = found
    if opened.expires_at <= now or status(share, now) != "active":
        return None
    return Principal(
        "user",
        f"{SHARE_SUBJECT}{share.id}",
        f"Code d'accès n° {share.id}",
        ScopeSet.parse("user/ImagingStudy.rs"),  # read, and search (the viewer's QIDO-RS)
        roles=frozenset({SHARE_ROLE}),
        session_id=str(opened.id),
    )


def _address(request: Request) -> str:
    return (request.client.host if request.client else "unknown")[:64]


def limited(session: Session, address: str, now: datetime) -> bool:
    """Whether ``address`` must wait before typing another code (see the module)."""
    since = now - WINDOW
    failed = ShareAttempt.success.is_(False) & (ShareAttempt.at > since)
    mine = session.scalar(
        select(func.count())
        .select_from(ShareAttempt)
        .where(failed, ShareAttempt.source_ip == address)
    )
    if (mine or 0) >= MAX_FAILURES:
        return True
    if not mine:
        return False
    everyone = session.scalar(select(func.count()).select_from(ShareAttempt).where(failed))
    return (everyone or 0) >= MAX_FAILURES_ALL


def _code_page(
    request: Request, status_code: int = 200, code: str = "", error: str | None = None
) -> HTMLResponse:
    token = new_csrf()
    response = _render(
        request, "imaging_share_code.html", status_code, csrf=token, code=code, error=error
    )
    return set_csrf_cookie(request, response, token)


@portal_router.get("/imagerie/code")
def code_form(request: Request, c: str = "") -> HTMLResponse:
    """The form where a patient or their GP types the code (the link fills it in)."""
    return _code_page(request, code=c[:20])


@portal_router.post("/imagerie/code")
def open_with_code(
    request: Request,
    session: DbSession,
    code: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Open the study of a typed code; failures are answered (and committed: the attempts the
    rate limit counts), not raised."""
    entry = new_entry(request, "imaging-share", "read", action="R", resource_type="ImagingStudy")
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), csrf):
        entry.outcome_desc = "code form without a valid CSRF token"
        return _code_page(request, 400, code, "Formulaire expiré, veuillez réessayer.")
    now, address = utcnow(), _address(request)
    if limited(session, address, now):
        entry.outcome_desc = "too many failed codes from this address"
        page = _code_page(
            request,
            429,
            "",
            "Trop d'essais de code infructueux. Veuillez réessayer dans un quart d'heure.",
        )
        page.headers["Retry-After"] = str(int(WINDOW.total_seconds()))
        return page
    session.execute(delete(ShareAttempt).where(ShareAttempt.at < now - 4 * WINDOW))
    normal = normalise(code)
    share = (
        session.scalars(select(Share).where(Share.code_hash == code_hash(normal))).first()
        if normal
        else None
    )
    state = status(share, now) if share is not None else "unknown"
    session.add(ShareAttempt(at=now, source_ip=address, success=state == "active"))
    if share is not None:
        study = session.get(Study, share.study_id)
        patient = patient_of(session, study) if study is not None else None
        entry.entity_ref = f"ImagingStudy/{study.study_uid}" if study is not None else None
        entry.patient_ref = f"Patient/{patient.rri}" if patient is not None else None
        entry.agent_kind, entry.agent_id = "user", f"{SHARE_SUBJECT}{share.id}"
        entry.detail = json.dumps({"share": share.id, "event": "open", "status": state})
    if state != "active":
        entry.outcome_desc = f"access code {state}"
        message = {
            "unknown": "Ce code n'est pas valide. Vérifiez-le sur votre compte rendu.",
            "expired": "Ce code a expiré. Demandez un nouveau code au service d'imagerie.",
            "revoked": "Ce code a été révoqué. Demandez un nouveau code au service d'imagerie.",
        }[state]
        return _code_page(request, 410 if state != "unknown" else 400, "", message)
    assert share is not None
    token = secrets.token_urlsafe(32)
    until = min(share.expires_at, now + timedelta(seconds=SESSION_SECONDS))
    session.add(
        ShareSession(
            share_id=share.id,
            token_hash=_token_hash(token),
            created_at=now,
            expires_at=until,
            source_ip=address,
        )
    )
    response = RedirectResponse("/imagerie/examen", status_code=303)
    settings: Settings = request.app.state.settings
    response.set_cookie(
        COOKIE,
        token,
        max_age=max(1, int((until - now).total_seconds())),
        httponly=True,
        samesite="strict",
        secure=settings.base_url.startswith("https"),
    )
    response.delete_cookie(CSRF_COOKIE)
    return response


@portal_router.get("/imagerie/examen")
def shared_study(request: Request, session: DbSession) -> Response:
    """The study of the session's code: patient, date, description, series and a few images
    (rendered by WADO-RS through the same session)."""
    entry = new_entry(request, "imaging-share", "read", action="R", resource_type="ImagingStudy")
    token = request.cookies.get(COOKIE, "")
    principal = principal_from_cookie(session, token) if token else None
    if principal is None:
        entry.outcome_desc = "no access code session, or its code expired or was revoked"
        return _code_page(
            request,
            401,
            "",
            "Votre accès a pris fin (code expiré ou révoqué, ou session "
            "terminée). Saisissez à nouveau votre code.",
        )
    set_agent(entry, principal)
    who = study_reader(session, principal)
    study = session.get(Study, who.share_study)
    if study is None:
        raise NotFound("the study of this code is no longer archived")
    patient = patient_of(session, study)
    entry.entity_ref = f"ImagingStudy/{study.study_uid}"
    entry.patient_ref = f"Patient/{patient.rri}" if patient is not None else None
    series = session.scalars(
        select(Series).where(Series.study_id == study.id).order_by(Series.series_number, Series.id)
    ).all()
    shown = []
    for one in series:
        instances = session.scalars(
            select(Instance)
            .where(Instance.series_id == one.id)
            .order_by(Instance.instance_number, Instance.id)
            .limit(IMAGES_PER_SERIES)
        ).all()
        shown.append((one, instances))
    token = new_csrf()
    response = _render(request, "imaging_share_study.html", study=study, series=shown, csrf=token)
    return set_csrf_cookie(request, response, token)


@portal_router.post("/imagerie/examen/fin")
def end_shared_session(
    request: Request, session: DbSession, csrf: Annotated[str, Form()] = ""
) -> Response:
    """End the code's session on this browser (a shared computer): the session is closed in
    the database, its cookie dropped; the code itself still works."""
    entry = new_entry(request, "imaging-share", "logout", action="E")
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), csrf):
        entry.outcome_desc = "end of session without a valid CSRF token"
        return _code_page(request, 400, "", "Formulaire expiré, veuillez réessayer.")
    token = request.cookies.get(COOKIE, "")
    opened = session.scalars(
        select(ShareSession).where(ShareSession.token_hash == _token_hash(token))
    ).first()
    if opened is not None:
        entry.agent_kind, entry.agent_id = "user", f"{SHARE_SUBJECT}{opened.share_id}"
        opened.expires_at = min(opened.expires_at, utcnow())
    response = _code_page(request, 200, "", None)
    response.delete_cookie(COOKIE)
    return response
