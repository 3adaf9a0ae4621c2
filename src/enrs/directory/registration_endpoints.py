"""FHIR R4 writes of the regional directory (:mod:`.registration`): the professionals and
structures the national files do not cover, registered by the region.

- ``POST /fhir/Practitioner``: a professional (``name`` with a family name; ``prefix``,
  ``given``, ``active``; an RPPS number, ``https://rpps.esante.gouv.fr``, may be given) gets a
  local identifier ``L…`` (system ``urn:oid:{root}.3.1``), its id until an RPPS is attached;
- ``PUT /fhir/Practitioner/{id}``: updates a regional professional; an RPPS number in its
  identifiers is attached: it answers from then on under idNatPs ``8`` + RPPS (returned in
  ``Location``), the local identifier kept as a second one;
- ``POST /fhir/Organization``, ``PUT /fhir/Organization/{id}``: a structure without FINESS
  (``name``; ``address``, ``telecom`` phone, a SIRET identifier, a TRE_R66 ``type``) gets a
  local identifier ``S…`` (system ``urn:oid:{root}.3.2``);
- ``POST /fhir/PractitionerRole``: an activity of a regional professional (``practitioner``)
  in a structure of the directory (``organization``: FINESS or local id), its profession in
  ``code`` (TRE_G15, or the regional list ``urn:oid:{root}.3.3``), ``specialty`` optional.

Permissions: the ``c`` scope on the type to create, ``u`` to update (the ``admin`` role has
them); every write is audited. Errors are OperationOutcomes: 400 a malformed body or a value
refused (wrong RPPS key, unknown profession or structure) and nothing stored, 401 no valid
token, 403 missing scope, 404 unknown id, 409 a national entry (only the national files update
it), an RPPS number already in the directory, an activity registered already."""

# No ``from __future__ import annotations``: FastAPI must see the dependencies evaluated.
import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session

from enrs.directory import fhir, registration, search
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM, RegionalSystems
from enrs.directory.models import Professional, Structure
from enrs.kit.errors import BadRequest
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.http import DbSession, TransactionalRoute, require
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["directory"], dependencies=[FhirFormat])

PractitionerCreate = Annotated[Principal, Depends(require("Practitioner", "create"))]
PractitionerUpdate = Annotated[Principal, Depends(require("Practitioner", "update"))]
OrganizationCreate = Annotated[Principal, Depends(require("Organization", "create"))]
OrganizationUpdate = Annotated[Principal, Depends(require("Organization", "update"))]
RoleCreate = Annotated[Principal, Depends(require("PractitionerRole", "create"))]


def register_capabilities(registry: CapabilityRegistry) -> None:
    """The regional writes, on the types the directory's read endpoints registered."""
    registry.add_interactions("Practitioner", ["create", "update"])
    registry.add_interactions("Organization", ["create", "update"])
    registry.add_interactions("PractitionerRole", ["create"])


def systems(request: Request) -> RegionalSystems:
    return RegionalSystems.of(request.app.state.settings.oid_root)


async def practitioner_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Practitioner")


async def organization_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Organization")


async def role_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "PractitionerRole")


# --- the parts of the resources read (others are ignored) -----------------------------------


class _Element(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Coding(_Element):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class _Concept(_Element):
    coding: list[_Coding] = []


class _Identifier(_Element):
    system: str | None = None
    value: str | None = None


class _Name(_Element):
    use: str | None = None
    family: str | None = None
    given: list[str] = []
    prefix: list[str] = []


class _ContactPoint(_Element):
    system: str | None = None
    value: str | None = None


class _Address(_Element):
    line: list[str] = []
    postalCode: str | None = None  # the FHIR name
    city: str | None = None


class _Reference(_Element):
    reference: str | None = None


class _Practitioner(_Element):
    id: str | None = None
    identifier: list[_Identifier] = []
    active: bool = True
    name: list[_Name] = []


class _Organization(_Element):
    id: str | None = None
    identifier: list[_Identifier] = []
    active: bool = True
    name: str | None = None
    type: list[_Concept] = []
    address: list[_Address] = []
    telecom: list[_ContactPoint] = []


class _Role(_Element):
    practitioner: _Reference | None = None
    organization: _Reference | None = None
    code: list[_Concept] = []
    specialty: list[_Concept] = []
    telecom: list[_ContactPoint] = []


E = TypeVar("E", bound=_Element)


def _parse(model: type[E], resource: dict[str, Any]) -> E:
    try:
        return model.model_validate(resource)
    except ValidationError as exc:
        details = "; ".join(
            f"{resource.get('resourceType')}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        )
        raise BadRequest(details, issue_code="structure") from None


def _telecom(points: list[_ContactPoint], system: str) -> str:
    return next((p.value or "" for p in points if p.system == system), "")


def _practitioner_in(
    resource: dict[str, Any], systems: RegionalSystems, person: Professional | None
) -> registration.ProfessionalIn:
    """The professional of a Practitioner body; 400 for an identifier not accepted: the
    local one is given by the directory, an idNatPs is ``8`` + an RPPS number."""
    body = _parse(_Practitioner, resource)
    numbers: set[str] = set()
    for ident in body.identifier:
        value = ident.value or ""
        if ident.system == fhir.RPPS_NUMBER_SYSTEM:
            numbers.add(value)
        elif ident.system == RPPS_SYSTEM and value.startswith("8"):
            numbers.add(value[1:])
        elif ident.system == systems.professional and person and value == person.local_id:
            continue
        elif ident.system == systems.professional:
            raise BadRequest(f"the local identifier ({systems.professional}) is given here")
        else:
            raise BadRequest(
                f"Practitioner.identifier {ident.system}|{value}: only an RPPS number "
                f"({fhir.RPPS_NUMBER_SYSTEM}, or idNatPs 8 + RPPS) is accepted"
            )
    if len(numbers) > 1:
        raise BadRequest(f"Practitioner.identifier: two RPPS numbers {sorted(numbers)}")
    names = [n for n in body.name if n.use in (None, "official", "usual")]
    name = names[0] if names else _Name()
    values = {
        "family": name.family or "",
        "given": " ".join(name.given),
        "civility": name.prefix[0] if name.prefix else "",
        "rpps": next(iter(numbers), None),
        "active": body.active,
    }
    return registration.checked(registration.ProfessionalIn, values)


def _structure_in(
    resource: dict[str, Any], systems: RegionalSystems, place: Structure | None
) -> registration.StructureIn:
    """The structure of an Organization body; 400 for a FINESS number (those structures come
    from the national file), a local identifier not its own, a type not of TRE_R66."""
    body = _parse(_Organization, resource)
    siret = ""
    for ident in body.identifier:
        value = ident.value or ""
        if ident.system == fhir.SIRET_SYSTEM:
            siret = value
        elif ident.system == systems.structure and place and value == place.local_id:
            continue
        elif ident.system == FINESS_SYSTEM:
            raise BadRequest(
                "a structure with a FINESS number comes from the national FINESS file: the "
                "regional directory registers structures without one"
            )
        else:
            raise BadRequest(
                f"Organization.identifier {ident.system}|{value}: only a SIRET "
                f"({fhir.SIRET_SYSTEM}) is accepted"
            )
    category = [c for t in body.type for c in t.coding]
    if any(c.system != fhir.ESTABLISHMENT_CATEGORY for c in category):
        raise BadRequest(f"Organization.type: only {fhir.ESTABLISHMENT_CATEGORY} is accepted")
    address = body.address[0] if body.address else _Address()
    values = {
        "name": body.name or "",
        "address_line": ", ".join(address.line),
        "postal_code": address.postalCode or "",
        "city": address.city or "",
        "phone": _telecom(body.telecom, "phone"),
        "siret": siret,
        "category_code": (category[0].code or "") if category else "",
        "category": (category[0].display or "") if category else "",
        "active": body.active,
    }
    return registration.checked(registration.StructureIn, values)


def _reference(reference: _Reference | None, kind: str) -> str:
    """The id of a ``{kind}/{id}`` reference (relative, or absolute on this server)."""
    text = (reference.reference or "") if reference else ""
    parts = text.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != kind or not parts[-1]:
        raise BadRequest(f"PractitionerRole.{kind.lower()}: a reference {kind}/{{id}} is required")
    return parts[-1]


def _activity_in(resource: dict[str, Any]) -> tuple[str, registration.ActivityIn]:
    """The professional (its id) and the activity of a PractitionerRole body."""
    body = _parse(_Role, resource)
    codes = [c for concept in body.code for c in concept.coding]
    if not codes:
        raise BadRequest("PractitionerRole.code: the profession is required")
    skills = [c for concept in body.specialty for c in concept.coding]
    skill = skills[0] if skills else _Coding()
    professional = _reference(body.practitioner, "Practitioner")
    values = {
        "structure": _reference(body.organization, "Organization"),
        "profession_system": codes[0].system,
        "profession_code": codes[0].code or "",
        "profession": codes[0].display or "",
        "skill_system": skill.system,
        "skill_code": skill.code or "",
        "skill": skill.display or "",
        "phone": _telecom(body.telecom, "phone"),
        "email": _telecom(body.telecom, "email"),
    }
    return professional, registration.checked(registration.ActivityIn, values)


# --- the routes --------------------------------------------------------------------------


def _answer(
    request: Request, session: Session, kind: str, resource_id: str, status: int, **detail: Any
) -> FhirJSONResponse:
    """The resource as stored now (``Location``: where it answers), the write audited."""
    entry = request.state.audit[-1]
    entry.entity_ref = f"{kind}/{resource_id}"
    entry.detail = json.dumps({"origin": registration.REGIONAL, **detail})
    resource = search.read(session, kind, resource_id)
    assert resource is not None
    base = request.app.state.settings.fhir_base.rstrip("/")
    return FhirJSONResponse(
        resource, status_code=status, headers={"Location": f"{base}/{kind}/{resource_id}"}
    )


def _same_id(resource: dict[str, Any], kind: str, resource_id: str) -> None:
    if resource.get("id") != resource_id:
        raise BadRequest(f"{kind}.id must be {resource_id!r}, the id in the URL")


@router.post("/fhir/Practitioner", summary="Register a regional professional")
def create_practitioner(
    request: Request,
    session: DbSession,
    _principal: PractitionerCreate,
    resource: Annotated[dict[str, Any], Depends(practitioner_body)],
) -> FhirJSONResponse:
    """A professional the national files do not cover, with a local identifier (and an RPPS
    number attached when given); 201 with the Practitioner."""
    data = _practitioner_in(resource, systems(request), None)
    person = registration.register_professional(session, systems(request), data)
    return _answer(
        request, session, "Practitioner", person.id_nat_ps, 201, local_id=person.local_id
    )


@router.put("/fhir/Practitioner/{resource_id}", summary="Update a regional professional")
def update_practitioner(
    request: Request,
    resource_id: str,
    session: DbSession,
    _principal: PractitionerUpdate,
    resource: Annotated[dict[str, Any], Depends(practitioner_body)],
) -> FhirJSONResponse:
    """Update a regional professional (404 unknown, 409 national); an RPPS number given is
    attached (400 wrong key, 409 already in the directory): the Practitioner then answers
    under idNatPs ``8`` + RPPS, its new ``Location``."""
    _same_id(resource, "Practitioner", resource_id)
    person = registration.regional_professional(session, resource_id[:16])
    data = _practitioner_in(resource, systems(request), person)
    person = registration.update_professional(session, person.id_nat_ps, data)
    detail = {"previous_id": resource_id} if person.id_nat_ps != resource_id else {}
    return _answer(request, session, "Practitioner", person.id_nat_ps, 200, **detail)


@router.post("/fhir/Organization", summary="Register a regional structure")
def create_organization(
    request: Request,
    session: DbSession,
    _principal: OrganizationCreate,
    resource: Annotated[dict[str, Any], Depends(organization_body)],
) -> FhirJSONResponse:
    """A structure without FINESS, with a local identifier; 201 with the Organization."""
    data = _structure_in(resource, systems(request), None)
    place = registration.register_structure(session, systems(request), data)
    return _answer(request, session, "Organization", place.finess, 201, local_id=place.local_id)


@router.put("/fhir/Organization/{resource_id}", summary="Update a regional structure")
def update_organization(
    request: Request,
    resource_id: str,
    session: DbSession,
    _principal: OrganizationUpdate,
    resource: Annotated[dict[str, Any], Depends(organization_body)],
) -> FhirJSONResponse:
    """Update a regional structure (404 unknown, 409 a FINESS one)."""
    _same_id(resource, "Organization", resource_id)
    place = registration.regional_structure(session, resource_id[:16])
    data = _structure_in(resource, systems(request), place)
    registration.update_structure(session, place.finess, data)
    return _answer(request, session, "Organization", place.finess, 200)


@router.post("/fhir/PractitionerRole", summary="Register an activity of a regional professional")
def create_practitioner_role(
    request: Request,
    session: DbSession,
    _principal: RoleCreate,
    resource: Annotated[dict[str, Any], Depends(role_body)],
) -> FhirJSONResponse:
    """An activity of a regional professional in a structure of the directory; 201 with the
    PractitionerRole."""
    professional, data = _activity_in(resource)
    activity = registration.register_activity(session, systems(request), professional, data)
    return _answer(request, session, "PractitionerRole", activity.activity_key, 201)
