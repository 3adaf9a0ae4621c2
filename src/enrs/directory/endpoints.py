"""FHIR R4 endpoints of the directory: IHE mCSD ITI-90 (find matching care services: search
and read of ``Practitioner``, ``PractitionerRole`` and ``Organization``) and ITI-91 (request
care services updates: ``GET /fhir/{type}/_history?_since=``).

Resource ids are the national keys: ``Practitioner/{idNatPs}``, ``Organization/{FINESS}``,
``PractitionerRole/{activity key}``. Reading needs the ``r`` scope on the type, searching the
``s`` scope (every role of the platform has them); 401 without a token, 400 for a malformed
or unsupported parameter, 404 for an unknown id."""

# No ``from __future__ import annotations``: the routes' signatures name the permission of
# their resource type (a local), which FastAPI must see evaluated.
from datetime import UTC
from functools import partial
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from enrs.directory import endpoint_fhir, offer_fhir, search
from enrs.kit.errors import BadRequest, NotFound
from enrs.kit.fhir.bundle import searchset_bundle
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, prefers_strict
from enrs.kit.fhir.search_values import parse_date
from enrs.kit.http import DbSession, TransactionalRoute, in_unit, require
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["directory"], dependencies=[FhirFormat])

MCSD = "https://profiles.ihe.net/ITI/mCSD/StructureDefinition/"
SEARCHES = {
    "Practitioner": (search.practitioner_spec, search.search_practitioners),
    "PractitionerRole": (search.role_spec, search.search_roles),
    "Organization": (search.organization_spec, search.search_organizations),
    "Endpoint": (endpoint_fhir.endpoint_spec, endpoint_fhir.search_endpoints),
}
# The ROR: offers of care and the units delivering them, written by their structures.
OFFER_SEARCHES = {
    "HealthcareService": (offer_fhir.service_spec, offer_fhir.search_services),
    "Location": (offer_fhir.location_spec, offer_fhir.search_locations),
}
ROR_PROFILES = {"HealthcareService": "ror-healthcareservice", "Location": "ror-location"}


def register_capabilities(registry: CapabilityRegistry) -> None:
    """Practitioner, PractitionerRole, Organization: read, search-type (ITI-90);
    HealthcareService and Location (the ROR): also create and update by their structure."""
    for kind, (spec, _) in SEARCHES.items():
        registry.add_resource(
            kind,
            interactions=["read", "search-type"],
            search_params=spec(),
            profile=f"{MCSD}IHE.mCSD.{kind}",
            documentation="IHE mCSD ITI-90; the national Annuaire Santé search parameters.",
        )
    for kind, (spec, _) in OFFER_SEARCHES.items():
        registry.add_resource(
            kind,
            interactions=["read", "search-type", "create", "update"],
            search_params=spec(),
            profile=offer_fhir.ROR + ROR_PROFILES[kind],
            documentation=(
                "The ROR FHIR guide's resources and searches (capacity parameters apply to "
                "one capacity record; near sorts by distance). Written only by the structure "
                "(its clients, its professionals) or a regional admin."
            ),
        )


def _search_route(kind: str) -> None:
    spec, _ = {**SEARCHES, **OFFER_SEARCHES}[kind]

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

    async def history(
        request: Request,
        session: DbSession,
        _principal: Annotated[Principal, Depends(require(kind, "search-type"))],
    ) -> FhirJSONResponse:
        return await in_unit(request, partial(_history, request, session, kind))

    history.__doc__ = (
        f"ITI-91 (mCSD update): the {kind} resources changed since ``_since`` (an instant), "
        "oldest first, each in its current version; ``_count`` (≤ 1000), ``_offset``."
    )
    router.add_api_route(
        f"/fhir/{kind}/_history", history, methods=["GET"], summary=f"mCSD ITI-91: {kind} changes"
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
    items, strict = list(request.query_params.multi_items()), prefers_strict(request)
    page: search.Page | offer_fhir.Page
    if kind in OFFER_SEARCHES:
        page = OFFER_SEARCHES[kind][1](session, items, base_url=base, strict=strict)
    else:
        page = SEARCHES[kind][1](session, items, base_url=base, strict=strict)
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


def _history(request: Request, session: Session, kind: str) -> FhirJSONResponse:
    base = request.app.state.settings.fhir_base.rstrip("/")
    params = request.query_params
    since = None
    if raw := params.get("_since"):
        try:
            since = parse_date(raw, UTC).lower
        except ValueError as exc:
            raise BadRequest(f"_since {raw!r}: {exc}") from None
    count = _bounded(params.get("_count"), "_count", search.HISTORY_COUNT, search.HISTORY_MAX)
    offset = _bounded(params.get("_offset"), "_offset", 0, 10_000_000)
    if kind == "Endpoint":
        resources, more = endpoint_fhir.history(session, since, count, offset)
    else:
        history = offer_fhir.history if kind in OFFER_SEARCHES else search.history
        resources, more = history(session, kind, since, count, offset)

    def link(relation: str, at: int) -> dict[str, str]:
        items = [("_since", raw)] if since else []
        query = urlencode([*items, ("_count", str(count)), ("_offset", str(at))])
        return {"relation": relation, "url": f"{base}/{kind}/_history?{query}"}

    links = [link("self", offset)] + ([link("next", offset + count)] if more else [])
    entries = [
        {
            "fullUrl": f"{base}/{kind}/{r['id']}",
            "resource": r,
            "request": {"method": "PUT", "url": f"{kind}/{r['id']}"},
            "response": {"status": "200 OK", "lastModified": r["meta"]["lastUpdated"]},
        }
        for r in resources
    ]
    return FhirJSONResponse(
        {"resourceType": "Bundle", "type": "history", "link": links, "entry": entries}
    )


def _bounded(raw: str | None, name: str, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"{name} {raw!r}: a non-negative integer is expected")
    return min(int(raw), maximum)


def _read(request: Request, session: Session, kind: str, resource_id: str) -> FhirJSONResponse:
    if len(resource_id) > 64:
        resource = None
    elif kind == "Endpoint":
        resource = endpoint_fhir.read(session, resource_id)
    else:
        read = offer_fhir.read if kind in OFFER_SEARCHES else search.read
        resource = read(session, kind, resource_id)
    if resource is None:
        raise NotFound(f"{kind}/{resource_id} not found")
    request.state.audit[-1].entity_ref = f"{kind}/{resource_id}"
    return FhirJSONResponse(resource)


for _kind in [*SEARCHES, *OFFER_SEARCHES]:
    _search_route(_kind)
