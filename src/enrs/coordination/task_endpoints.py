"""FHIR endpoints of the coordination tasks (:mod:`.tasks`, rendered by :mod:`.task_fhir`):

- ``POST /fhir/Task``: a new task of a care circle (``for`` ``Patient/{RRI}``, the circle in
  the ``task-care-team`` extension, ``code.text``, ``owner`` or ``performerType``,
  ``restriction.period.end``); 201 with ``Location`` and ``ETag``.
- ``GET /fhir/Task/{id}``: a task, with its version as ``ETag`` (``W/"3"``).
- ``PUT /fhir/Task/{id}``: the task replaced (status, owner, due date, priority, title,
  description; its patient and circle cannot change); with ``If-Match`` for another version
  than the task's: 412, nothing changed.
- ``GET /fhir/Task?owner=me`` (the caller's tasks: their RPPS, one of their structures, a
  role they hold in the task's circle), ``&patient=Patient/{RRI}`` (the patient's tasks in
  the caller's circles), ``&status=``, ``&overdue=true|false``; overdue tasks say so in
  ``businessStatus``.

**Sharing ``/fhir/Task`` with the identitovigilance cell's queue** (:mod:`enrs.identity.
task_endpoints`), the dispatch rule (:func:`is_coordination_request`), applied by this
router's route class and its routes being mounted before the cell's:

- ``/fhir/Task/{id}``: an id made of digits only is one of the cell's tasks; any other id is
  a coordination task (their ids are 32 hex digits, at least one of them a letter).
- ``GET /fhir/Task``: a search with ``owner``, ``patient`` or ``overdue`` is a search of the
  coordination tasks; without them, of the cell's queue (its ``focus``, ``code``,
  ``facility``…).
- ``POST /fhir/Task`` and ``PUT /fhir/Task/{id}`` are the coordination tasks' only.

People need the ``professional`` role (``user/Task.crus``); software a ``system/Task``
scope and its facility in the circle. Every call is audited with the patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.routing import Match
from starlette.types import Scope

from enrs.coordination import service, task_fhir, tasks
from enrs.coordination.auth import (
    TaskCreate,
    TaskRead,
    TaskSearch,
    TaskUpdate,
    changes_any_task,
)
from enrs.coordination.endpoints import (
    applied,
    expected_version,
    parsed_search,
    patient_from,
    searchset,
)
from enrs.coordination.models import CareTeam
from enrs.coordination.task_models import CoordinationTask
from enrs.documents.access import reader_of
from enrs.identity import service as identity_service
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Unprocessable
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.fhir.search import SearchSpec
from enrs.kit.fhir.search_params import SearchParam
from enrs.kit.fhir.search_values import TokenValue
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal

COORDINATION_PARAMS = frozenset({"owner", "patient", "overdue"})
SEARCH_PARAMS = (
    ("owner", "token", "me: the caller's coordination tasks (theirs, their structures', roles)"),
    ("patient", "reference", "Patient/{RRI}: the patient's coordination tasks"),
    ("overdue", "token", "true | false: coordination tasks past their due date, still open"),
)
DISPATCH = (
    "Coordination tasks (care circles) share these URLs with the identitovigilance cell's "
    "queue: an id of digits only is the cell's, any other a coordination task's; a search "
    "with `owner`, `patient` or `overdue` finds coordination tasks, without them the cell's; "
    "create and update are the coordination tasks'. The circle is the extension "
    f"{task_fhir.TASK_CARE_TEAM}; a role of the circle is `performerType`."
)


def is_coordination_request(path_params: dict[str, Any], method: str, query: bytes) -> bool:
    """The one dispatch rule between the coordination tasks and the cell's queue."""
    task_id = path_params.get("task_id")
    if task_id is not None:
        return not str(task_id).isdigit()
    if method == "GET":
        names = {name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)}
        return bool(names & COORDINATION_PARAMS)
    return True


class CoordinationTaskRoute(TransactionalRoute):
    """A route that matches only the requests :func:`is_coordination_request` gives to the
    coordination tasks; the others go on to the cell's routes."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.NONE:
            return match, child
        params = child.get("path_params") or {}
        if is_coordination_request(params, scope["method"], scope.get("query_string", b"")):
            return match, child
        return Match.NONE, {}


router = APIRouter(
    route_class=CoordinationTaskRoute, tags=["coordination"], dependencies=[FhirFormat]
)


def register_capabilities(registry: CapabilityRegistry) -> None:
    """After the cell's ``Task`` (:mod:`enrs.identity.task_endpoints`): one ``Task`` entry."""
    registry.add_interactions("Task", ["create", "read", "update", "search-type"])
    registry.add_search_params("Task", SEARCH_PARAMS)
    registry.add_documentation("Task", DISPATCH)


async def _task_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Task")


TaskBody = Annotated[dict[str, Any], Depends(_task_body)]


def _audited(request: Request, session: Session, task: CoordinationTask) -> str:
    """The task's patient's RRI, the task and its patient named in the call's audit record."""
    entry = request.state.audit[-1]
    entry.entity_ref = f"Task/{task.resource_id}"
    rri = service.patient_of(session, tasks.team_of(session, task)).rri
    entry.patient_ref = f"Patient/{rri}"
    return rri


def _answer(
    request: Request, session: Session, task: CoordinationTask, status_code: int = 200
) -> FhirJSONResponse:
    rri = _audited(request, session, task)
    resource = task_fhir.task(task, tasks.team_of(session, task), rri, utcnow())
    headers = {"ETag": f'W/"{task.version}"'}
    if status_code == 201:
        base = request.app.state.settings.fhir_base
        headers["Location"] = f"{base}/Task/{task.resource_id}"
    return FhirJSONResponse(resource, status_code=status_code, headers=headers)


def _seen(
    request: Request, session: Session, principal: Principal, task_id: str
) -> CoordinationTask:
    request.state.audit[-1].entity_ref = f"Task/{task_id}"[:256]  # refusals are audited too
    task = tasks.task_by_id(session, task_id)
    _audited(request, session, task)
    return tasks.seen(session, task, reader_of(session, principal))


@router.post("/fhir/Task", status_code=201, summary="Create a task of a care circle")
def create_task(
    request: Request, session: DbSession, principal: TaskCreate, body: TaskBody
) -> FhirJSONResponse:
    patient = patient_from(request, session, body.get("for"))
    team = service.team_by_id(session, task_fhir.care_team_id(body))
    if service.patient_of(session, team).id != patient.id:
        raise Unprocessable(f"CareTeam/{team.resource_id} is not the circle of Task.for")
    task = tasks.create(session, reader_of(session, principal), team, task_fhir.fields(body))
    return _answer(request, session, task, 201)


# (shared with the cell's route, which /openapi.json shows with both: one operation)
@router.get("/fhir/Task/{task_id}", summary="Read a task of a care circle", include_in_schema=False)
def read_task(
    request: Request, task_id: str, session: DbSession, principal: TaskRead
) -> FhirJSONResponse:
    return _answer(request, session, _seen(request, session, principal, task_id))


@router.put("/fhir/Task/{task_id}", summary="Update a task of a care circle (If-Match)")
def update_task(
    request: Request, task_id: str, session: DbSession, principal: TaskUpdate, body: TaskBody
) -> FhirJSONResponse:
    expected = expected_version(request)
    task = _seen(request, session, principal, task_id)
    if body.get("id") != task_id:
        raise BadRequest("the Task's id must be the id in the URL")
    rri = service.patient_of(session, tasks.team_of(session, task)).rri
    given = body.get("for")
    if given is not None and (
        not isinstance(given, dict) or given.get("reference") != f"Patient/{rri}"
    ):
        raise Unprocessable(f"Task.for: a task's patient does not change (Patient/{rri})")
    if task_fhir.care_team_id(body) != tasks.team_of(session, task).resource_id:
        raise Unprocessable("the task's care circle does not change")
    reader = reader_of(session, principal)
    own_only = not changes_any_task(principal)
    tasks.update(session, reader, task, task_fhir.fields(body), expected, own_only=own_only)
    return _answer(request, session, task)


def _owner_me(value: TokenValue) -> Any:
    if value.system is not None or value.code != "me":
        raise ValueError("me: the caller's tasks")
    return sa.true()  # the base statement (tasks.visible_tasks, mine) holds the caller's only


def _overdue(value: TokenValue) -> Any:
    if value.system is not None or value.code not in ("true", "false"):
        raise ValueError("true or false")
    clause = tasks.overdue_clause(utcnow())
    return clause if value.code == "true" else sa.not_(clause)


def task_spec() -> SearchSpec:
    """``GET /fhir/Task`` of the coordination tasks: ``owner=me``, ``patient`` (both applied
    by the base statement), ``status``, ``overdue``; by due date (none last), then as asked
    (:data:`tasks.TASK_ORDER`); ``_sort`` on ``due``, ``authored-on``, ``_lastUpdated``."""
    return SearchSpec(
        "Task",
        {
            "owner": SearchParam.token(match=_owner_me),
            "patient": SearchParam.reference(targets=["Patient"], match=applied),
            "status": SearchParam.token(CoordinationTask.status),
            "overdue": SearchParam.token(match=_overdue),
        },
        sorts={
            "due": CoordinationTask.due_at,
            "authored-on": CoordinationTask.created_at,
            "_lastUpdated": CoordinationTask.updated_at,
        },
        default_sort=("due", "authored-on"),
        tiebreaker=CoordinationTask.id,
        default_count=50,
        max_count=200,
    )


@router.get(
    "/fhir/Task",
    summary="Find the tasks of the caller's care circles",
    include_in_schema=False,  # (shared, as the read)
)
def search_tasks(request: Request, session: DbSession, principal: TaskSearch) -> FhirJSONResponse:
    parsed = parsed_search(request, task_spec())
    query = request.query_params
    if "owner" not in query and "patient" not in query:
        raise BadRequest("a search of coordination tasks needs owner=me or patient")
    patient_ids = None
    if "patient" in query:
        patient = patient_from(request, session, query["patient"])
        patient_ids = identity_service.merged_patient_ids(session, patient.id)
    reader = reader_of(session, principal)
    stmt = tasks.visible_tasks(reader, mine="owner" in query, patient_ids=patient_ids)
    now = utcnow()
    return searchset(
        request, session, parsed, stmt, lambda page: _render(request, session, page, now)
    )


def _render(
    request: Request, session: Session, found: Sequence[CoordinationTask], now: datetime
) -> list[dict[str, Any]]:
    """The page's tasks as FHIR; the patients they are of named in the call's audit record."""
    circles: dict[int, tuple[CareTeam, str]] = {}
    rendered: list[dict[str, Any]] = []
    for task in found:
        if task.team_id not in circles:
            team = tasks.team_of(session, task)
            circles[task.team_id] = team, service.patient_of(session, team).rri
        team, rri = circles[task.team_id]
        rendered.append(task_fhir.task(task, team, rri, now))
    patients = {f"Patient/{rri}" for _team, rri in circles.values()}
    entry = request.state.audit[-1]
    if len(patients) == 1 and entry.patient_ref is None:
        entry.patient_ref = next(iter(patients))
    elif len(patients) > 1:
        entry.detail = f"patients: {', '.join(sorted(patients))}"[:1000]
    return rendered
