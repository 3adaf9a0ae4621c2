"""FHIR R4 endpoints of the directory: IHE mCSD ITI-90 (find matching care services: search
and read of ``Practitioner``, ``PractitionerRole`` and ``Organization``).

Resource ids are the national keys: ``Practitioner/{idNatPs}``, ``Organization/{FINESS}``,
``PractitionerRole/{activity key}``. Reading needs the ``r`` scope on the type, searching the
``s`` scope (every role of the platform has them); 401 without a token, 400 for a malformed
or unsupported parameter, 404 for an unknown id."""

# No ``from __future__ import annotations``: the routes' signatures name the permission of
# their resource type (a local), which FastAPI must see evaluated.
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from enrs.directory import search
from enrs.kit.errors import NotFound
from enrs.kit.fhir.bundle import searchset_bundle
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, prefers_strict
from enrs.kit.http import DbSession, TransactionalRoute, in_unit, require
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["directory"], dependencies=[FhirFormat])

MCSD = "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/"
SEARCHES = {
    "Practitioner": (search.practitioner_spec, search.search_practitioners),
    "PractitionerRole": (search.role_spec, search.search_roles),
    "Organization": (search.organization_spec, search.search_organizations),
}


def register_capabilities(registry: CapabilityRegistry) -> None:
    """Practitioner, PractitionerRole, Organization: read, search-type (ITI-90)."""
    for kind, (spec, _) in SEARCHES.items():
        registry.add_resource(
            kind,
            interactions=["read", "search-type"],
            search_params=spec(),
            profile=f"{MCSD}IHE.mCSD.{kind}",
            documentation="IHE mCSD ITI-90; the national Annuaire Santé search parameters.",
        )


def _search_route(kind: str) -> None:
    spec, _ = SEARCHES[kind]

    async def search_type(
        request: Request,
        session: DbSession,
        _principal: Annotated[Principal, Depends(require(kind, "search-type"))],
    ) -> FhirJSONResponse:
        return await in_unit(request, partial(_search, request, session, kind))

    search_type.__doc__ = f"ITI-90: search {kind} ({', '.join(sorted(spec().params))})."
    router.add_api_route(
        f"/fhir/{kind}", search_type, methods=["GET"], summary=f"mCSD ITI-90: search {kind}"
    )

    async def read(
        request: Request,
        resource_id: str,
        session: DbSession,
        _principal: Annotated[Principal, Depends(require(kind, "read"))],
    ) -> FhirJSONResponse:
        return await in_unit(request, partial(_read, request, session, kind, resource_id))

    read.__doc__ = f"ITI-90: read a {kind}; 404 when unknown."
    router.add_api_route(
        f"/fhir/{kind}/{{resource_id}}", read, methods=["GET"], summary=f"mCSD: read {kind}"
    )


def _search(request: Request, session: Session, kind: str) -> FhirJSONResponse:
    base = request.app.state.settings.fhir_base
    page = SEARCHES[kind][1](
        session,
        list(request.query_params.multi_items()),
        base_url=base,
        strict=prefers_strict(request),
    )
    bundle = searchset_bundle(
        base_url=base,
        resource_type=kind,
        resources=page.resources,
        parsed=page.parsed,
        total=page.total,
        has_next=page.has_next,
        included=page.included,
    )
    return FhirJSONResponse(bundle)


def _read(request: Request, session: Session, kind: str, resource_id: str) -> FhirJSONResponse:
    resource = search.read(session, kind, resource_id) if len(resource_id) <= 64 else None
    if resource is None:
        raise NotFound(f"{kind}/{resource_id} not found")
    request.state.audit[-1].entity_ref = f"{kind}/{resource_id}"
    return FhirJSONResponse(resource)


for _kind in SEARCHES:
    _search_route(_kind)
