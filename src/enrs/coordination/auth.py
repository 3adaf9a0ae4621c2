"""The permissions the coordination service's endpoints declare in their signatures.

SMART scopes: ``CareTeam.c`` to make a circle, ``.r`` / ``.s`` to read and find circles,
``.u`` to invite, accept, join and remove; ``Consent.c`` to record the patient's consent that
someone joins. A person also needs the ``professional`` role (or ``admin``: the regional
team). Every call is audited by :func:`enrs.kit.http.require`; which circles a caller sees
and changes is the rule of :mod:`enrs.coordination.service`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from enrs.kit.http import require
from enrs.kit.security.principal import Principal

MEMBERS = frozenset({"professional", "admin"})

CareTeamCreate = Annotated[Principal, Depends(require("CareTeam", "create", roles=MEMBERS))]
CareTeamRead = Annotated[Principal, Depends(require("CareTeam", "read", roles=MEMBERS))]
CareTeamSearch = Annotated[Principal, Depends(require("CareTeam", "search-type", roles=MEMBERS))]
CareTeamUpdate = Annotated[Principal, Depends(require("CareTeam", "update", roles=MEMBERS))]
ConsentCreate = Annotated[Principal, Depends(require("Consent", "create", roles=MEMBERS))]

# Coordination tasks (:mod:`enrs.coordination.task_endpoints`): ``Task.c`` / ``.r`` / ``.s`` /
# ``.u``; a person needs the ``professional`` role (the identitovigilance cell's ``Task``
# scope reaches its own queue only). Which tasks a caller sees and changes: their circles'.
TASKERS = frozenset({"professional"})
TaskCreate = Annotated[Principal, Depends(require("Task", "create", roles=TASKERS))]
TaskRead = Annotated[Principal, Depends(require("Task", "read", roles=TASKERS))]
TaskSearch = Annotated[Principal, Depends(require("Task", "search-type", roles=TASKERS))]
TaskUpdate = Annotated[Principal, Depends(require("Task", "update", roles=TASKERS))]

# Evaluation forms (:mod:`enrs.coordination.form_endpoints`): the grids are read with
# ``Questionnaire.r`` / ``.s`` (no patient data); the responses with ``QuestionnaireResponse.c``
# / ``.r`` / ``.s`` / ``.u``, by a ``professional`` (or a facility's software) in a circle of
# the patient (:mod:`enrs.coordination.forms`).
FORMERS = frozenset({"professional"})
QuestionnaireRead = Annotated[Principal, Depends(require("Questionnaire", "read"))]
QuestionnaireSearch = Annotated[Principal, Depends(require("Questionnaire", "search-type"))]
FormCreate = Annotated[
    Principal, Depends(require("QuestionnaireResponse", "create", roles=FORMERS))
]
FormRead = Annotated[Principal, Depends(require("QuestionnaireResponse", "read", roles=FORMERS))]
FormSearch = Annotated[
    Principal, Depends(require("QuestionnaireResponse", "search-type", roles=FORMERS))
]
FormUpdate = Annotated[
    Principal, Depends(require("QuestionnaireResponse", "update", roles=FORMERS))
]
# The shared agenda (:mod:`enrs.coordination.agenda_endpoints`): ``Appointment.c`` / ``.r`` /
# ``.s`` / ``.u`` (a person needs the ``professional`` role; software a ``system/Appointment``
# scope and its facility in the circle); ``Schedule.c`` / ``.r`` / ``.s`` and ``Slot.c`` /
# ``.r`` / ``.s`` / ``.u`` for a professional's own agenda and its free slots.
AppointmentCreate = Annotated[Principal, Depends(require("Appointment", "create", roles=TASKERS))]
AppointmentRead = Annotated[Principal, Depends(require("Appointment", "read", roles=TASKERS))]
AppointmentSearch = Annotated[
    Principal, Depends(require("Appointment", "search-type", roles=TASKERS))
]
AppointmentUpdate = Annotated[Principal, Depends(require("Appointment", "update", roles=TASKERS))]
ScheduleCreate = Annotated[Principal, Depends(require("Schedule", "create", roles=TASKERS))]
ScheduleRead = Annotated[Principal, Depends(require("Schedule", "read", roles=TASKERS))]
ScheduleSearch = Annotated[Principal, Depends(require("Schedule", "search-type", roles=TASKERS))]
SlotCreate = Annotated[Principal, Depends(require("Slot", "create", roles=TASKERS))]
SlotRead = Annotated[Principal, Depends(require("Slot", "read", roles=TASKERS))]
SlotSearch = Annotated[Principal, Depends(require("Slot", "search-type", roles=TASKERS))]
SlotUpdate = Annotated[Principal, Depends(require("Slot", "update", roles=TASKERS))]
# Care plans (:mod:`enrs.coordination.plan_endpoints`): ``CarePlan.c`` / ``.r`` / ``.s`` /
# ``.u``, and ``PlanDefinition.r`` / ``.s`` for the pathways; applying one (``$apply``) is
# ``CarePlan.c`` (and ``Task.c`` when it makes tasks). Which plans a caller sees and
# changes: their circles'.
PLANNERS = frozenset({"professional"})
CarePlanCreate = Annotated[Principal, Depends(require("CarePlan", "create", roles=PLANNERS))]
CarePlanRead = Annotated[Principal, Depends(require("CarePlan", "read", roles=PLANNERS))]
CarePlanSearch = Annotated[Principal, Depends(require("CarePlan", "search-type", roles=PLANNERS))]
CarePlanUpdate = Annotated[Principal, Depends(require("CarePlan", "update", roles=PLANNERS))]
PlanDefinitionRead = Annotated[
    Principal, Depends(require("PlanDefinition", "read", roles=PLANNERS))
]
PlanDefinitionSearch = Annotated[
    Principal, Depends(require("PlanDefinition", "search-type", roles=PLANNERS))
]
