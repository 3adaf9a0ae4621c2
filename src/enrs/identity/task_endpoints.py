"""FHIR ``Task`` endpoints of the identitovigilance cell's queue (:mod:`.tasks`): search, read,
``$decide`` and ``$undo``. People need the ``identitovigilance`` role (``user/Task.rus``);
software needs ``system/Task.rs`` to read and ``system/Task.u`` to decide. Every call is
audited with the patients concerned, decisions with their reason.

The care circles' coordination tasks share the ``/fhir/Task`` URLs
(:mod:`enrs.coordination.task_endpoints`, mounted before these routes): an id of digits only
is the cell's, any other id a coordination task's; a search with ``owner``, ``patient`` or
``overdue`` goes to the coordination tasks, any other search comes here. The ``Task`` entry of
the CapabilityStatement is registered here first, the coordination tasks extend it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.identity import tasks, workbench
from enrs.identity.models import IdentityTask
from enrs.kit.errors import BadRequest, Forbidden, NotFound
from enrs.kit.fhir.bundle import searchset_bundle
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import prefers_strict, read_resource
from enrs.kit.fhir.search import apply_search, parse_search, search_total, split_page
from enrs.kit.http import DbSession, TransactionalRoute, require
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["identity"])
CELL = frozenset({"identitovigilance"})
DECIDE_DEFINITION = "Decide a task of the identitovigilance cell: decision (code), reason"
UNDO_DEFINITION = "Undo the decision of a task of the identitovigilance cell: reason"


def _cell(interaction: str) -> Callable[..., Principal]:
    """``require`` for the cell's queue, and no facility's software: the ``Task`` scope a
    facility's client holds is for its care circles' tasks (:mod:`enrs.coordination.tasks`),
    the cell's queue is the regional team's (its people, and the software not bound to a
    facility)."""
    checked = require("Task", interaction, roles=CELL)

    def dependency(session: DbSession, principal: Principal = Depends(checked)) -> Principal:
        if principal.kind == "client":
            grant = accounts_service.client_grant(session, principal.client_id or principal.subject)
            if grant is not None and grant.finess:
                raise Forbidden("the identitovigilance cell's tasks are not open to a facility")
        return principal

    return dependency


TaskReader = Annotated[Principal, Depends(_cell("read"))]
TaskSearcher = Annotated[Principal, Depends(_cell("search-type"))]
TaskDecider = Annotated[Principal, Depends(_cell("update"))]


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "Task",
        interactions=["read", "search-type"],
        search_params=tasks.task_search(),
        operations=[("decide", DECIDE_DEFINITION), ("undo", UNDO_DEFINITION)],
    )


def _actor(principal: Principal) -> str:
    return f"{principal.kind}:{principal.subject}"


def _render(request: Request, session: Session, view: workbench.TaskView) -> dict[str, Any]:
    model = request.app.state.matcher.model
    base = request.app.state.settings.fhir_base
    return tasks.to_fhir(view, model, base, workbench.decider_name(session, view.task.decided_by))


def _audit(request: Request, view: workbench.TaskView) -> None:
    entry = request.state.audit[-1]
    entry.patient_ref = f"Patient/{view.source_rri}"
    entry.entity_ref = f"Task/{view.task.id}"


def _task_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"Task/{raw} not found")
    return int(raw)


@router.get(
    "/fhir/Task",
    summary="Search the identitovigilance cell's tasks, or the care circles'",
    description=(
        "Shared by the identitovigilance cell's queue and the care circles' tasks: a search "
        "with `owner=me`, `patient` or `overdue` is one of the caller's care circles' tasks "
        "(`status`, `overdue`; `_sort` on `due`, `authored-on`, `_lastUpdated`); any other, "
        "one of the cell's queue (`focus`, `code`, `facility`…)."
    ),
)
def search_tasks(
    request: Request, session: DbSession, _principal: TaskSearcher
) -> FhirJSONResponse:
    base = request.app.state.settings.fhir_base
    parsed = parse_search(
        tasks.task_search(),
        list(request.query_params.multi_items()),
        strict=prefers_strict(request),
        base_url=base,
    )
    stmt = select(IdentityTask)
    rows = list(session.scalars(apply_search(stmt, parsed)))
    page, has_next = split_page(rows, parsed)
    total = search_total(session, stmt, parsed, page, has_next)
    views = [workbench.view(session, t.id) for t in page]
    bundle = searchset_bundle(
        base_url=base,
        resource_type="Task",
        resources=[_render(request, session, v) for v in views],
        parsed=parsed,
        total=total,
        has_next=has_next,
    )
    return FhirJSONResponse(bundle)


@router.get(
    "/fhir/Task/{task_id}",
    summary="Read one of the identitovigilance cell's tasks, or of a care circle",
    description=(
        "Shared by the identitovigilance cell's queue and the care circles' tasks: an id of "
        "digits only is one of the cell's tasks; any other id a task of a care circle, with "
        'its version as `ETag` (`W/"3"`).'
    ),
)
def read_task(
    request: Request, task_id: str, session: DbSession, _principal: TaskReader
) -> FhirJSONResponse:
    view = workbench.view(session, _task_id(task_id))
    _audit(request, view)
    return FhirJSONResponse(_render(request, session, view))


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("resourceType") != "Parameters":
        raise BadRequest("a Parameters resource is expected")
    values: dict[str, Any] = {}
    for p in body.get("parameter") or []:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise BadRequest("each parameter needs a name")
        value = next((v for k, v in p.items() if k.startswith("value")), None)
        values[p["name"]] = value
    return values


async def _operation_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Parameters")


OperationBody = Annotated[dict[str, Any], Depends(_operation_body)]


@router.post("/fhir/Task/{task_id}/$decide", summary="Decide a task of the identitovigilance cell")
def decide_task(
    request: Request,
    task_id: str,
    session: DbSession,
    principal: TaskDecider,
    body: OperationBody,
) -> FhirJSONResponse:
    """``decision``: LINK, MERGE, KEEP_APART (a duplicate), UNLINK, CONFIRM (a collision);
    ``reason`` required. 409 when already decided; 400 a decision of another kind."""
    request.state.audit[-1].entity_ref = f"Task/{task_id}"[:256]  # refusals are audited too
    params = _parameters(body)
    decision, reason = params.get("decision"), params.get("reason")
    if not isinstance(decision, str) or not decision:
        raise BadRequest("the decision parameter (valueCode) is required")
    view = workbench.decide(
        session,
        _task_id(task_id),
        decision.upper(),
        reason=reason if isinstance(reason, str) else "",
        actor=_actor(principal),
    )
    _audit(request, view)
    request.state.audit[-1].query = f"decision={decision}; reason={reason}"
    return FhirJSONResponse(_render(request, session, view))


@router.post("/fhir/Task/{task_id}/$undo", summary="Undo a decision of the identitovigilance cell")
def undo_task(
    request: Request,
    task_id: str,
    session: DbSession,
    principal: TaskDecider,
    body: OperationBody,
) -> FhirJSONResponse:
    request.state.audit[-1].entity_ref = f"Task/{task_id}"[:256]
    reason = _parameters(body).get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("the reason parameter (valueString) is required")
    view = workbench.undo(session, _task_id(task_id), reason=reason, actor=_actor(principal))
    _audit(request, view)
    request.state.audit[-1].query = f"undo; reason={reason}"
    return FhirJSONResponse(_render(request, session, view))
