"""JSON endpoints of the repository's access rules: a professional declares an access to a
patient's documents (with its reason, or *bris de glace* in an emergency); the patient's
oppositions are recorded and lifted (by the regional team, or a professional caring for the
patient, at the patient's request); the regional team reviews the emergency accesses.

Each is audited (``require``); an emergency declaration's record carries ``purposeOfUse``
``BTG``. Errors are problem+json: 400 a missing reason, 403 no permission, 404 unknown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from enrs.documents import repository, service
from enrs.documents.access import reader_of
from enrs.documents.models import DeclaredAccess
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.kit.errors import BadRequest, Forbidden, NotFound
from enrs.kit.http import DbSession, TransactionalRoute, require
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["documents"])

PROFESSIONALS = frozenset({"professional"})
TEAM = frozenset({"admin"})
Declarer = Annotated[
    Principal, Depends(require("DocumentReference", "read", roles=PROFESSIONALS, category="rest"))
]
OppositionWriter = Annotated[
    Principal, Depends(require("Consent", "create", roles=TEAM | PROFESSIONALS))
]
OppositionLifter = Annotated[
    Principal, Depends(require("Consent", "update", roles=TEAM | PROFESSIONALS))
]
EmergencyReview = Annotated[Principal, Depends(require("Consent", "search-type", roles=TEAM))]
EmergencyReviewed = Annotated[Principal, Depends(require("Consent", "update", roles=TEAM))]


class AccessIn(BaseModel):
    patient: str = Field(description="Patient/{RRI}, or urn:oid:{domain}|{value}")
    kind: str = Field("declared", description="declared or emergency")
    reason: str = ""


class OppositionIn(BaseModel):
    patient: str
    document: str | None = Field(None, description="a DocumentReference id; none: all sharing")
    reason: str | None = None


def _patient(request: Request, session: Any, named: str) -> PatientRef:
    config: IdentityConfig = request.app.state.identity_config
    if named.startswith("Patient/"):
        patient = service.resolve_patient(session, config, ("rri", named.removeprefix("Patient/")))
    else:
        system, sep, value = named.partition("|")
        if not sep or not system.startswith("urn:oid:"):
            raise BadRequest("patient: Patient/{RRI} or urn:oid:{domain}|{value}")
        patient = service.resolve_patient(session, config, (system[8:], value))
    request.state.audit[-1].patient_ref = f"Patient/{patient.rri}"
    return patient


def _access_json(row: DeclaredAccess, rri: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "patient": f"Patient/{rri}" if rri else None,
        "reader": row.reader,
        "reader_name": row.reader_name,
        "reason": row.reason,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "reviewed_by": row.reviewed_by,
    }


@router.post(
    "/api/documents/access", status_code=201, summary="Declare an access to a patient's documents"
)
def declare_access(
    request: Request, body: AccessIn, session: DbSession, principal: Declarer
) -> JSONResponse:
    """``declared`` (valid 30 days) or ``emergency`` (*bris de glace*, 24 hours, reported to
    the regional team); the reason is required."""
    patient = _patient(request, session, body.patient)
    row = service.declare_access(
        session, reader_of(session, principal), patient, kind=body.kind, reason=body.reason
    )
    entry = request.state.audit[-1]
    entry.interaction, entry.action, entry.resource_type = "create", "C", "Consent"
    entry.detail = service.declaration_detail(row)
    return JSONResponse(_access_json(row, patient.rri), status_code=201)


@router.post("/api/documents/oppositions", status_code=201, summary="Record a patient's opposition")
def record_opposition(
    request: Request, body: OppositionIn, session: DbSession, principal: OppositionWriter
) -> JSONResponse:
    """The patient opposes sharing one document (``document``) or all their documents."""
    patient = _patient(request, session, body.patient)
    if "admin" not in principal.roles:
        reader = reader_of(session, principal)
        if service.access_to(session, reader, patient).relationship is None:
            raise Forbidden("a professional records an opposition for a patient in their care")
    document = None
    if body.document is not None:
        document = repository.entry_by_resource_id(session, body.document)
        if document is None or document.patient_id not in service.patient_ids(session, patient):
            raise NotFound(f"the patient has no DocumentReference/{body.document}")
    row = service.record_opposition(
        session,
        patient,
        actor=f"{principal.kind}:{principal.subject}",
        document=document,
        reason=body.reason,
    )
    request.state.audit[-1].entity_ref = (
        f"DocumentReference/{body.document}" if body.document else None
    )
    return JSONResponse(
        {"id": row.id, "patient": f"Patient/{patient.rri}", "document": body.document},
        status_code=201,
    )


@router.delete("/api/documents/oppositions/{opposition_id}", summary="Lift an opposition")
def lift_opposition(
    request: Request, opposition_id: int, session: DbSession, principal: OppositionLifter
) -> JSONResponse:
    row = service.lift_opposition(
        session, opposition_id, actor=f"{principal.kind}:{principal.subject}"
    )
    return JSONResponse(
        {"id": row.id, "lifted_at": row.lifted_at.isoformat() if row.lifted_at else None}
    )


@router.get("/api/admin/documents/emergency-accesses", summary="Emergency accesses to review")
def emergency_accesses(
    request: Request, session: DbSession, _principal: EmergencyReview, all: bool = False
) -> JSONResponse:
    """The *bris de glace* accesses not yet reviewed by the regional team (``all=true``:
    every one), newest first."""
    rows = service.emergency_accesses(session, unreviewed_only=not all)
    return JSONResponse(
        [_access_json(r, service.rri_of_patient(session, r.patient_id)) for r in rows]
    )


@router.post(
    "/api/admin/documents/emergency-accesses/{access_id}/reviewed",
    summary="Mark an emergency access reviewed",
)
def emergency_reviewed(
    request: Request, access_id: int, session: DbSession, principal: EmergencyReviewed
) -> JSONResponse:
    row = service.review_emergency(
        session, access_id, actor=f"{principal.kind}:{principal.subject}"
    )
    return JSONResponse(_access_json(row, service.rri_of_patient(session, row.patient_id)))


@router.get("/api/admin/documents/access-report", summary="Who accessed a patient's documents")
def access_report(
    request: Request, session: DbSession, _principal: EmergencyReview, patient: str
) -> JSONResponse:
    """The patient's "who accessed my documents" report (RGPD right of access), from the
    audit trail, newest first: when, who, what (search, read, download, filing, DMP export),
    which document, whether in an emergency, allowed or refused. For the regional team, on
    the patient's request."""
    found = _patient(request, session, patient)
    lines = service.access_report(session, found)
    return JSONResponse(
        [
            {
                "when": line.when.isoformat(),
                "who": line.who,
                "kind": line.kind,
                "what": line.what,
                "document": line.document,
                "emergency": line.emergency,
                "allowed": line.allowed,
            }
            for line in lines
        ]
    )
