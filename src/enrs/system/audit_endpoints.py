"""``GET /fhir/AuditEvent`` (search) and ``GET /fhir/AuditEvent/{id}`` (read) for admins and
auditors: the audit trail as IHE BALP AuditEvents. Each call is itself audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from enrs.kit.audit.fhir import to_audit_event
from enrs.kit.audit.models import AuditRecord
from enrs.kit.audit.record import entry_from_audit_event
from enrs.kit.audit.search import AUDIT_SEARCH, search_audit
from enrs.kit.errors import NotFound
from enrs.kit.fhir.bundle import searchset_bundle
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, prefers_strict, read_resource
from enrs.kit.http import DbSession, TransactionalRoute, require
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["fhir"], dependencies=[FhirFormat])
AUDITORS = frozenset({"admin", "auditor"})
AuditSearch = Annotated[Principal, Depends(require("AuditEvent", "search-type", roles=AUDITORS))]
AuditCreate = Annotated[Principal, Depends(require("AuditEvent", "create", roles=AUDITORS))]
AuditRead = Annotated[Principal, Depends(require("AuditEvent", "read", roles=AUDITORS))]


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "AuditEvent",
        interactions=["create", "read", "search-type"],
        search_params=AUDIT_SEARCH,
        profile="https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Read",
    )


@router.get("/fhir/AuditEvent", summary="Search the audit trail (BALP AuditEvent)")
def search_audit_events(
    request: Request, session: DbSession, _principal: AuditSearch
) -> FhirJSONResponse:
    base = request.app.state.settings.fhir_base
    page = search_audit(
        session,
        list(request.query_params.multi_items()),
        base_url=base,
        strict=prefers_strict(request),
    )
    events = [to_audit_event(r, request.app.state.settings.base_url) for r in page.records]
    bundle = searchset_bundle(
        base_url=base,
        resource_type="AuditEvent",
        resources=events,
        parsed=page.parsed,
        total=page.total,
        has_next=page.has_next,
    )
    return FhirJSONResponse(bundle)


async def fhir_body(request: Request) -> dict[str, Any]:
    """The request's FHIR JSON resource, checked for media type, size and syntax."""
    return await read_resource(request, "AuditEvent")


@router.post("/fhir/AuditEvent", status_code=201, summary="Record an audit event (IHE ITI-20)")
def record_audit_event(
    request: Request,
    principal: AuditCreate,
    event: Annotated[dict[str, Any], Depends(fhir_body)],
) -> FhirJSONResponse:
    """ITI-20: keep a facility's AuditEvent in the platform's trail (the submission itself is
    audited as a create). 422 with an OperationOutcome when the event is not usable."""
    entry = entry_from_audit_event(event)
    entry.client_id = principal.client_id
    entry.request_id = getattr(request.state, "request_id", None)
    (seq,) = request.app.state.audit_writer.write([entry])
    request.state.audit[-1].entity_ref = f"AuditEvent/{seq}"
    stored = dict(event, id=str(seq))
    location = f"{request.app.state.settings.fhir_base}/AuditEvent/{seq}"
    return FhirJSONResponse(stored, status_code=201, headers={"Location": location})


@router.get("/fhir/AuditEvent/{event_id}", summary="Read one audit record")
def read_audit_event(
    request: Request, event_id: str, session: DbSession, _principal: AuditRead
) -> FhirJSONResponse:
    if not event_id.isdigit() or len(event_id) > 18:
        raise NotFound(f"AuditEvent/{event_id} not found")
    record = session.scalar(select(AuditRecord).where(AuditRecord.seq == int(event_id)))
    if record is None:
        raise NotFound(f"AuditEvent/{event_id} not found")
    request.state.audit[-1].entity_ref = f"AuditEvent/{event_id}"
    return FhirJSONResponse(to_audit_event(record, request.app.state.settings.base_url))
