"""FHIR R4 endpoints of the document repository (IHE MHD as PDSm profiles it for France):
ITI-65 provide a document bundle (``POST /fhir``, a transaction Bundle), ITI-66 find
submission sets (``GET /fhir/List``), ITI-67 find documents (``GET /fhir/DocumentReference``)
and read one, ITI-68 retrieve a document (``GET /fhir/Binary/{id}``: the content, or a FHIR
Binary when JSON is asked for); withdraw a document (``PUT`` its DocumentReference with
status ``entered-in-error``).

Errors are OperationOutcomes: 400 malformed request, 401 no valid token, 403 missing scope or
role, or no care relationship (:mod:`.access`), 404 unknown resource, 409 a uniqueId already
registered, 413 a document over ``ENRS_MAX_DOCUMENT_BYTES``, 422 a Bundle the rules refuse
(hash, size, content type, codes, CDA header, unknown patient). Nothing of a refused Bundle is
stored."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select
from sqlalchemy.orm import Session

from enrs.documents import fhir, repository, service
from enrs.documents.access import PatientAccess, Reader, reader_of
from enrs.documents.auth import (
    ContentRead,
    DocumentFile,
    DocumentRead,
    DocumentSearch,
    DocumentUpdate,
    SubmissionSetSearch,
)
from enrs.documents.mhd import BundleReader, check_visibility_change, read_correction
from enrs.documents.terminology import Terminology
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.kit.errors import BadRequest, Unprocessable
from enrs.kit.fhir.bundle import searchset_bundle
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, prefers_strict, read_resource
from enrs.kit.fhir.search import (
    SearchSpec,
    apply_search,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.http import DbSession, TransactionalRoute, in_unit
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["documents"], dependencies=[FhirFormat])
# ITI-68 answers in the document's own media type: no FHIR format negotiation.
content_router = APIRouter(route_class=TransactionalRoute, tags=["documents"])

MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
FRENCH_RULES = (
    "PDSm (the French MHD): metadata codes checked against the CI-SIS value sets (JDV_J02, "
    "J04, J06, J07, J08, J10); the patient named by an identifier the identity server knows "
    "(IPP, INS of a qualified identity, RRI); a CDA's header must agree with the metadata; "
    "reads follow the care relationship, the patient's oppositions and the DMP's "
    "confidentiality codes."
)


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "DocumentReference",
        interactions=["read", "search-type", "update"],
        search_params=fhir.document_spec(),
        profile=f"{MHD}IHE.MHD.Comprehensive.DocumentReference",
        documentation=FRENCH_RULES,
    )
    registry.add_resource(
        "List",
        interactions=["search-type"],
        search_params=fhir.submission_set_spec(),
        profile=f"{MHD}IHE.MHD.Comprehensive.SubmissionSet",
        documentation="ITI-66: the SubmissionSets holding documents the caller may read.",
    )
    registry.add_resource(
        "Binary", interactions=["read"], documentation="ITI-68: a document's content."
    )


def _config(request: Request) -> IdentityConfig:
    config: IdentityConfig = request.app.state.identity_config
    return config


def _audit(request: Request, patient: PatientRef | None, entity: str | None = None) -> None:
    entry = request.state.audit[-1]
    if patient is not None:
        entry.patient_ref = f"Patient/{patient.rri}"
    if entity is not None:
        entry.entity_ref = entity


def _audit_access(request: Request, granted: PatientAccess) -> None:
    """An emergency access (*bris de glace*) is flagged on every audit record it allows."""
    if (detail := service.read_detail(granted)) is not None:
        request.state.audit[-1].detail = detail


# --- ITI-65 ----------------------------------------------------------------------------------


async def _bundle(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Bundle")


@router.post("/fhir", summary="MHD ITI-65: provide a document bundle")
def iti_65_provide(
    request: Request,
    session: DbSession,
    principal: DocumentFile,
    bundle: Annotated[dict[str, Any], Depends(_bundle)],
) -> FhirJSONResponse:
    """A transaction Bundle: one SubmissionSet ``List``, its ``DocumentReference``s and their
    ``Binary``s, filed atomically; answered by a ``transaction-response`` Bundle."""
    settings = request.app.state.settings
    reader = BundleReader(Terminology.load(), max_document_bytes=settings.max_document_bytes)
    submission = reader.read(bundle)
    filer = reader_of(session, principal)
    filed = service.file_submission(
        session, request.app.state.storage, _config(request), filer, submission
    )
    _audit(request, filed.patient, f"List/{filed.submission_set.resource_id}")
    entry = request.state.audit[-1]
    entry.detail = json.dumps(
        {"documents": [f"DocumentReference/{d.resource_id}" for d in filed.documents.values()]}
    )
    responses = []
    for url in submission.order:
        if url == submission.list_full_url:
            location = f"List/{filed.submission_set.resource_id}/_history/1"
        elif url in filed.documents:
            location = f"DocumentReference/{filed.documents[url].resource_id}/_history/1"
        else:
            owner = next(
                d
                for d in submission.documents
                if d.resource["content"][0]["attachment"]["url"] == url
            )
            location = f"Binary/{filed.documents[owner.full_url].resource_id}"
        responses.append({"response": {"status": "201 Created", "location": location}})
    body = {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}
    return FhirJSONResponse(body, status_code=200)


# --- ITI-67 / ITI-66 -------------------------------------------------------------------------


def _patient_of_query(request: Request, session: Session) -> PatientRef:
    """The patient an ITI-66/67 query names: ``patient`` (``Patient/{RRI}``) or
    ``patient.identifier`` (``urn:oid:{domain}|{value}``); exactly one is required."""
    params = request.query_params
    refs, idents = params.getlist("patient"), params.getlist("patient.identifier")
    if len(refs) + len(idents) != 1:
        raise BadRequest("name the patient once: patient=Patient/{RRI} or patient.identifier")
    if refs:
        rri = refs[0].rsplit("Patient/", 1)[-1]
        return service.resolve_patient(session, _config(request), ("rri", rri))
    system, sep, value = idents[0].partition("|")
    if not sep or not system.startswith("urn:oid:") or not value:
        raise BadRequest("patient.identifier takes urn:oid:{domain}|{value}")
    return service.resolve_patient(session, _config(request), (system[8:], value))


def _reader_and_access(
    request: Request, session: Session, principal: Principal
) -> tuple[Reader, PatientRef, PatientAccess]:
    patient = _patient_of_query(request, session)
    reader = reader_of(session, principal)
    granted = service.access_to(session, reader, patient)
    _audit(request, patient)
    _audit_access(request, granted)
    return reader, patient, granted


@router.get("/fhir/DocumentReference", summary="MHD ITI-67: find document references")
async def iti_67_find(
    request: Request, session: DbSession, principal: DocumentSearch
) -> FhirJSONResponse:
    """The patient's documents the caller may read (``patient`` or ``patient.identifier``
    required), filtered by ``status``, ``type``, ``category``, ``date``, ``period``,
    ``author``, ``author.identifier``, ``facility``, ``setting``, ``security-label``,
    ``format``; newest first, paged."""
    return await in_unit(request, partial(_find_documents, request, session, principal))


def _searchset(
    request: Request,
    session: Session,
    principal: Principal,
    spec: SearchSpec,
    base_stmt: Callable[[Reader, PatientAccess], Select[Any]],
    render: Callable[[Sequence[Any], PatientRef, str], list[dict[str, Any]]],
) -> FhirJSONResponse:
    """ITI-66 and ITI-67: the patient named, the caller's access to it, the search applied to
    what the access rule lets them read, one page of it as a searchset Bundle."""
    base = request.app.state.settings.fhir_base
    reader, patient, granted = _reader_and_access(request, session, principal)
    items = list(request.query_params.multi_items())
    parsed = parse_search(spec, items, strict=prefers_strict(request), base_url=base)
    stmt = base_stmt(reader, granted)
    rows = list(session.scalars(apply_search(stmt, parsed)))
    page, has_next = split_page(rows, parsed)
    total = search_total(session, stmt, parsed, page, has_next)
    bundle = searchset_bundle(
        base_url=base,
        resource_type=spec.resource_type,
        resources=render(page, patient, base),
        parsed=parsed,
        total=total,
        has_next=has_next,
    )
    return FhirJSONResponse(bundle)


def _find_documents(request: Request, session: Session, principal: Principal) -> FhirJSONResponse:
    def render(page: Sequence[Any], patient: PatientRef, base: str) -> list[dict[str, Any]]:
        return [
            fhir.document_reference(e, service.stored_resource(e), patient.rri, base) for e in page
        ]

    spec = fhir.document_spec()
    return _searchset(request, session, principal, spec, repository.readable_entries, render)


@router.get("/fhir/List", summary="MHD ITI-66: find submission sets")
async def iti_66_find(
    request: Request, session: DbSession, principal: SubmissionSetSearch
) -> FhirJSONResponse:
    """The patient's SubmissionSets holding a document the caller may read."""
    return await in_unit(request, partial(_find_lists, request, session, principal))


def _find_lists(request: Request, session: Session, principal: Principal) -> FhirJSONResponse:
    def render(page: Sequence[Any], patient: PatientRef, _base: str) -> list[dict[str, Any]]:
        members = repository.entries_of_submission_sets(session, [s.id for s in page])
        return [
            fhir.submission_set(s, service.stored_resource(s), patient.rri, members[s.id])
            for s in page
        ]

    spec = fhir.submission_set_spec()
    return _searchset(
        request, session, principal, spec, repository.readable_submission_sets, render
    )


# --- read, ITI-68, withdraw --------------------------------------------------------------------


def _visible(
    request: Request, session: Session, principal: Principal, resource_id: str
) -> tuple[Any, PatientRef]:
    reader = reader_of(session, principal)
    try:
        entry, patient, granted = service.visible_entry(session, reader, resource_id)
    except service.DocumentForbidden as exc:
        _audit(request, exc.patient)
        raise
    _audit(request, patient, f"DocumentReference/{resource_id}")
    _audit_access(request, granted)
    return entry, patient


@router.get("/fhir/DocumentReference/{resource_id}", summary="Read a document reference")
def read_document_reference(
    request: Request, resource_id: str, session: DbSession, principal: DocumentRead
) -> FhirJSONResponse:
    entry, patient = _visible(request, session, principal, resource_id)
    base = request.app.state.settings.fhir_base
    resource = fhir.document_reference(entry, service.stored_resource(entry), patient.rri, base)
    return FhirJSONResponse(resource, headers={"ETag": f'W/"{entry.version}"'})


@content_router.get("/fhir/Binary/{resource_id}", summary="MHD ITI-68: retrieve a document")
def iti_68_retrieve(
    request: Request, resource_id: str, session: DbSession, principal: ContentRead
) -> Response:
    """The document's content with its media type (its SHA-1 checked on the way out), or a
    FHIR ``Binary`` when ``application/fhir+json`` is asked for."""
    entry, _patient = _visible(request, session, principal, resource_id)
    data = service.content_of(request.app.state.storage, entry)
    if "fhir+json" in request.headers.get("accept", ""):
        binary = {
            "resourceType": "Binary",
            "id": entry.resource_id,
            "contentType": entry.mime_type,
            "data": base64.b64encode(data).decode(),
        }
        return FhirJSONResponse(binary)
    return Response(
        data,
        media_type=entry.mime_type,
        headers={"ETag": f'"{entry.sha1}"', "Cache-Control": "no-store"},
    )


async def _document_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "DocumentReference")


@router.put("/fhir/DocumentReference/{resource_id}", summary="Withdraw or correct a document")
def update_document_reference(
    request: Request,
    resource_id: str,
    session: DbSession,
    principal: DocumentUpdate,
    body: Annotated[dict[str, Any], Depends(_document_body)],
) -> FhirJSONResponse:
    """By its author's structure: ``status: entered-in-error`` withdraws the document (kept,
    found by ``status=entered-in-error``); a ``current`` one corrects its metadata (type,
    category, securityLabel, description, context, format: checked as ITI-65's; the previous
    metadata kept in the audit trail). A new version of the content replaces the document
    through ITI-65 (``relatesTo`` ``replaces``)."""
    reader = reader_of(session, principal)
    entry_audit = request.state.audit[-1]
    if body.get("status") == "entered-in-error":
        entry = service.withdraw(session, reader, resource_id)
    elif body.get("status") == "current":
        changes = read_correction(Terminology.load(), body)
        entry, before = service.correct(session, reader, resource_id, changes, body)
        check_visibility_change(
            service.visibility_of(json.loads(before)),
            entry.visibility_codes,
            "DocumentReference.securityLabel",
        )
        entry_audit.detail = json.dumps({"previous": json.loads(before)}, ensure_ascii=False)
    else:
        raise Unprocessable(
            "status: entered-in-error (withdraw) or current (correct the metadata)",
            issue_code="value",
        )
    patient = service.patient_of(session, entry)
    _audit(request, patient, f"DocumentReference/{resource_id}")
    base = request.app.state.settings.fhir_base
    resource = fhir.document_reference(entry, service.stored_resource(entry), patient.rri, base)
    return FhirJSONResponse(resource, headers={"ETag": f'W/"{entry.version}"'})
