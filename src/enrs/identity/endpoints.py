"""FHIR endpoints of the identity server (PIXm ITI-104, ITI-83; PDQm ITI-78, ITI-119)."""

from __future__ import annotations

from fastapi import APIRouter

from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.http import TransactionalRoute

router = APIRouter(route_class=TransactionalRoute, tags=["identity"])


def register_capabilities(registry: CapabilityRegistry) -> None:
    """Declare the Patient interactions this router implements (none yet)."""
