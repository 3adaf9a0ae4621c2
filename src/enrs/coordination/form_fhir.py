"""Evaluation forms as FHIR R4 ``Questionnaire`` and ``QuestionnaireResponse``, read and
rendered (:mod:`.forms` holds the rule).

- A ``Questionnaire`` is served as shipped (``questionnaires/*.json``). Each ``choice``
  option carries its weight in the core extension ``ordinalValue``; the score's rule is the
  extension :data:`~enrs.coordination.forms.SCORE` (``item``, ``constant``, ``band`` s).
- A ``QuestionnaireResponse`` is rendered from the grid, not echoed: ``questionnaire`` the
  grid's canonical URL with its version (``…/epices|1``), ``subject`` ``Patient/{RRI}``,
  ``status`` ``completed`` or ``amended``, ``authored``, ``author`` (a ``Practitioner`` by
  idNatPs, ``8`` + RPPS, with its name), and one ``item`` per answered question (its text
  and the option's full coding). **The score** is the answer (``valueDecimal``) of the grid's
  read-only score item (EPICES: ``score``), computed by the server; what the score means
  (its band) is that answer's extension :data:`SCORE_MEANING` (``valueString``).
- Read: ``questionnaire``, ``subject``, ``status``, and ``item`` (a flat list of ``linkId``
  and ``answer``); what else the body says (texts, displays) is not kept.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from enrs.coordination import forms
from enrs.coordination.form_models import FormResponse
from enrs.directory.identifiers import RPPS_SYSTEM
from enrs.kit.errors import Unprocessable

SCORE_MEANING = "https://enrs.fr/fhir/StructureDefinition/questionnaire-score-meaning"


def questionnaire(definition: forms.Definition) -> dict[str, Any]:
    return {**definition.resource, "meta": {"versionId": definition.version}}


def _answer(item: forms.Item, value: Any) -> dict[str, Any]:
    if item.type == "choice":
        option = item.option(str(value))
        if option is None:  # validated when stored: never
            return {"valueString": str(value)}
        coding = {"system": option.system, "code": option.code, "display": option.display}
        return {"valueCoding": coding}
    return {forms.VALUE_OF[item.type][0]: value}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def response(found: FormResponse, rri: str) -> dict[str, Any]:
    grid = forms.definition(found.questionnaire)
    answers = forms.answers_of(found)
    total = forms.response_score(found)
    items: list[dict[str, Any]] = []
    for item in grid.items:
        if item.link_id == grid.score_item and total is not None:
            answer: dict[str, Any] = {"valueDecimal": _number(total)}
            meaning = grid.meaning(total)
            if meaning is not None:
                answer["extension"] = [{"url": SCORE_MEANING, "valueString": meaning}]
            items.append({"linkId": item.link_id, "text": item.text, "answer": [answer]})
        elif item.link_id in answers:
            answered = [_answer(item, answers[item.link_id])]
            items.append({"linkId": item.link_id, "text": item.text, "answer": answered})
    author: dict[str, Any] = {"display": found.author_display}
    if found.author_rpps:
        author = {
            "type": "Practitioner",
            "identifier": {"system": RPPS_SYSTEM, "value": f"8{found.author_rpps}"},
            **author,
        }
    return {
        "resourceType": "QuestionnaireResponse",
        "id": found.resource_id,
        "meta": {"versionId": str(found.version), "lastUpdated": found.updated_at.isoformat()},
        "questionnaire": f"{grid.url}|{found.questionnaire_version}",
        "status": found.status,
        "subject": {"reference": f"Patient/{rri}"},
        "authored": found.authored_at.isoformat(),
        "author": author,
        "item": items,
    }


def given(body: dict[str, Any]) -> forms.Given:
    """The answers a body sends, as :func:`enrs.coordination.forms.validate` reads them
    (422 when ``item`` is not a list of items with answer lists)."""
    raw = body.get("item", [])
    if not isinstance(raw, list):
        raise Unprocessable("QuestionnaireResponse.item: a list")
    found: list[tuple[Any, list[dict[str, Any]]]] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise Unprocessable("QuestionnaireResponse.item: each item is an object")
        if entry.get("item"):
            raise Unprocessable(f"QuestionnaireResponse.item {entry.get('linkId')}: not nested")
        answers = entry.get("answer", [])
        if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
            raise Unprocessable(
                f"QuestionnaireResponse.item {entry.get('linkId')}: answer is a list of objects"
            )
        found.append((entry.get("linkId"), answers))
    return found


def grid_of(body: dict[str, Any]) -> forms.Definition:
    reference = body.get("questionnaire")
    if not isinstance(reference, str) or not reference:
        raise Unprocessable("QuestionnaireResponse.questionnaire (the grid's URL) is required")
    return forms.named(reference)
