"""FHIR endpoints of the care plans (:mod:`.plans`, rendered by :mod:`.plan_fhir`) and of the
region's pathways:

- ``POST /fhir/CarePlan``: a new plan of a care circle (``subject`` ``Patient/{RRI}``,
  ``careTeam`` the circle, ``title``, ``status`` draft or active, ``period``, contained
  ``Goal``s, ``activity``); 201 with ``Location`` and ``ETag``.
- ``GET /fhir/CarePlan/{id}``: a plan, with its version as ``ETag`` (``W/"3"``).
- ``PUT /fhir/CarePlan/{id}``: the plan replaced (its patient and circle cannot change);
  with ``If-Match`` for another version than the plan's: 412, nothing changed.
- ``GET /fhir/CarePlan?patient=Patient/{RRI}`` (``&status=``): the patient's plans in the
  caller's circles.
- ``GET /fhir/PlanDefinition``, ``GET /fhir/PlanDefinition/{id}``: the pathways, read-only.
- ``POST /fhir/PlanDefinition/{id}/$apply`` (Parameters ``subject`` ``Patient/{RRI}``,
  ``careTeam`` ``CareTeam/{id}``, optional ``start`` a date, today by default in
  ``ENRS_TIMEZONE``): the plan made in the circle with its tasks (:func:`.plans.apply`); 201
  with the ``CarePlan``. Errors: 400 (malformed parameters, a start that is no date), 403
  (not a member), 404 (unknown pathway or circle), 409 (already under way), 422 (the patient
  is not the circle's, a start more than a year away, a role nobody holds).

People need the ``professional`` role (``user/CarePlan.crus``, ``user/PlanDefinition.rs``);
software a ``system/CarePlan`` scope and its facility in the circle. Every call on a plan is
audited with the patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from enrs.coordination import plan_fhir, plans, service
from enrs.coordination.auth import (
    CarePlanCreate,
    CarePlanRead,
    CarePlanSearch,
    CarePlanUpdate,
    PlanDefinitionRead,
    PlanDefinitionSearch,
)
from enrs.coordination.endpoints import (
    applied,
    expected_version,
    parsed_search,
    patient_from,
    searchset,
)
from enrs.coordination.plan_models import CarePlan
from enrs.documents.access import reader_of
from enrs.identity import service as identity_service
from enrs.kit.errors import BadRequest, Forbidden, NotFound, Unprocessable
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.fhir.search import SearchSpec
from enrs.kit.fhir.search_params import SearchParam
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["coordination"], dependencies=[FhirFormat])
APPLY = "Apply the pathway to a care circle: subject (Patient/{RRI}), careTeam, start (a date)"


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "CarePlan",
        interactions=["create", "read", "update", "search-type"],
        search_params=[
            ("patient", "reference", "The patient (Patient/{RRI}) whose care plans are listed"),
            ("status", "token", "draft, active, on-hold, completed or revoked"),
        ],
        documentation=(
            "Goals are contained Goal resources; an activity that is a coordination task is "
            "activity.reference Task/{id}, any other activity.detail with the performer's role "
            f"in the extension {plan_fhir.PERFORMER_ROLE}."
        ),
    )
    registry.add_resource(
        "PlanDefinition",
        interactions=["read", "search-type"],
        operations=[("apply", APPLY)],
        documentation="The region's care pathways, read-only; $apply makes a care circle's plan.",
    )


def pathways_of(request: Request) -> dict[str, plans.Pathway]:
    """The pathways loaded when the application started."""
    found: dict[str, plans.Pathway] = request.app.state.pathways
    return found


def today(request: Request) -> date:
    """Today in the platform's time zone (``ENRS_TIMEZONE``)."""
    return datetime.now(ZoneInfo(request.app.state.settings.timezone)).date()


def zone(request: Request) -> ZoneInfo:
    """The region's time zone (``ENRS_TIMEZONE``): the pathways' appointments' hours."""
    return ZoneInfo(request.app.state.settings.timezone)


async def _care_plan_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "CarePlan")


async def _parameters_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Parameters")


CarePlanBody = Annotated[dict[str, Any], Depends(_care_plan_body)]
ParametersBody = Annotated[dict[str, Any], Depends(_parameters_body)]


def _answer(
    request: Request, session: Session, plan: CarePlan, status_code: int = 200
) -> FhirJSONResponse:
    team = plans.team_of(session, plan)
    rri = service.patient_of(session, team).rri
    entry = request.state.audit[-1]
    entry.entity_ref, entry.patient_ref = f"CarePlan/{plan.resource_id}", f"Patient/{rri}"
    resource = _resource(session, plan, rri)
    headers = {"ETag": f'W/"{plan.version}"'}
    if status_code == 201:
        base = request.app.state.settings.fhir_base
        headers["Location"] = f"{base}/CarePlan/{plan.resource_id}"
    return FhirJSONResponse(resource, status_code=status_code, headers=headers)


def _resource(session: Session, plan: CarePlan, rri: str) -> dict[str, Any]:
    activities = plans.activities_of(session, plan)
    return plan_fhir.care_plan(
        plan,
        plans.team_of(session, plan),
        rri,
        plans.goals_of(session, plan),
        activities,
        plans.tasks_of(session, activities),
        plans.appointments_of(session, activities),
    )


def _seen(request: Request, session: Session, principal: Principal, plan_id: str) -> CarePlan:
    request.state.audit[-1].entity_ref = f"CarePlan/{plan_id}"[:256]  # refusals audited too
    plan = plans.plan_by_id(session, plan_id)
    rri = service.patient_of(session, plans.team_of(session, plan)).rri
    request.state.audit[-1].patient_ref = f"Patient/{rri}"
    return plans.seen(session, plan, reader_of(session, principal))


@router.post("/fhir/CarePlan", status_code=201, summary="Create a care plan of a care circle")
def create_care_plan(
    request: Request, session: DbSession, principal: CarePlanCreate, body: CarePlanBody
) -> FhirJSONResponse:
    patient = patient_from(request, session, body.get("subject"))
    team = service.team_by_id(session, plan_fhir.care_team_id(body))
    if service.patient_of(session, team).id != patient.id:
        raise Unprocessable(f"CareTeam/{team.resource_id} is not the circle of CarePlan.subject")
    plan = plans.create(session, reader_of(session, principal), team, plan_fhir.fields(body))
    return _answer(request, session, plan, 201)


@router.get("/fhir/CarePlan/{plan_id}", summary="Read a care plan")
def read_care_plan(
    request: Request, plan_id: str, session: DbSession, principal: CarePlanRead
) -> FhirJSONResponse:
    return _answer(request, session, _seen(request, session, principal, plan_id))


@router.put("/fhir/CarePlan/{plan_id}", summary="Update a care plan (If-Match)")
def update_care_plan(
    request: Request,
    plan_id: str,
    session: DbSession,
    principal: CarePlanUpdate,
    body: CarePlanBody,
) -> FhirJSONResponse:
    expected = expected_version(request)
    plan = _seen(request, session, principal, plan_id)
    if body.get("id") != plan_id:
        raise BadRequest("the CarePlan's id must be the id in the URL")
    team = plans.team_of(session, plan)
    rri = service.patient_of(session, team).rri
    subject = body.get("subject")
    if not isinstance(subject, dict) or subject.get("reference") != f"Patient/{rri}":
        raise Unprocessable(f"CarePlan.subject: a plan's patient does not change (Patient/{rri})")
    if plan_fhir.care_team_id(body) != team.resource_id:
        raise Unprocessable("the plan's care circle does not change")
    plans.update(session, reader_of(session, principal), plan, plan_fhir.fields(body), expected)
    return _answer(request, session, plan)


def care_plan_spec() -> SearchSpec:
    """``GET /fhir/CarePlan``: ``patient`` (applied by the base statement, required),
    ``status``; newest first; ``_sort`` on ``_lastUpdated``."""
    return SearchSpec(
        "CarePlan",
        {
            "patient": SearchParam.reference(targets=["Patient"], match=applied),
            "status": SearchParam.token(CarePlan.status),
        },
        sorts={"created": CarePlan.created_at, "_lastUpdated": CarePlan.updated_at},
        default_sort="-created",
        tiebreaker=CarePlan.id,
        default_count=20,
        max_count=100,
    )


@router.get("/fhir/CarePlan", summary="Find a patient's care plans in the caller's circles")
def search_care_plans(
    request: Request, session: DbSession, principal: CarePlanSearch
) -> FhirJSONResponse:
    parsed = parsed_search(request, care_plan_spec())
    if "patient" not in request.query_params:
        raise BadRequest("a search of care plans needs patient (Patient/{RRI})")
    patient = patient_from(request, session, request.query_params["patient"])
    ids = identity_service.merged_patient_ids(session, patient.id)
    stmt = plans.plans_stmt(reader_of(session, principal), ids)

    def render(page: Sequence[CarePlan]) -> list[dict[str, Any]]:
        return [_resource(session, p, patient.rri) for p in page]

    return searchset(request, session, parsed, stmt, render)


@router.get("/fhir/PlanDefinition", summary="The region's care pathways")
def search_plan_definitions(request: Request, principal: PlanDefinitionSearch) -> FhirJSONResponse:
    unknown = set(request.query_params) - {"_format"}
    if unknown:
        raise BadRequest(f"unknown search parameters: {', '.join(sorted(unknown))}")
    base = request.app.state.settings.fhir_base
    entries = [
        {
            "fullUrl": f"{base}/PlanDefinition/{p.id}",
            "resource": p.resource,
            "search": {"mode": "match"},
        }
        for p in pathways_of(request).values()
    ]
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries)}
    return FhirJSONResponse({**bundle, "entry": entries})


def pathway_by_id(request: Request, pathway_id: str) -> plans.Pathway:
    found = pathways_of(request).get(pathway_id)
    if found is None:
        raise NotFound(f"PlanDefinition/{pathway_id} not found")
    return found


@router.get("/fhir/PlanDefinition/{pathway_id}", summary="A care pathway")
def read_plan_definition(
    request: Request, pathway_id: str, principal: PlanDefinitionRead
) -> FhirJSONResponse:
    found = pathway_by_id(request, pathway_id)
    return FhirJSONResponse(found.resource, headers={"ETag": f'W/"{found.version}"'})


def _parameter_values(body: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in body.get("parameter") or []:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise BadRequest("each parameter needs a name")
        if p["name"] in values:
            raise BadRequest(f"the {p['name']} parameter is given twice")
        values[p["name"]] = next((v for k, v in p.items() if k.startswith("value")), None)
    return values


def _reference(value: Any, prefix: str, name: str) -> str:
    """The id of a ``{prefix}/{id}`` given as a Reference or a string (400 otherwise)."""
    raw = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(raw, str) or not raw.startswith(f"{prefix}/") or len(raw) <= len(prefix) + 1:
        raise BadRequest(f"the {name} parameter: a reference {prefix}/{{id}}")
    return raw[len(prefix) + 1 :]


def start_date(value: Any) -> date:
    """A ``start`` parameter: a FHIR date (``YYYY-MM-DD``), else 400."""
    if not isinstance(value, str) or len(value) != 10:
        raise BadRequest("the start parameter: a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"the start parameter: not a date: {value}") from exc


@router.post(
    "/fhir/PlanDefinition/{pathway_id}/$apply",
    status_code=201,
    summary="Apply a pathway: the care plan of a care circle, with its tasks",
)
def apply_plan_definition(
    request: Request,
    pathway_id: str,
    session: DbSession,
    principal: CarePlanCreate,
    body: ParametersBody,
) -> FhirJSONResponse:
    entry = request.state.audit[-1]
    entry.detail = f"PlanDefinition/{pathway_id}"[:1000]
    params = _parameter_values(body)
    unknown = set(params) - {"subject", "careTeam", "start"}
    if unknown:
        raise BadRequest(f"unknown parameters: {', '.join(sorted(unknown))}")
    found = pathway_by_id(request, pathway_id)
    if found.task_roles() and not principal.can("Task", "c"):
        raise Forbidden(f"PlanDefinition/{pathway_id} makes tasks: Task.c is required too")
    if any(a.kind != "task" for a in found.actions) and not principal.can("Appointment", "c"):
        raise Forbidden(
            f"PlanDefinition/{pathway_id} makes appointments: Appointment.c is required too"
        )
    subject = _reference(params.get("subject"), "Patient", "subject")
    patient = patient_from(request, session, f"Patient/{subject}")
    team = service.team_by_id(session, _reference(params.get("careTeam"), "CareTeam", "careTeam"))
    if service.patient_of(session, team).id != patient.id:
        raise Unprocessable(f"CareTeam/{team.resource_id} is not the circle of Patient/{subject}")
    start = start_date(params["start"]) if params.get("start") is not None else today(request)
    reader = reader_of(session, principal)
    plan = plans.apply(session, reader, team, found, start, today(request), zone(request))
    return _answer(request, session, plan, 201)
