"""Evaluation forms (issue 15, FHIR ``Questionnaire`` / ``QuestionnaireResponse``): the grids
a care circle fills in for its patient — the EPICES precarity score, the Katz ADL scale — and
the rule that validates and scores an answered grid, written once for the API and the portal.

- **The grids are data**: one FHIR R4 ``Questionnaire`` per JSON file under
  ``questionnaires/`` (:func:`definitions`), checked when loaded (:func:`definition_from`).
  An item is ``choice`` (its ``answerOption`` codings), ``boolean``, ``integer``,
  ``decimal``, ``string`` or ``text``; items do not repeat and are not nested. A ``choice``
  option's weight is the R4 extension :data:`ORDINAL` (``ordinalValue``).
- **The score** (:data:`SCORE`, an extension of the ``Questionnaire``): its ``constant`` plus
  the weights of the options chosen, to the hundredth, answered in the read-only ``decimal``
  item it names (``item``). It is always computed here: a score a client sends is discarded.
  Its ``band`` s (``minimum``, ``label``) say what a score means (EPICES: precarity from 30).
- **A response is valid** (:func:`validate`) when each item it answers is an item of the
  grid, answered once with one answer of the item's type (a ``choice``: one of its options),
  and each required item is answered; else :class:`FormInvalid` (422) lists every item at
  fault, and nothing is stored.
- **Who**: a response belongs to a patient; only a current member of one of the patient's
  active care circles (the rule of :mod:`.circle`, merged patients included) fills one in,
  reads or finds it — a member removed from the circle loses them at once. The author is
  the caller; only the author amends their response (an evaluation is signed by who made
  it: a colleague who disagrees records their own).
- **Versions**: ``completed`` when recorded, ``amended`` once changed; each change raises
  the version, and a change made on another version (``If-Match``) is refused (412).

Errors: 403 (not a member, not the author), 404 (unknown grid or response), 412 (stale
version), 422 (an invalid response).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from enrs.coordination import circle
from enrs.coordination.form_models import FormResponse
from enrs.documents.access import Reader
from enrs.identity import service as identity_service
from enrs.identity.service import PatientRef
from enrs.kit.db import utcnow
from enrs.kit.errors import Forbidden, NotFound, PreconditionFailed, Unprocessable

ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
SCORE = "https://enrs.fr/fhir/StructureDefinition/questionnaire-score"
COMPLETED, AMENDED = "completed", "amended"
# An item's type -> the ``answer.value[x]`` it takes, and the Python types that value may be.
VALUE_OF: dict[str, tuple[str, tuple[type, ...]]] = {
    "choice": ("valueCoding", (dict,)),
    "boolean": ("valueBoolean", (bool,)),
    "integer": ("valueInteger", (int,)),
    "decimal": ("valueDecimal", (int, float, Decimal)),
    "string": ("valueString", (str,)),
    "text": ("valueString", (str,)),
}
HUNDREDTH = Decimal("0.01")


@dataclass(frozen=True)
class Option:
    """One answer of a ``choice`` item, with its weight in the score."""

    system: str
    code: str
    display: str
    weight: Decimal


@dataclass(frozen=True)
class Item:
    link_id: str
    text: str
    type: str
    required: bool = False
    read_only: bool = False
    options: tuple[Option, ...] = ()

    def option(self, code: str) -> Option | None:
        return next((o for o in self.options if o.code == code), None)


@dataclass(frozen=True)
class Band:
    """What a score from ``minimum`` up (to the next band) means."""

    minimum: Decimal
    label: str


@dataclass(frozen=True)
class Definition:
    """A grid: its FHIR ``Questionnaire`` as shipped, and what validating and scoring need."""

    id: str
    url: str
    version: str
    title: str
    items: tuple[Item, ...]
    score_item: str | None
    constant: Decimal
    bands: tuple[Band, ...]
    resource: dict[str, Any]

    def item(self, link_id: str) -> Item | None:
        return next((i for i in self.items if i.link_id == link_id), None)

    def meaning(self, score: Decimal | None) -> str | None:
        """The label of the highest band the score reaches."""
        if score is None:
            return None
        reached = [b for b in self.bands if score >= b.minimum]
        return max(reached, key=lambda b: b.minimum).label if reached else None


# --- the grids, as data ------------------------------------------------------------------


def _extension(element: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in element.get("extension") or [] if e.get("url") == url]


def _option(link_id: str, raw: dict[str, Any]) -> Option:
    coding = raw.get("valueCoding") or {}
    weights = _extension(raw, ORDINAL)
    weight = Decimal(str(weights[0]["valueDecimal"])) if weights else Decimal(0)
    if not coding.get("code") or not coding.get("display") or weight != weight.quantize(HUNDREDTH):
        raise ValueError(f"{link_id}: an option is a coding (code, display), weighed in 0.01s")
    return Option(coding.get("system", ""), coding["code"], coding["display"], weight)


def _item(raw: dict[str, Any]) -> Item:
    link_id, kind = raw.get("linkId"), raw.get("type")
    if not isinstance(link_id, str) or not link_id or kind not in VALUE_OF:
        raise ValueError(f"item {link_id!r}: a linkId and a type among {', '.join(VALUE_OF)}")
    if raw.get("repeats") or raw.get("item"):
        raise ValueError(f"item {link_id}: repeating and nested items are not supported")
    options = tuple(_option(link_id, o) for o in raw.get("answerOption") or [])
    if (kind == "choice") != bool(options):
        raise ValueError(f"item {link_id}: a choice, and only a choice, has answerOption")
    if len({o.code for o in options}) != len(options):
        raise ValueError(f"item {link_id}: two options with the same code")
    return Item(
        link_id,
        str(raw.get("text") or link_id),
        kind,
        required=bool(raw.get("required")),
        read_only=bool(raw.get("readOnly")),
        options=options,
    )


def _score_rule(resource: dict[str, Any]) -> tuple[str | None, Decimal, tuple[Band, ...]]:
    rules = _extension(resource, SCORE)
    if not rules:
        return None, Decimal(0), ()
    parts = rules[0].get("extension") or []
    item = next((p["valueString"] for p in parts if p.get("url") == "item"), None)
    constant = next((p["valueDecimal"] for p in parts if p.get("url") == "constant"), 0)
    bands = []
    for band in (p for p in parts if p.get("url") == "band"):
        fields = {f["url"]: f for f in band.get("extension") or []}
        bands.append(
            Band(Decimal(str(fields["minimum"]["valueDecimal"])), fields["label"]["valueString"])
        )
    return item, Decimal(str(constant)), tuple(bands)


def definition_from(resource: dict[str, Any]) -> Definition:
    """A grid from its ``Questionnaire``; ``ValueError`` when it is not one this module can
    validate and score (unique linkIds, supported types, the score item a read-only
    ``decimal``)."""
    if resource.get("resourceType") != "Questionnaire" or not resource.get("id"):
        raise ValueError("a Questionnaire with an id")
    items = tuple(_item(raw) for raw in resource.get("item") or [])
    if len({i.link_id for i in items}) != len(items):
        raise ValueError(f"Questionnaire/{resource['id']}: two items with the same linkId")
    score_item, constant, bands = _score_rule(resource)
    if score_item is not None:
        target = next((i for i in items if i.link_id == score_item), None)
        if target is None or target.type != "decimal" or not target.read_only:
            raise ValueError(f"Questionnaire/{resource['id']}: the score is a read-only decimal")
    return Definition(
        id=resource["id"],
        url=resource["url"],
        version=str(resource.get("version", "1")),
        title=resource.get("title") or resource["id"],
        items=items,
        score_item=score_item,
        constant=constant,
        bands=bands,
        resource=resource,
    )


@cache
def definitions() -> dict[str, Definition]:
    """The grids shipped under ``questionnaires/``, by id (read once per process)."""
    folder = resources.files("enrs.coordination").joinpath("questionnaires")
    found: dict[str, Definition] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            definition = definition_from(json.loads(entry.read_text(encoding="utf-8")))
            found[definition.id] = definition
    return found


def definition(questionnaire_id: str) -> Definition:
    found = definitions().get(questionnaire_id)
    if found is None:
        raise NotFound(f"Questionnaire/{questionnaire_id} not found")
    return found


def named(reference: str) -> Definition:
    """The grid a ``QuestionnaireResponse.questionnaire`` names: its canonical URL (with
    ``|version`` or not) or ``Questionnaire/{id}``; 422 for another grid or version."""
    url, _, version = reference.partition("|")
    for found in definitions().values():
        if url in (found.url, f"Questionnaire/{found.id}"):
            if version and version != found.version:
                raise Unprocessable(f"{found.url}: version {found.version} only, not {version}")
            return found
    raise Unprocessable(f"QuestionnaireResponse.questionnaire: no such grid: {reference}")


# --- validating and scoring (the one rule) -----------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why an item of a response is refused: ``kind`` is ``unknown``, ``duplicate``,
    ``required``, ``type`` or ``option``; ``link_id`` the item (``None``: no linkId)."""

    link_id: str | None
    kind: str
    expected: str = ""

    @property
    def english(self) -> str:
        return {
            "unknown": "not an item of this questionnaire",
            "duplicate": "answered more than once (one answer per item)",
            "required": "is required",
            "type": f"the answer must be a {self.expected}",
            "option": f"the answer must be one of {self.expected}",
        }[self.kind]

    @property
    def french(self) -> str:
        return {
            "unknown": "cette question n'existe pas dans cette grille",
            "duplicate": "une seule réponse par question",
            "required": "réponse obligatoire",
            "type": "réponse d'un type inattendu",
            "option": "choisissez l'une des réponses proposées",
        }[self.kind]


class FormInvalid(Unprocessable):
    """A response refused: every item at fault, named."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        said = "; ".join(f"item {p.link_id or '(no linkId)'}: {p.english}" for p in self.problems)
        super().__init__(f"QuestionnaireResponse.item: {said}")


# What was answered, as sent: (linkId, its answers), each answer a {"value[x]": value}.
Given = Sequence[tuple[Any, Sequence[dict[str, Any]]]]


def _value(item: Item, answer: dict[str, Any]) -> tuple[Any, Problem | None]:
    key, kinds = VALUE_OF[item.type]
    value: Any = answer.get(key) if isinstance(answer, dict) else None
    bad_bool = isinstance(value, bool) and bool not in kinds
    if value is None or not isinstance(value, kinds) or bad_bool or value == "":
        return None, Problem(item.link_id, "type", key)
    if item.type != "choice":
        return value, None
    coding: dict[str, Any] = value if isinstance(value, dict) else {}
    option = item.option(str(coding.get("code", "")))
    system = coding.get("system")
    if option is None or (system is not None and system != option.system):
        return None, Problem(item.link_id, "option", ", ".join(o.code for o in item.options))
    return option.code, None


def validate(definition: Definition, given: Given) -> dict[str, Any]:
    """The answers ``{linkId: value}`` (a choice's code) of a valid response, else
    :class:`FormInvalid` naming every item at fault. A read-only item's answer (the score)
    is not the client's to give: it is dropped."""
    problems: list[Problem] = []
    answers: dict[str, Any] = {}
    seen: set[str] = set()
    for link_id, given_answers in given:
        item = definition.item(link_id) if isinstance(link_id, str) else None
        if item is None:
            problems.append(Problem(link_id if isinstance(link_id, str) else None, "unknown"))
            continue
        if link_id in seen or len(given_answers) > 1:
            problems.append(Problem(link_id, "duplicate"))
            seen.add(link_id)
            continue
        seen.add(link_id)
        if item.read_only or not given_answers:
            continue
        value, problem = _value(item, given_answers[0])
        if problem is not None:
            problems.append(problem)
        else:
            answers[link_id] = value
    faulty = {p.link_id for p in problems}
    for item in definition.items:
        missing = item.link_id not in answers and item.link_id not in faulty
        if item.required and not item.read_only and missing:
            problems.append(Problem(item.link_id, "required"))
    if problems:
        raise FormInvalid(problems)
    return answers


def score(definition: Definition, answers: dict[str, Any]) -> Decimal | None:
    """The grid's score of valid answers: its constant plus the weights of the options
    chosen, to the hundredth; ``None`` for a grid without a score."""
    if definition.score_item is None:
        return None
    total = definition.constant
    for item in definition.items:
        if item.type == "choice" and item.link_id in answers:
            option = item.option(answers[item.link_id])
            total += option.weight if option is not None else Decimal(0)
    return total.quantize(HUNDREDTH)


# --- the responses, for the members of the patient's circles ------------------------------


def _new_id() -> str:
    return uuid.uuid4().hex


def response_score(response: FormResponse) -> Decimal | None:
    hundredths = response.score_hundredths
    return None if hundredths is None else (Decimal(hundredths) / 100).quantize(HUNDREDTH)


def answers_of(response: FormResponse) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(response.answers)
    return loaded


def _patient_ids(session: Session, patient_id: int) -> tuple[PatientRef, list[int]]:
    patient = identity_service.current_patient(session, patient_id)
    if patient is None:
        raise NotFound("the response's patient is no longer active")
    return patient, identity_service.merged_patient_ids(session, patient.id)


def require_circle(session: Session, reader: Reader, patient: PatientRef, what: str) -> None:
    """403 unless the reader is a current member of one of the patient's active circles."""
    ids = identity_service.merged_patient_ids(session, patient.id)
    if circle.circle_relationship(session, reader.rpps, reader.structures, ids) is None:
        raise Forbidden(f"{what}: for the current members of Patient/{patient.rri}'s care circles")


def patient_of(session: Session, response: FormResponse) -> PatientRef:
    return _patient_ids(session, response.patient_id)[0]


def response_by_id(session: Session, resource_id: str) -> FormResponse:
    found = session.scalar(select(FormResponse).where(FormResponse.resource_id == resource_id))
    if found is None:
        raise NotFound(f"QuestionnaireResponse/{resource_id} not found")
    return found


def seen(session: Session, response: FormResponse, reader: Reader) -> FormResponse:
    """The response, when the reader is in one of its patient's circles now (else 403)."""
    what = f"QuestionnaireResponse/{response.resource_id}"
    require_circle(session, reader, patient_of(session, response), what)
    return response


def _scored(definition: Definition, answers: dict[str, Any]) -> int | None:
    total = score(definition, answers)
    return None if total is None else int(total * 100)


def create(
    session: Session, reader: Reader, patient: PatientRef, definition: Definition, given: Given
) -> FormResponse:
    """A grid filled in for the patient by a current member of one of its circles, scored
    here; ``completed``."""
    require_circle(session, reader, patient, "an evaluation")
    answers = validate(definition, given)
    now = utcnow()
    response = FormResponse(
        resource_id=_new_id(),
        questionnaire=definition.id,
        questionnaire_version=definition.version,
        patient_id=patient.id,
        status=COMPLETED,
        answers=json.dumps(answers, sort_keys=True),
        score_hundredths=_scored(definition, answers),
        author_key=reader.key,
        author_display=reader.name,
        author_rpps=reader.rpps,
        authored_at=now,
        updated_at=now,
        version=1,
    )
    session.add(response)
    session.flush()
    return response


def amend(
    session: Session,
    reader: Reader,
    response: FormResponse,
    given: Given,
    expected: int | None = None,
) -> FormResponse:
    """Its author, still a member of one of the patient's circles, changes the answers: the
    response is ``amended`` and scored again. ``expected``: the version the change was made
    on; another one is refused, nothing changed. Unchanged answers change nothing."""
    seen(session, response, reader)
    if response.author_key != reader.key:
        raise Forbidden(
            f"QuestionnaireResponse/{response.resource_id} is amended by its author only"
        )
    if expected is not None and expected != response.version:
        raise PreconditionFailed(
            f"QuestionnaireResponse/{response.resource_id} is at version {response.version}, "
            f"not {expected}: read it again before changing it"
        )
    grid = definition(response.questionnaire)
    answers = validate(grid, given)
    if answers != answers_of(response):
        response.answers = json.dumps(answers, sort_keys=True)
        response.score_hundredths = _scored(grid, answers)
        response.status = AMENDED
        response.version += 1
        response.updated_at = utcnow()
    return response


def responses_stmt(session: Session, reader: Reader, patient: PatientRef) -> Select[FormResponse]:
    """The statement of the patient's responses (merged patients' too), in no order, for a
    current member of one of its circles (else 403)."""
    require_circle(session, reader, patient, "the patient's evaluations")
    ids = identity_service.merged_patient_ids(session, patient.id)
    return select(FormResponse).where(FormResponse.patient_id.in_(ids))


def responses_for(
    session: Session, reader: Reader, patient: PatientRef, questionnaire: str | None = None
) -> list[FormResponse]:
    """:func:`responses_stmt`'s responses, newest first; ``questionnaire``: of that grid."""
    stmt = responses_stmt(session, reader, patient)
    if questionnaire is not None:
        stmt = stmt.where(FormResponse.questionnaire == questionnaire)
    stmt = stmt.order_by(FormResponse.authored_at.desc(), FormResponse.id.desc())
    return list(session.scalars(stmt))
