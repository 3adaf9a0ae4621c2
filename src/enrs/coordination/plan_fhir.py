"""Care plans as FHIR R4 ``CarePlan``, and pathways as FHIR R4 ``PlanDefinition`` kept as data.

**CarePlan** (:func:`care_plan`, read back by :func:`fields`):

- ``subject`` the patient (``Patient/{RRI}``), ``careTeam`` the circle (one), ``intent``
  ``plan``, ``status``, ``title``, ``description``, ``period`` (dates), ``author`` (display),
  ``instantiatesCanonical`` the pathway it was applied from (``url|version``).
- Goals are ``Goal`` resources **contained** in the plan (``contained`` + ``goal``
  ``#id``): ``description.text``, ``lifecycleStatus``, ``achievementStatus`` (the
  goal-achievement codes), ``target[0].dueDate``. They live and change with the plan.
- An activity planned in the plan is ``activity.detail``: ``kind`` ``Task`` or
  ``Appointment``, ``code`` (:data:`ACTIVITY_KIND`: ``task``, ``appointment``, ``session`` —
  an education session, an ``Appointment`` kind), ``description``, ``status``,
  ``scheduledPeriod`` (dates), ``goal`` (``#id``), and the role of the circle that performs
  it in the extension :data:`PERFORMER_ROLE` (R4's ``performer`` names a resource, not a
  role). An activity that is a coordination task is ``activity.reference`` ``Task/{id}``
  only (R4's cpl-3: a reference or a detail, not both): the task holds its state. An
  appointment or session an applied pathway proposed is the activity's ``outcomeReference``
  ``Appointment/{id}`` (the appointment's ``supportingInformation`` names the plan); it is
  kept through an update that keeps the activity's ``id``, and not read from a client.

**PlanDefinition**: the region's pathways are JSON files in ``coordination/pathways/``,
checked by :func:`load_pathways` when the application starts (a malformed one stops it): goals
(``target[0].due``, a Duration after the start), actions with ``code`` (:data:`ACTIVITY_KIND`),
``participant`` (the first practitioner's ``role.text``: the role of the circle that does it),
``goalId`` and their timing after the pathway's start: ``timingDuration`` (one day) or
``timingRange`` (a window, ``low``–``high``), in UCUM ``d``, ``wk`` or ``mo`` (calendar
months). They are served as they are written.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

from enrs.coordination import plans
from enrs.coordination.agenda_models import CoordinationAppointment
from enrs.coordination.models import CareTeam
from enrs.coordination.plan_models import CarePlan, PlanActivity, PlanGoal
from enrs.coordination.task_models import CoordinationTask
from enrs.kit.errors import Unprocessable

ACTIVITY_KIND = "https://enrs.fr/fhir/CodeSystem/care-plan-activity-kind"
PERFORMER_ROLE = "https://enrs.fr/fhir/StructureDefinition/care-plan-activity-performer-role"
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
UCUM = "http://unitsofmeasure.org"
KIND_DISPLAY = {"task": "Tâche", "appointment": "Rendez-vous", "session": "Séance d'éducation"}
FHIR_KIND = {"task": "Task", "appointment": "Appointment", "session": "Appointment"}
PATHWAYS = Path(__file__).parent / "pathways"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def _instant(moment: datetime) -> str:
    return moment.isoformat()


# --- CarePlan out ---------------------------------------------------------------------------


def _goal(goal: PlanGoal, rri: str) -> dict[str, Any]:
    found: dict[str, Any] = {
        "resourceType": "Goal",
        "id": goal.resource_id,
        "lifecycleStatus": goal.lifecycle_status,
        "description": {"text": goal.description},
        "subject": {"reference": f"Patient/{rri}"},
    }
    if goal.achievement_status:
        found["achievementStatus"] = {
            "coding": [{"system": GOAL_ACHIEVEMENT, "code": goal.achievement_status}]
        }
    if goal.due_date:
        found["target"] = [{"dueDate": goal.due_date.isoformat()}]
    return found


def _activity(
    activity: PlanActivity,
    task: CoordinationTask | None,
    appointment: CoordinationAppointment | None = None,
) -> dict[str, Any]:
    if task is not None:
        reference = {"reference": f"Task/{task.resource_id}", "display": task.title}
        return {"id": activity.resource_id, "reference": reference}
    detail: dict[str, Any] = {
        "kind": FHIR_KIND[activity.kind],
        "code": {
            "coding": [
                {
                    "system": ACTIVITY_KIND,
                    "code": activity.kind,
                    "display": KIND_DISPLAY[activity.kind],
                }
            ]
        },
        "status": activity.status,
        "description": activity.description,
    }
    if activity.performer_role:
        role = {"url": PERFORMER_ROLE, "valueCodeableConcept": {"text": activity.performer_role}}
        detail["extension"] = [role]
    if activity.goal_ids:
        detail["goal"] = [{"reference": f"#{g}"} for g in activity.goal_ids.split()]
    period = {}
    if activity.scheduled_start:
        period["start"] = activity.scheduled_start.isoformat()
    if activity.scheduled_end:
        period["end"] = activity.scheduled_end.isoformat()
    if period:
        detail["scheduledPeriod"] = period
    found: dict[str, Any] = {"id": activity.resource_id, "detail": detail}
    if appointment is not None:
        found["outcomeReference"] = [
            {"reference": f"Appointment/{appointment.resource_id}", "display": appointment.title}
        ]
    return found


def care_plan(
    plan: CarePlan,
    team: CareTeam,
    rri: str,
    goals: list[PlanGoal],
    activities: list[PlanActivity],
    tasks_by_id: dict[int, CoordinationTask],
    appointments_by_id: dict[int, CoordinationAppointment] | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": plan.resource_id,
        "meta": {"versionId": str(plan.version), "lastUpdated": _instant(plan.updated_at)},
    }
    if goals:
        resource["contained"] = [_goal(g, rri) for g in goals]
    if plan.template:
        resource["instantiatesCanonical"] = [plan.template]
    resource.update(
        {
            "status": plan.status,
            "intent": "plan",
            "title": plan.title,
            "subject": {"reference": f"Patient/{rri}"},
            "created": _instant(plan.created_at),
            "author": {"display": plan.author_display},
            "careTeam": [{"reference": f"CareTeam/{team.resource_id}"}],
        }
    )
    if plan.description:
        resource["description"] = plan.description
    period = {}
    if plan.period_start:
        period["start"] = plan.period_start.isoformat()
    if plan.period_end:
        period["end"] = plan.period_end.isoformat()
    if period:
        resource["period"] = period
    if goals:
        resource["goal"] = [{"reference": f"#{g.resource_id}"} for g in goals]
    if activities:
        made = appointments_by_id or {}
        resource["activity"] = [
            _activity(
                a,
                tasks_by_id.get(a.task_id) if a.task_id else None,
                made.get(a.appointment_id) if a.appointment_id else None,
            )
            for a in activities
        ]
    return resource


# --- CarePlan in ----------------------------------------------------------------------------


def _day(value: Any, what: str) -> date | None:
    """A FHIR date (``YYYY-MM-DD``); a dateTime's date is taken."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 10:
        raise Unprocessable(f"{what}: a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value[:10])
    except ValueError as exc:
        raise Unprocessable(f"{what}: not a date: {value}") from exc


def _period(value: Any, what: str) -> tuple[date | None, date | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise Unprocessable(f"{what}: a Period")
    return _day(value.get("start"), f"{what}.start"), _day(value.get("end"), f"{what}.end")


def _string(value: Any, what: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise Unprocessable(f"{what}: a string is required")
    return value


def _local_ref(value: Any, what: str) -> str:
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise Unprocessable(f"{what}: a reference to a contained Goal (#id)")
    return ref[1:]


def _goal_fields(found: Any) -> plans.GoalFields:
    if not isinstance(found, dict) or found.get("resourceType") != "Goal":
        raise Unprocessable("CarePlan.contained: Goal resources only")
    goal_id = found.get("id")
    if not isinstance(goal_id, str) or not _FHIR_ID.match(goal_id):
        raise Unprocessable("a contained Goal has an id (letters, digits, - and .)")
    description = (found.get("description") or {}).get("text")
    lifecycle = found.get("lifecycleStatus")
    achievement = None
    codings = (found.get("achievementStatus") or {}).get("coding") or []
    if codings:
        achievement = codings[0].get("code") if isinstance(codings[0], dict) else None
        if not isinstance(achievement, str):
            raise Unprocessable("Goal.achievementStatus.coding[0].code: a code")
    targets = found.get("target") or []
    due = targets[0].get("dueDate") if targets and isinstance(targets[0], dict) else None
    return plans.GoalFields(
        id=goal_id,
        description=_string(description, "Goal.description.text") or "",
        lifecycle=_string(lifecycle, "Goal.lifecycleStatus") or "",
        achievement=achievement,
        due=_day(due, "Goal.target.dueDate"),
    )


def _kind(detail: dict[str, Any]) -> str:
    for coding in (detail.get("code") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == ACTIVITY_KIND:
            return str(coding.get("code"))
    by_fhir = {"Task": "task", "Appointment": "appointment"}
    kind = detail.get("kind")
    if kind not in by_fhir:
        raise Unprocessable("CarePlan.activity.detail.kind: Task or Appointment")
    return by_fhir[kind]


def _role(detail: dict[str, Any]) -> str | None:
    for ext in detail.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == PERFORMER_ROLE:
            text = (ext.get("valueCodeableConcept") or {}).get("text")
            return _string(text, "the activity's performer role (valueCodeableConcept.text)")
    return None


def _activity_fields(found: Any) -> plans.ActivityFields:
    if not isinstance(found, dict):
        raise Unprocessable("CarePlan.activity: an object")
    activity_id = found.get("id")
    if activity_id is not None and (
        not isinstance(activity_id, str) or not _FHIR_ID.match(activity_id)
    ):
        raise Unprocessable("CarePlan.activity.id: letters, digits, - and .")
    reference, detail = found.get("reference"), found.get("detail")
    if (reference is None) == (detail is None):
        raise Unprocessable("CarePlan.activity: a reference (Task/{id}) or a detail (cpl-3)")
    if reference is not None:
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(ref, str) or not ref.startswith("Task/") or len(ref) < 6:
            raise Unprocessable("CarePlan.activity.reference: a coordination Task/{id}")
        return plans.ActivityFields(kind="task", description="", id=activity_id, task=ref[5:])
    if not isinstance(detail, dict):
        raise Unprocessable("CarePlan.activity.detail: an object")
    start, end = _period(detail.get("scheduledPeriod"), "CarePlan.activity.detail.scheduledPeriod")
    goals = tuple(_local_ref(g, "CarePlan.activity.detail.goal") for g in detail.get("goal") or [])
    return plans.ActivityFields(
        kind=_kind(detail),
        description=_string(detail.get("description"), "CarePlan.activity.detail.description")
        or "",
        status=_string(detail.get("status"), "CarePlan.activity.detail.status") or "",
        role=_role(detail),
        start=start,
        end=end,
        goals=goals,
        id=activity_id,
    )


def care_team_id(body: dict[str, Any]) -> str:
    """The circle's id ``CarePlan.careTeam`` names (one ``CareTeam/{id}``; 422 otherwise)."""
    teams = body.get("careTeam")
    ref = teams[0].get("reference") if isinstance(teams, list) and len(teams) == 1 else None
    if not isinstance(ref, str) or not ref.startswith("CareTeam/") or len(ref) <= 9:
        raise Unprocessable("CarePlan.careTeam: the one care circle (CareTeam/{id})")
    return ref[9:]


def fields(body: dict[str, Any]) -> plans.PlanFields:
    """What a ``CarePlan`` body asks for (422 on a missing or malformed element)."""
    if body.get("intent", "plan") != "plan":
        raise Unprocessable("CarePlan.intent: plan")
    contained = body.get("contained") or []
    if not isinstance(contained, list):
        raise Unprocessable("CarePlan.contained: a list")
    goals = tuple(_goal_fields(g) for g in contained)
    listed = [_local_ref(g, "CarePlan.goal") for g in body.get("goal") or []]
    if sorted(listed) != sorted(g.id for g in goals):
        raise Unprocessable("CarePlan.goal: a reference to each contained Goal, and only those")
    by_id = {g.id: g for g in goals}
    activities = body.get("activity") or []
    if not isinstance(activities, list):
        raise Unprocessable("CarePlan.activity: a list")
    start, end = _period(body.get("period"), "CarePlan.period")
    return plans.PlanFields(
        title=_string(body.get("title"), "CarePlan.title") or "",
        status=_string(body.get("status"), "CarePlan.status") or "",
        description=_string(body.get("description"), "CarePlan.description", required=False),
        start=start,
        end=end,
        goals=tuple(by_id[i] for i in listed),
        activities=tuple(_activity_fields(a) for a in activities),
    )


# --- PlanDefinition -------------------------------------------------------------------------


class PathwayError(ValueError):
    """A pathway file that is not a pathway this module can apply."""


def _offset(value: Any, where: str) -> plans.Offset:
    if not isinstance(value, dict):
        raise PathwayError(f"{where}: a Duration")
    amount, code = value.get("value"), value.get("code")
    if value.get("system") != UCUM or code not in plans.OFFSET_UNITS:
        raise PathwayError(f"{where}: a UCUM Duration in {', '.join(plans.OFFSET_UNITS)}")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= 3660:
        raise PathwayError(f"{where}.value: a whole number of {code}")
    return plans.Offset(amount, code)


def _text_of(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PathwayError(f"{where}: a text is required")
    return value.strip()


def _pathway_goal(found: Any, where: str) -> plans.PathwayGoal:
    if not isinstance(found, dict):
        raise PathwayError(f"{where}: an object")
    goal_id = found.get("id")
    if not isinstance(goal_id, str) or not _FHIR_ID.match(goal_id):
        raise PathwayError(f"{where}.id: a FHIR id")
    targets = found.get("target") or []
    due = None
    if targets:
        due = _offset(targets[0].get("due"), f"{where}.target[0].due")
    text = _text_of((found.get("description") or {}).get("text"), f"{where}.description.text")
    return plans.PathwayGoal(goal_id, text, due)


def _action_kind(found: dict[str, Any], where: str) -> str:
    for code in found.get("code") or []:
        for coding in code.get("coding") or []:
            if coding.get("system") == ACTIVITY_KIND and coding.get("code") in plans.KINDS:
                return str(coding["code"])
    raise PathwayError(f"{where}.code: one of {', '.join(plans.KINDS)} ({ACTIVITY_KIND})")


def _action_role(found: dict[str, Any], where: str) -> str:
    for participant in found.get("participant") or []:
        if participant.get("type") == "practitioner":
            return _text_of((participant.get("role") or {}).get("text"), f"{where}.role.text")
    raise PathwayError(f"{where}.participant: a practitioner with a role")


def _pathway_action(found: Any, where: str, goal_ids: set[str]) -> plans.PathwayAction:
    if not isinstance(found, dict):
        raise PathwayError(f"{where}: an object")
    action_id = found.get("id")
    if not isinstance(action_id, str) or not _FHIR_ID.match(action_id):
        raise PathwayError(f"{where}.id: a FHIR id")
    if "timingDuration" in found:
        start = end = _offset(found["timingDuration"], f"{where}.timingDuration")
    elif "timingRange" in found:
        window = found["timingRange"]
        start = _offset(window.get("low"), f"{where}.timingRange.low")
        end = _offset(window.get("high"), f"{where}.timingRange.high")
        if end.after(date(2000, 1, 1)) < start.after(date(2000, 1, 1)):
            raise PathwayError(f"{where}.timingRange: high before low")
    else:
        raise PathwayError(f"{where}: timingDuration or timingRange (after the start)")
    goals = tuple(found.get("goalId") or [])
    if not set(goals) <= goal_ids:
        raise PathwayError(f"{where}.goalId: not a goal of the pathway")
    description = found.get("description")
    return plans.PathwayAction(
        id=action_id,
        title=_text_of(found.get("title"), f"{where}.title")[:256],
        kind=_action_kind(found, where),
        role=_action_role(found, where)[:128],
        start=start,
        end=end,
        goals=goals,
        description=_text_of(description, f"{where}.description") if description else None,
    )


def pathway(resource: Any, name: str) -> plans.Pathway:
    """A pathway from its PlanDefinition (:class:`PathwayError` naming what is wrong)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "PlanDefinition":
        raise PathwayError(f"{name}: not a PlanDefinition")
    pathway_id = resource.get("id")
    if not isinstance(pathway_id, str) or not _FHIR_ID.match(pathway_id):
        raise PathwayError(f"{name}: its id is a FHIR id")
    if resource.get("status") not in ("draft", "active", "retired"):
        raise PathwayError(f"{name}.status: draft, active or retired")
    goals = tuple(
        _pathway_goal(g, f"{name}.goal[{i}]") for i, g in enumerate(resource.get("goal") or [])
    )
    goal_ids = {g.id for g in goals}
    if len(goal_ids) != len(goals):
        raise PathwayError(f"{name}.goal: each goal has its own id")
    actions = tuple(
        _pathway_action(a, f"{name}.action[{i}]", goal_ids)
        for i, a in enumerate(resource.get("action") or [])
    )
    if not actions or len({a.id for a in actions}) != len(actions):
        raise PathwayError(f"{name}.action: one or more, each with its own id")
    return plans.Pathway(
        id=pathway_id,
        url=_text_of(resource.get("url"), f"{name}.url"),
        version=_text_of(resource.get("version"), f"{name}.version"),
        title=_text_of(resource.get("title"), f"{name}.title")[:256],
        status=str(resource["status"]),
        goals=goals,
        actions=actions,
        resource=resource,
    )


def load_pathways(directory: Path = PATHWAYS) -> dict[str, plans.Pathway]:
    """The pathways of the directory's ``*.json`` files, by id (each file named after its
    PlanDefinition's id); :class:`PathwayError` on the first one that does not hold."""
    found: dict[str, plans.Pathway] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PathwayError(f"{path.name}: not JSON ({exc})") from exc
        loaded = pathway(resource, path.name)
        if loaded.id != path.stem:
            raise PathwayError(f"{path.name}: its PlanDefinition.id is {loaded.id}")
        found[loaded.id] = loaded
    return found
