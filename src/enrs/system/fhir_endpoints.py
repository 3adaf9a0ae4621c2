"""The FHIR base: ``GET /fhir/metadata`` (CapabilityStatement built from what the routers
registered). Content negotiation for every FHIR route is in ``kit/fhir/requests.py``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from enrs import __version__
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat
from enrs.kit.http import TransactionalRoute, authenticate, get_db

router = APIRouter(route_class=TransactionalRoute, tags=["fhir"], dependencies=[FhirFormat])


@router.get("/fhir/metadata", summary="CapabilityStatement of this server")
def metadata(request: Request, session: Session = Depends(get_db)) -> FhirJSONResponse:
    """Public, like every FHIR server's; a bearer token, when sent, must still be valid."""
    if request.headers.get("authorization"):
        authenticate(request, session)
    settings = request.app.state.settings
    registry: CapabilityRegistry = request.app.state.capabilities
    return FhirJSONResponse(
        registry.capability_statement(
            base_url=settings.fhir_base,
            software_name="ENRS",
            software_version=__version__,
            security_description=(
                "OAuth 2 bearer tokens (SMART App Launch v2 scopes) from "
                f"{settings.base_url}/oauth/token; every access to patient data is audited."
            ),
            token_url=f"{settings.base_url}/oauth/token",
        )
    )
