"""The ROR's writes over FHIR: a structure describes its offer and counts its beds.

- ``POST /fhir/Location``, ``PUT /fhir/Location/{id}``: a unit (``managingOrganization``
  ``Organization/{FINESS}``) with its capacities (the ROR ``ror-location-supported-capacity``
  extensions: nature, status, gender, count; the current temporality only). A PUT replaces
  the unit's name, status and every capacity; the time of the count is the server's.
- ``POST /fhir/HealthcareService``, ``PUT /fhir/HealthcareService/{id}``: an offer
  (``providedBy``, ``type`` TRE_R227, ``specialty`` TRE_R211, ``characteristic`` TRE_R213 care
  mode, ``location``: one of the structure's units, the ROR ``patient-type`` age range).

Scopes ``Location.c`` / ``.u`` and ``HealthcareService.c`` / ``.u``; then the structure's
rule (:func:`enrs.directory.offer.may_manage`): its system clients (the facility registry),
its professionals, the regional admins — 403 otherwise. A malformed body is a 400/422
OperationOutcome and stores nothing. Every write is audited."""

# No ``from __future__ import annotations``: FastAPI must see the permissions evaluated.
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from enrs.directory import offer, offer_fhir
from enrs.directory.models import CareService, Structure
from enrs.kit.errors import NotFound, Unprocessable
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.http import DbSession, TransactionalRoute, in_unit, require
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["directory"], dependencies=[FhirFormat])
LocationCreate = Annotated[Principal, Depends(require("Location", "create"))]
LocationUpdate = Annotated[Principal, Depends(require("Location", "update"))]
ServiceCreate = Annotated[Principal, Depends(require("HealthcareService", "create"))]
ServiceUpdate = Annotated[Principal, Depends(require("HealthcareService", "update"))]


def _answer(request: Request, kind: str, resource: dict[str, Any], status: int) -> FhirJSONResponse:
    request.state.audit[-1].entity_ref = f"{kind}/{resource['id']}"
    base = request.app.state.settings.fhir_base.rstrip("/")
    headers = {"Location": f"{base}/{kind}/{resource['id']}"} if status == 201 else None
    return FhirJSONResponse(resource, status_code=status, headers=headers)


def _id(raw: str, kind: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"{kind}/{raw} not found")
    return int(raw)


def _check_id(body: dict[str, Any], raw: str, kind: str) -> None:
    if body.get("id") not in (None, raw):
        raise Unprocessable(f"{kind}.id {body.get('id')!r} is not {raw!r}, the id in the URL")


def _write_location(
    request: Request, session: Session, principal: Principal, body: dict[str, Any], raw: str
) -> FhirJSONResponse:
    finess, data = offer_fhir.read_location(body)
    structure = offer.structure_by_finess(session, finess)
    if not raw:
        row = offer.create_unit(session, principal, structure, data)
        return _answer(request, "Location", offer_fhir.locations(session, [row])[0], 201)
    _check_id(body, raw, "Location")
    row = offer.require_unit(session, _id(raw, "Location"))
    if row.structure_id != structure.id:
        raise Unprocessable(f"Location/{raw} is managed by another organization")
    offer.update_unit(session, principal, row, data)
    return _answer(request, "Location", offer_fhir.locations(session, [row])[0], 200)


def _write_service(
    request: Request, session: Session, principal: Principal, body: dict[str, Any], raw: str
) -> FhirJSONResponse:
    finess, data = offer_fhir.read_service(body)
    structure: Structure = offer.structure_by_finess(session, finess)
    if not raw:
        row = offer.create_service(session, principal, structure, data)
        return _answer(request, "HealthcareService", offer_fhir.services(session, [row])[0], 201)
    _check_id(body, raw, "HealthcareService")
    found = session.get(CareService, _id(raw, "HealthcareService"))
    if found is None:
        raise NotFound(f"HealthcareService/{raw} not found")
    if found.structure_id != structure.id:
        raise Unprocessable(f"HealthcareService/{raw} is provided by another organization")
    offer.update_service(session, principal, found, data)
    return _answer(request, "HealthcareService", offer_fhir.services(session, [found])[0], 200)


@router.post("/fhir/Location", status_code=201, summary="ROR: a structure's unit and its beds")
async def create_location(
    request: Request, session: DbSession, principal: LocationCreate
) -> FhirJSONResponse:
    """Create a unit (Location) of a structure, with its capacities."""
    body = await read_resource(request, "Location")
    return await in_unit(request, partial(_write_location, request, session, principal, body, ""))


@router.put("/fhir/Location/{resource_id}", summary="ROR: update a unit and its beds")
async def update_location(
    request: Request, resource_id: str, session: DbSession, principal: LocationUpdate
) -> FhirJSONResponse:
    """Replace a unit's name, status and capacities (the count's time is now)."""
    body = await read_resource(request, "Location")
    work = partial(_write_location, request, session, principal, body, resource_id)
    return await in_unit(request, work)


@router.post("/fhir/HealthcareService", status_code=201, summary="ROR: a structure's offer")
async def create_service(
    request: Request, session: DbSession, principal: ServiceCreate
) -> FhirJSONResponse:
    """Create an offer of care (HealthcareService) of a structure."""
    body = await read_resource(request, "HealthcareService")
    return await in_unit(request, partial(_write_service, request, session, principal, body, ""))


@router.put("/fhir/HealthcareService/{resource_id}", summary="ROR: update an offer")
async def update_service(
    request: Request, resource_id: str, session: DbSession, principal: ServiceUpdate
) -> FhirJSONResponse:
    """Replace an offer of care."""
    body = await read_resource(request, "HealthcareService")
    work = partial(_write_service, request, session, principal, body, resource_id)
    return await in_unit(request, work)
