"""FHIR endpoints of the care circle (ANS guide *Cercle de soins*):

- ``POST /fhir/CareTeam``: a new circle (``subject`` the patient, ``name``); its maker is its
  first member. Participants are added by the operations below, not in the body (422).
- ``GET /fhir/CareTeam/{id}`` (its members, the invited and the regional team) and
  ``GET /fhir/CareTeam?patient=Patient/{RRI}`` (the patient's circles the caller sees) or
  without ``patient`` (the circles the caller is in); ``status`` filters.
- ``POST /fhir/CareTeam/{id}/$invite`` (``member``: a Reference by identifier, or a display
  with ``kind`` ``related-person`` for a family carer; ``role``), ``$accept``, ``$join``
  (``role``; needs the patient's consent), ``$remove`` (``participant``: its id), and
  ``$consent`` (``actor``: the professional or structure the patient agreed to) which answers
  the recorded ``Consent``.

Every answer carries the circle's version as ``ETag``; a change sent with ``If-Match`` for
another version is refused with 412. Every call is audited with the patient."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from enrs.coordination import fhir, service
from enrs.coordination.auth import (
    CareTeamCreate,
    CareTeamRead,
    CareTeamSearch,
    CareTeamUpdate,
    ConsentCreate,
    manages_circle,
)
from enrs.coordination.models import CareTeam
from enrs.documents import service as documents_service
from enrs.documents.access import reader_of
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.kit.errors import BadRequest, Forbidden, Unprocessable
from enrs.kit.fhir.bundle import searchset_bundle
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.fhir.search import (
    PRESENTATION_PARAMS,
    RESULT_PARAMS,
    ParsedSearch,
    SearchSpec,
    apply_search,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.fhir.search_params import SearchParam
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["coordination"], dependencies=[FhirFormat])
OPERATIONS = {
    "invite": "Invite a professional, a structure or a family carer: member, role",
    "accept": "Accept an invitation to the care circle",
    "join": "Join the care circle with the patient's consent: role",
    "remove": "Remove a participant (or leave): participant",
    "consent": "Record the patient's consent that a professional or structure joins: actor",
}
_WEAK_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "CareTeam",
        interactions=["create", "read", "search-type"],
        search_params=[
            ("patient", "reference", "The patient (Patient/{RRI}) whose circles are listed"),
            ("status", "token", "active or inactive"),
        ],
        operations=list(OPERATIONS.items()),
    )


def parsed_search(request: Request, spec: SearchSpec) -> ParsedSearch:
    """The coordination searches' query, checked against ``spec`` as every FHIR search of the
    platform is (:func:`~enrs.kit.fhir.search.parse_search`: ``_count``, capped at the
    spec's maximum, ``_offset``, ``_sort``); a parameter the search does not know is refused
    (400), not ignored."""
    names = {name.partition(":")[0] for name in request.query_params}
    unknown = names - set(spec.params) - RESULT_PARAMS - PRESENTATION_PARAMS
    if unknown:
        raise BadRequest(f"unknown search parameters: {', '.join(sorted(unknown))}")
    base = request.app.state.settings.fhir_base
    items = list(request.query_params.multi_items())
    return parse_search(spec, items, strict=True, base_url=base)


def searchset(
    request: Request,
    session: Session,
    parsed: ParsedSearch,
    stmt: Any,
    render: Callable[[Sequence[Any]], list[dict[str, Any]]],
) -> FhirJSONResponse:
    """One page of ``stmt`` (the rows the caller may see) searched by ``parsed``, rendered as
    the platform's searchset Bundle: a stable order, ``total``, ``self``/``first``/``next``/
    ``previous``/``last`` links."""
    rows = list(session.scalars(apply_search(stmt, parsed)))
    page, has_next = split_page(rows, parsed)
    bundle = searchset_bundle(
        base_url=request.app.state.settings.fhir_base,
        resource_type=parsed.spec.resource_type,
        resources=render(page),
        parsed=parsed,
        total=search_total(session, stmt, parsed, page, has_next),
        has_next=has_next,
    )
    return FhirJSONResponse(bundle)


def applied(_value: Any) -> Any:
    # Resolved by the endpoint (the patient through the identity server): the search's base
    # statement already holds only what the value names.
    return sa.true()


def care_team_spec() -> SearchSpec:
    """``GET /fhir/CareTeam``: ``patient`` (applied by the base statement), ``status``; in the
    order the circles were made."""
    return SearchSpec(
        "CareTeam",
        {
            "patient": SearchParam.reference(targets=["Patient"], match=applied),
            "status": SearchParam.token(CareTeam.status),
        },
        sorts={"_lastUpdated": CareTeam.updated_at},
        tiebreaker=CareTeam.id,
        default_count=20,
        max_count=100,
    )


def _actor(session: Session, principal: Principal) -> service.Actor:
    reader = reader_of(session, principal)
    return service.Actor(reader, team="admin" in principal.roles, manages=manages_circle(principal))


def expected_version(request: Request) -> int | None:
    """The version an ``If-Match`` header names (``W/"3"``), if any; 400 when malformed."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    found = _WEAK_ETAG.match(raw.strip())
    if found is None:
        raise BadRequest('If-Match: W/"{version}" as the ETag gave it')
    return int(found.group(1))


def _answer(
    request: Request, session: Session, team: CareTeam, status_code: int = 200
) -> FhirJSONResponse:
    patient = service.patient_of(session, team)
    entry = request.state.audit[-1]
    entry.patient_ref, entry.entity_ref = f"Patient/{patient.rri}", f"CareTeam/{team.resource_id}"
    resource = fhir.care_team(team, service.members(session, team), patient.rri)
    headers = {"ETag": f'W/"{team.version}"'}
    if status_code == 201:
        base = request.app.state.settings.fhir_base
        headers["Location"] = f"{base}/CareTeam/{team.resource_id}"
    return FhirJSONResponse(resource, status_code=status_code, headers=headers)


def patient_from(request: Request, session: Session, reference: Any) -> PatientRef:
    """The patient a ``Patient/{RRI}`` reference names (422 otherwise), named in the call's
    audit record."""
    raw = reference.get("reference") if isinstance(reference, dict) else reference
    if not isinstance(raw, str) or not raw.startswith("Patient/"):
        raise Unprocessable("the patient: a reference Patient/{RRI}")
    config: IdentityConfig = request.app.state.identity_config
    patient = documents_service.resolve_patient(session, config, ("rri", raw[8:]))
    request.state.audit[-1].patient_ref = f"Patient/{patient.rri}"
    return patient


def _found(request: Request, session: Session, team_id: str) -> CareTeam:
    """The circle, its patient and itself named in the call's audit record (refusals too)."""
    request.state.audit[-1].entity_ref = f"CareTeam/{team_id}"[:256]
    team = service.team_by_id(session, team_id)
    request.state.audit[-1].patient_ref = f"Patient/{service.patient_of(session, team).rri}"
    return team


def _seen(request: Request, session: Session, principal: Principal, team_id: str) -> CareTeam:
    team = _found(request, session, team_id)
    if not service.may_see(session, team, _actor(session, principal)):
        raise Forbidden(f"CareTeam/{team_id} is seen by its members only")
    return team


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in body.get("parameter") or []:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise BadRequest("each parameter needs a name")
        values[p["name"]] = next((v for k, v in p.items() if k.startswith("value")), None)
    return values


async def _operation_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Parameters")


OperationBody = Annotated[dict[str, Any], Depends(_operation_body)]


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"the {name} parameter (a string) is required")
    return value


@router.post("/fhir/CareTeam", status_code=201, summary="Make a patient's care circle")
async def create_care_team(
    request: Request, session: DbSession, principal: CareTeamCreate
) -> FhirJSONResponse:
    body = await read_resource(request, "CareTeam")
    if body.get("participant"):
        raise Unprocessable("CareTeam.participant: members are added with $invite or $join")
    patient = patient_from(request, session, body.get("subject"))
    name = body.get("name")
    if not isinstance(name, str):
        raise Unprocessable("CareTeam.name is required")
    team = service.create(session, _actor(session, principal), patient, name=name)
    return _answer(request, session, team, 201)


@router.get("/fhir/CareTeam/{team_id}", summary="Read a care circle")
def read_care_team(
    request: Request, team_id: str, session: DbSession, principal: CareTeamRead
) -> FhirJSONResponse:
    return _answer(request, session, _seen(request, session, principal, team_id))


@router.get("/fhir/CareTeam", summary="Find care circles")
def search_care_teams(
    request: Request, session: DbSession, principal: CareTeamSearch
) -> FhirJSONResponse:
    parsed = parsed_search(request, care_team_spec())
    actor = _actor(session, principal)
    if "patient" in request.query_params:
        patient = patient_from(request, session, request.query_params["patient"])
        stmt = service.circles_of_stmt(session, patient, actor)
    else:
        stmt = service.circles_with_stmt(actor.reader)

    def render(page: Sequence[CareTeam]) -> list[dict[str, Any]]:
        members = service.members_of(session, [team.id for team in page])
        return [
            fhir.care_team(team, members.get(team.id, []), service.patient_of(session, team).rri)
            for team in page
        ]

    return searchset(request, session, parsed, stmt, render)


@router.post("/fhir/CareTeam/{team_id}/$invite", summary="Invite someone to a care circle")
def invite(
    request: Request,
    team_id: str,
    session: DbSession,
    principal: CareTeamUpdate,
    body: OperationBody,
) -> FhirJSONResponse:
    expected = expected_version(request)
    team = _seen(request, session, principal, team_id)
    params = _parameters(body)
    role = _text(params, "role")
    if params.get("kind") == "related-person":
        new = service.NewMember("related-person", role, display=_text(params, "display"))
    else:
        kind, rpps, finess = fhir.identified(params.get("member"), "member")
        new = service.NewMember(kind, role, rpps=rpps, finess=finess)
    service.invite(session, _actor(session, principal), team, new, expected)
    return _answer(request, session, team)


@router.post("/fhir/CareTeam/{team_id}/$accept", summary="Accept an invitation to a care circle")
def accept(
    request: Request, team_id: str, session: DbSession, principal: CareTeamUpdate
) -> FhirJSONResponse:
    team = _seen(request, session, principal, team_id)
    service.accept(session, _actor(session, principal), team)
    return _answer(request, session, team)


@router.post("/fhir/CareTeam/{team_id}/$join", summary="Join a care circle with consent")
def join(
    request: Request,
    team_id: str,
    session: DbSession,
    principal: CareTeamUpdate,
    body: OperationBody,
) -> FhirJSONResponse:
    team = _found(request, session, team_id)
    role = _text(_parameters(body), "role")
    service.join(session, _actor(session, principal), team, role=role)
    return _answer(request, session, team)


@router.post("/fhir/CareTeam/{team_id}/$remove", summary="Remove a participant of a care circle")
def remove(
    request: Request,
    team_id: str,
    session: DbSession,
    principal: CareTeamUpdate,
    body: OperationBody,
) -> FhirJSONResponse:
    expected = expected_version(request)
    team = _seen(request, session, principal, team_id)
    raw = _parameters(body).get("participant")
    if not isinstance(raw, str) or not raw.isdigit():
        raise BadRequest("the participant parameter: the participant's id (a string)")
    service.remove(session, _actor(session, principal), team, int(raw), expected)
    return _answer(request, session, team)


@router.post("/fhir/CareTeam/{team_id}/$consent", status_code=201, summary="Record a consent")
def record_consent(
    request: Request,
    team_id: str,
    session: DbSession,
    principal: ConsentCreate,
    body: OperationBody,
) -> FhirJSONResponse:
    team = _seen(request, session, principal, team_id)
    _kind, rpps, finess = fhir.identified(_parameters(body).get("actor"), "actor")
    found = service.record_consent(
        session, _actor(session, principal), team, rpps=rpps, finess=finess
    )
    rri = service.patient_of(session, team).rri
    entry = request.state.audit[-1]
    entry.patient_ref, entry.entity_ref = f"Patient/{rri}", f"Consent/{found.resource_id}"
    return FhirJSONResponse(fhir.consent(found, team, rri), status_code=201)
