"""A coordination task as a FHIR R4 ``Task``, read and rendered.

- ``for``: the patient, ``Patient/{RRI}``.
- The care circle the task belongs to: the extension :data:`TASK_CARE_TEAM`
  (``valueReference`` ``CareTeam/{id}``). R4 has no element for it: ``basedOn`` names the
  request the task fulfils, ``focus`` what it acts on (and, on the same ``/fhir/Task`` URLs,
  the cell's queue uses ``focus`` for the patient), ``owner`` whom it is assigned to.
- ``owner``: a professional (``Practitioner`` by idNatPs, ``8`` + RPPS) or a structure
  (``Organization`` by FINESS), a logical reference by identifier as in ``CareTeam``; or, for
  a task assigned to a role of the circle, no ``owner`` but ``performerType`` ``[{text:
  "IDE"}]`` — "the kind of participant that should perform the task".
- ``code.text`` its title, ``description``, ``status``, ``priority``, ``intent`` ``order``;
  ``requester`` who asked (``display``); ``restriction.period.end`` the due date (a date
  alone: the end of that day, UTC); ``authoredOn``, ``lastModified``, ``meta.versionId``.
- An overdue task (:func:`enrs.coordination.tasks.is_overdue`) says so in ``businessStatus``
  (code ``overdue`` of :data:`BUSINESS_STATUS`, text "en retard").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from enrs.coordination import fhir, tasks
from enrs.coordination.models import CareTeam
from enrs.coordination.task_models import CoordinationTask
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.kit.errors import Unprocessable

TASK_CARE_TEAM = "https://enrs.fr/fhir/StructureDefinition/task-care-team"
BUSINESS_STATUS = "https://enrs.fr/fhir/CodeSystem/coordination-task-business-status"
OVERDUE = {
    "coding": [{"system": BUSINESS_STATUS, "code": "overdue", "display": "en retard"}],
    "text": "en retard",
}


def _instant(moment: datetime) -> str:
    return moment.isoformat()


def _owner(task: CoordinationTask) -> dict[str, Any] | None:
    if task.owner_kind == "practitioner":
        ident = {"system": RPPS_SYSTEM, "value": f"8{task.owner_rpps}"}
        return {"type": "Practitioner", "identifier": ident, "display": task.owner_display}
    if task.owner_kind == "organization":
        ident = {"system": FINESS_SYSTEM, "value": task.owner_finess or ""}
        return {"type": "Organization", "identifier": ident, "display": task.owner_display}
    return None


def task(found: CoordinationTask, team: CareTeam, rri: str, now: datetime) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": found.resource_id,
        "meta": {"versionId": str(found.version), "lastUpdated": _instant(found.updated_at)},
        "extension": [
            {"url": TASK_CARE_TEAM, "valueReference": {"reference": f"CareTeam/{team.resource_id}"}}
        ],
        "status": found.status,
        "intent": "order",
        "priority": found.priority,
        "code": {"text": found.title},
        "for": {"reference": f"Patient/{rri}"},
        "authoredOn": _instant(found.created_at),
        "lastModified": _instant(found.updated_at),
        "requester": {"display": found.requester_display},
    }
    if found.description:
        resource["description"] = found.description
    if tasks.is_overdue(found, now):
        resource["businessStatus"] = OVERDUE
    owner = _owner(found)
    if owner is not None:
        resource["owner"] = owner
    else:
        resource["performerType"] = [{"text": found.owner_role}]
    if found.due_at is not None:
        resource["restriction"] = {"period": {"end": _instant(found.due_at)}}
    return resource


def care_team_id(body: dict[str, Any]) -> str:
    """The circle's id the task's :data:`TASK_CARE_TEAM` extension names (422 without)."""
    for ext in body.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == TASK_CARE_TEAM:
            ref = (ext.get("valueReference") or {}).get("reference")
            if isinstance(ref, str) and ref.startswith("CareTeam/") and len(ref) > 9:
                return ref[9:]
    raise Unprocessable(f"the care circle: an extension {TASK_CARE_TEAM} (CareTeam/{{id}})")


def _due(body: dict[str, Any]) -> datetime | None:
    restriction = body.get("restriction")
    end = restriction.get("period", {}).get("end") if isinstance(restriction, dict) else None
    if end is None:
        return None
    if not isinstance(end, str):
        raise Unprocessable("Task.restriction.period.end: a FHIR dateTime")
    try:
        if len(end) == 10:  # a date alone: due by the end of that day
            return tasks.end_of_day(datetime.fromisoformat(end).date())
        moment = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Unprocessable(f"Task.restriction.period.end: not a FHIR dateTime: {end}") from exc
    if moment.tzinfo is None:
        raise Unprocessable("Task.restriction.period.end: a dateTime with a time zone")
    return moment.astimezone(UTC)


def _owner_of(body: dict[str, Any]) -> tasks.Owner:
    owner, performer = body.get("owner"), body.get("performerType")
    if owner is not None and performer:
        raise Unprocessable("Task.owner or Task.performerType (a role of the circle), not both")
    if owner is not None:
        kind, rpps, finess = fhir.identified(owner, "Task.owner")
        return tasks.Owner(kind, rpps=rpps, finess=finess)
    first = performer[0] if isinstance(performer, list) and performer else None
    role = first.get("text") if isinstance(first, dict) else None
    if not isinstance(role, str) or not role.strip():
        raise Unprocessable("Task.owner (by identifier) or Task.performerType[0].text (a role)")
    return tasks.Owner("role", role=role.strip())


def fields(body: dict[str, Any]) -> tasks.TaskFields:
    """What a ``Task`` body asks for (422 on a missing or malformed element)."""
    if body.get("intent", "order") != "order":
        raise Unprocessable("Task.intent: order")
    code = body.get("code")
    title = code.get("text") if isinstance(code, dict) else None
    if not isinstance(title, str):
        raise Unprocessable("Task.code.text (the task's title) is required")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise Unprocessable("Task.description: a string")
    status, priority = body.get("status", tasks.REQUESTED), body.get("priority", "routine")
    if not isinstance(status, str) or not isinstance(priority, str):
        raise Unprocessable("Task.status and Task.priority: codes")
    return tasks.TaskFields(
        title=title,
        owner=_owner_of(body),
        description=description,
        status=status,
        priority=priority,
        due=_due(body),
    )
