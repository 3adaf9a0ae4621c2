"""The permissions the coordination service's endpoints declare in their signatures, and who
takes part in a circle's coordination: the rule, in one place.

SMART scopes: ``CareTeam.c`` to make a circle, ``.r`` / ``.s`` to read and find circles,
``.u`` to invite, accept, join and remove; ``Consent.c`` to record the patient's consent that
someone joins. Every call is audited by :func:`enrs.kit.http.require`; which circles a caller
sees and changes is the rule of :mod:`enrs.coordination.service`.

**Who coordinates** (:data:`COORDINATORS`): health professionals (role ``professional``) and
social and medico-social workers (role ``social``: the social worker, the professions
registered regionally, a DAC case manager of that field). A social worker in a patient's care
team may share only the information strictly necessary to the coordination, the patient
informed (Code de la santé publique L1110-4 / L1110-12); they are not health professionals.
So the ``social`` role's scopes (:data:`enrs.kit.security.scopes.ROLES`) give them, in the
circles they are a current member of, the circle, its plan and pathways (read), its tasks, its
chat, its agenda and its evaluation forms (the EPICES grid is theirs to fill), and nothing of
the clinical record: no ``DocumentReference`` / ``Binary`` (the document repository refuses
them with 403 whatever their circles), no ``Patient`` (the identity registry: the INS and the
identities stay with health professionals; the coordination file names the patient by
their names and birth date, needed to care for them, and shows the INS only to whom
:func:`shows_ins`). A chat message's attachment is a document filed in the clinical record
(:mod:`.chat_attachments`): a social worker sees that a file was sent, not the file, and
attaches none (:func:`files_documents`). On top of the scopes, what only health
professionals do in a circle (:func:`manages_circle`): make one, invite, record the patient's
consent, remove someone else, apply a pathway; a social worker changes only the tasks given
to them, their structure or a role they hold (:func:`changes_any_task`), and is notified
only of the coordination's own events (:func:`notification_kinds`).

The pages and endpoints ask these functions; none re-types the role names.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Annotated

from fastapi import Depends

from enrs.kit.http import require
from enrs.kit.security.principal import Principal

PROFESSIONAL = "professional"
SOCIAL = "social"
COORDINATORS = frozenset({PROFESSIONAL, SOCIAL})
MEMBERS = COORDINATORS | {"admin"}
MAKERS = frozenset({PROFESSIONAL, "admin"})


def coordinates(principal: Principal) -> bool:
    """A person who takes part in care circles (a facility's software is not a person: its
    scopes and its structure's membership decide)."""
    return principal.kind == "client" or bool(COORDINATORS & principal.roles)


def manages_circle(principal: Principal) -> bool:
    """Whether the caller makes circles, invites, records consents, removes others and applies
    pathways: a health professional, the regional team, or a facility's software."""
    return principal.kind == "client" or bool(MAKERS & principal.roles)


def changes_any_task(principal: Principal) -> bool:
    """Whether the caller changes any task of their circles (a health professional, a
    facility's software), or only those given to them (a social worker)."""
    return principal.kind == "client" or PROFESSIONAL in principal.roles


def reads_documents(principal: Principal) -> bool:
    """Whether the coordination file lists the patient's documents and links the chat's
    attachments: only for a caller whose scopes read the document repository (the repository
    checks them again at each read)."""
    return principal.can("DocumentReference", "r")


def files_documents(principal: Principal) -> bool:
    """Whether the caller may attach a file to a chat message: it is filed in the patient's
    record as a document (and fed to the DMP), so only with ``DocumentReference.c``. A social
    worker writes in the chat, but neither files nor reads the clinical documents attached
    there (the repository refuses them ``DocumentReference`` and ``Binary``)."""
    return principal.can("DocumentReference", "c")


# The notifications of the coordination itself: a task given to them, a mention in the chat.
# Not an admission, a discharge nor a new document: events of the clinical record.
SOCIAL_NOTIFICATIONS = frozenset({"task-assigned", "mention"})


def notification_kinds(principal: Principal) -> frozenset[str] | None:
    """The kinds of notifications (:data:`enrs.coordination.notify.KINDS`) the portal shows the
    person: :func:`kinds_for_roles` of their roles."""
    return kinds_for_roles(principal.roles)


def kinds_for_roles(roles: Container[str]) -> frozenset[str] | None:
    """The kinds of notifications a person with ``roles`` is shown or mailed: all of them
    (``None``) to a health professional, those of the coordination itself
    (:data:`SOCIAL_NOTIFICATIONS`) to anyone else (a social worker)."""
    return None if PROFESSIONAL in roles else SOCIAL_NOTIFICATIONS


def shows_ins(principal: Principal) -> bool:
    """Whether a page of the coordination shows the patient's INS: only to a caller whose
    scopes read the identity registry (``Patient.r``)."""
    return principal.can("Patient", "r")


CareTeamCreate = Annotated[Principal, Depends(require("CareTeam", "create", roles=MAKERS))]
CareTeamRead = Annotated[Principal, Depends(require("CareTeam", "read", roles=MEMBERS))]
CareTeamSearch = Annotated[Principal, Depends(require("CareTeam", "search-type", roles=MEMBERS))]
CareTeamUpdate = Annotated[Principal, Depends(require("CareTeam", "update", roles=MEMBERS))]
ConsentCreate = Annotated[Principal, Depends(require("Consent", "create", roles=MAKERS))]

# Coordination tasks (:mod:`enrs.coordination.task_endpoints`): ``Task.c`` / ``.r`` / ``.s`` /
# ``.u``; a person needs a coordinating role (the identitovigilance cell's ``Task`` scope
# reaches its own queue only). Which tasks a caller sees and changes: their circles'.
TASKERS = COORDINATORS
TaskCreate = Annotated[Principal, Depends(require("Task", "create", roles=TASKERS))]
TaskRead = Annotated[Principal, Depends(require("Task", "read", roles=TASKERS))]
TaskSearch = Annotated[Principal, Depends(require("Task", "search-type", roles=TASKERS))]
TaskUpdate = Annotated[Principal, Depends(require("Task", "update", roles=TASKERS))]

# Evaluation forms (:mod:`enrs.coordination.form_endpoints`): the grids are read with
# ``Questionnaire.r`` / ``.s`` (no patient data); the responses with ``QuestionnaireResponse.c``
# / ``.r`` / ``.s`` / ``.u``, by a coordinating person (or a facility's software) in a circle
# of the patient (:mod:`enrs.coordination.forms`).
FORMERS = COORDINATORS
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
# ``.s`` / ``.u`` (a person needs a coordinating role; software a ``system/Appointment``
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
# changes: their circles'. A social worker reads them (their scopes have no ``CarePlan.cu``).
PLANNERS = COORDINATORS
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
# The circle's chat (:mod:`enrs.coordination.chat_endpoints`): ``Communication.c`` / ``.s`` /
# ``.u``; a message with an attachment also files a document (``DocumentReference.c``).
CommunicationCreate = Annotated[
    Principal, Depends(require("Communication", "create", roles=COORDINATORS))
]
CommunicationSearch = Annotated[
    Principal, Depends(require("Communication", "search-type", roles=COORDINATORS))
]
CommunicationUpdate = Annotated[
    Principal, Depends(require("Communication", "update", roles=COORDINATORS))
]
