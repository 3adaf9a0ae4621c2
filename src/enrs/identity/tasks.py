"""The identitovigilance cell's queue as FHIR ``Task`` resources, and its decisions as
operations, for the cell's own tools and for software given the scope (``system/Task.rus``).

Each potential duplicate or collision (:mod:`.workbench`) is a Task:

- ``status``: ``requested`` while open; ``completed`` once decided with a change (LINK, MERGE,
  UNLINK), ``rejected`` once the hypothesis is dismissed (KEEP_APART, CONFIRM); an undone
  decision makes it ``requested`` again;
- ``code``: ``potential-duplicate`` or ``potential-collision`` (:data:`TASK_SYSTEM`);
- ``focus``: the received identity (``Patient/{id}``), ``for``: its regional patient
  (``Patient/{RRI}``); an ``input`` names the other regional patient (``other-patient``), the
  calibrated ``probability`` and each trait's agreement level (``level-<comparison>``);
- ``authoredOn`` the task's creation, ``lastModified`` its decision; ``output`` the decision
  and ``statusReason`` its reason, ``owner`` who decided.

Search (``GET /fhir/Task``): ``status``, ``code``, ``authored-on``, ``facility`` (the received
identity's assigning authority, ``urn:oid:`` or bare), ``focus``. Decisions: ``POST
/fhir/Task/{id}/$decide`` (``decision`` code, ``reason``) and ``POST /fhir/Task/{id}/$undo``
(``reason``), the workbench's rules, audit and undo.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from enrs.identity import workbench
from enrs.identity.matching.model import MatchModel
from enrs.identity.models import IdentityTask
from enrs.kit.fhir.search import SearchParam, SearchSpec
from enrs.kit.fhir.search_values import ReferenceValue, TokenValue

# The kinds of task are codes this server defines: their system is its own CodeSystem URL.
TASK_CODE_SYSTEM = "/CodeSystem/identity-task"
KIND_CODES = {"DUPLICATE": "potential-duplicate", "COLLISION": "potential-collision"}
KINDS_BY_CODE = {v: k for k, v in KIND_CODES.items()}
DONE = frozenset({"LINK", "MERGE", "UNLINK"})
DISMISSED = frozenset({"KEEP_APART", "CONFIRM"})
T = IdentityTask


def status_of(task: IdentityTask) -> str:
    if task.status == "OPEN" or task.decision is None:
        return "requested"
    return "rejected" if task.decision in DISMISSED else "completed"


def _status(value: TokenValue) -> ColumnElement[bool]:
    code = value.code or ""
    if code == "requested":
        return T.status == "OPEN"
    if code == "completed":
        return sa.and_(T.status != "OPEN", T.decision.in_(sorted(DONE)))
    if code == "rejected":
        return sa.and_(T.status != "OPEN", T.decision.in_(sorted(DISMISSED)))
    return sa.false()


def _code(value: TokenValue) -> ColumnElement[bool]:
    system_ok = value.system is None or value.system.endswith(TASK_CODE_SYSTEM)
    if not system_ok or value.code not in KINDS_BY_CODE:
        return sa.false()
    return T.kind == KINDS_BY_CODE[value.code]


def _facility(value: TokenValue) -> ColumnElement[bool]:
    return workbench.of_facility((value.code or "").removeprefix("urn:oid:"))


def _focus(value: ReferenceValue) -> ColumnElement[bool]:
    if value.type not in (None, "Patient") or not value.id.isdigit() or len(value.id) > 18:
        return sa.false()
    return T.source_id == int(value.id)


@cache
def task_search() -> SearchSpec:
    return SearchSpec(
        resource_type="Task",
        params={
            "status": SearchParam.token(
                match=_status, doc="requested | completed | rejected", definition=None
            ),
            "code": SearchParam.token(
                match=_code, doc="potential-duplicate | potential-collision", definition=None
            ),
            "authored-on": SearchParam.date(T.created_at, doc="When the task was created"),
            "facility": SearchParam.token(
                match=_facility,
                doc="Assigning authority (OID, or urn:oid:OID) of the received identity",
            ),
            "focus": SearchParam.reference(
                targets=("Patient",), match=_focus, doc="The received identity (Patient/{id})"
            ),
        },
        sorts={"authored-on": T.created_at, "_id": T.id},
        default_sort="-authored-on",
        tiebreaker=T.id,
        default_count=50,
        max_count=200,
    )


def to_fhir(
    view: workbench.TaskView, model: MatchModel, fhir_base: str, decided_by: str | None = None
) -> dict[str, Any]:
    """The Task of one of the cell's tasks."""
    task = view.task
    inputs: list[dict[str, Any]] = [
        {"type": {"text": "other-patient"},
         "valueReference": {"reference": f"Patient/{view.other_rri}"}},
    ]  # fmt: skip
    if task.score is not None:
        inputs.append(
            {
                "type": {"text": "probability"},
                "valueDecimal": round(model.probability(task.score), 4),
            }
        )
    levels: dict[str, str] = json.loads(task.levels) if task.levels else {}
    inputs += [{"type": {"text": f"level-{k}"}, "valueString": v} for k, v in levels.items()]
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": str(task.id),
        "status": status_of(task),
        "intent": "proposal",
        "code": {
            "coding": [{"system": fhir_base + TASK_CODE_SYSTEM, "code": KIND_CODES[task.kind]}]
        },
        "focus": {"reference": f"Patient/{view.source.id}"},
        "for": {"reference": f"Patient/{view.source_rri}"},
        "authoredOn": task.created_at.isoformat(),
        "lastModified": (task.decided_at or task.created_at).isoformat(),
        "input": inputs,
    }
    if view.same_facility:
        resource["note"] = [{"text": "two IPPs of one facility: the facility merges them (A40)"}]
    if task.decision is not None:
        resource["output"] = [{"type": {"text": "decision"}, "valueCode": task.decision}]
        resource["statusReason"] = {"text": task.reason or ""}
        if decided_by:
            resource["owner"] = {"display": decided_by}
    return resource
