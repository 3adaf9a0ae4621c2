"""FHIR endpoints of the evaluation forms (:mod:`.forms`, rendered by :mod:`.form_fhir`):

- ``GET /fhir/Questionnaire`` (``url``, ``name`` filter) and ``GET /fhir/Questionnaire/{id}``:
  the grids shipped with the platform (EPICES, Katz ADL), read-only.
- ``POST /fhir/QuestionnaireResponse``: a grid filled in for a patient (``questionnaire`` the
  grid's URL, ``subject`` ``Patient/{RRI}``, ``status`` ``completed``, ``item``); validated
  (422 naming every item at fault, nothing stored) and scored by the server; the author is
  the caller. 201 with ``Location`` and ``ETag``.
- ``GET /fhir/QuestionnaireResponse/{id}``: a response, its version as ``ETag``.
- ``PUT /fhir/QuestionnaireResponse/{id}``: its author amends it (``status`` ``amended``;
  its grid and patient do not change); with ``If-Match`` for another version: 412.
- ``GET /fhir/QuestionnaireResponse?patient=Patient/{RRI}`` (``&questionnaire=`` the grid's
  URL or id): the patient's responses, newest first.

People need the ``professional`` role (``user/QuestionnaireResponse.crus``); software a
``system/QuestionnaireResponse`` scope and its facility in the circle. Only current members
of one of the patient's circles reach its responses. Every call is audited with the patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from enrs.coordination import form_fhir, forms
from enrs.coordination.auth import (
    FormCreate,
    FormRead,
    FormSearch,
    FormUpdate,
    QuestionnaireRead,
    QuestionnaireSearch,
)
from enrs.coordination.endpoints import (
    applied,
    expected_version,
    parsed_search,
    patient_from,
    searchset,
)
from enrs.coordination.form_models import FormResponse
from enrs.documents.access import reader_of
from enrs.kit.errors import BadRequest, Unprocessable
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.fhir.search import SearchSpec
from enrs.kit.fhir.search_params import SearchParam
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["coordination"], dependencies=[FhirFormat])
SCORING = (
    "Grids shipped with the platform, read-only. A choice option's weight is the extension "
    f"{forms.ORDINAL}; the score's rule (constant, score item, bands) the extension "
    f"{forms.SCORE}."
)
RESPONSES = (
    "Validated against its Questionnaire (known linkIds, required items, answer types, "
    "options, one answer per item: 422 naming the items). The score is computed by the "
    "server, the answer of the grid's read-only score item; a score sent is discarded. "
    "Only the author amends (status amended, If-Match)."
)


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "Questionnaire",
        interactions=["read", "search-type"],
        search_params=[
            ("url", "uri", "The grid's canonical URL"),
            ("name", "string", "The grid's name (EPICES, KatzADL)"),
        ],
        documentation=SCORING,
    )
    registry.add_resource(
        "QuestionnaireResponse",
        interactions=["create", "read", "update", "search-type"],
        search_params=[
            ("patient", "reference", "Patient/{RRI}: the patient's evaluations (required)"),
            ("questionnaire", "reference", "The grid (its URL or Questionnaire/{id})"),
        ],
        documentation=RESPONSES,
    )


# --- the grids -----------------------------------------------------------------------------


@router.get("/fhir/Questionnaire/{questionnaire_id}", summary="Read an evaluation grid")
def read_questionnaire(
    request: Request, questionnaire_id: str, principal: QuestionnaireRead
) -> FhirJSONResponse:
    request.state.audit[-1].entity_ref = f"Questionnaire/{questionnaire_id}"[:256]
    grid = forms.definition(questionnaire_id)
    headers = {"ETag": f'W/"{grid.version}"'}
    return FhirJSONResponse(form_fhir.questionnaire(grid), headers=headers)


@router.get("/fhir/Questionnaire", summary="List the evaluation grids")
def search_questionnaires(request: Request, principal: QuestionnaireSearch) -> FhirJSONResponse:
    query = request.query_params
    unknown = set(query) - {"url", "name", "_format"}
    if unknown:
        raise BadRequest(f"unknown search parameters: {', '.join(sorted(unknown))}")
    grids = list(forms.definitions().values())
    if "url" in query:
        grids = [g for g in grids if g.url == query["url"].partition("|")[0]]
    if "name" in query:  # FHIR string search: starts with, case-insensitive
        wanted = query["name"].casefold()
        grids = [g for g in grids if str(g.resource.get("name", "")).casefold().startswith(wanted)]
    base = request.app.state.settings.fhir_base
    entries = [
        {
            "fullUrl": f"{base}/Questionnaire/{g.id}",
            "resource": form_fhir.questionnaire(g),
            "search": {"mode": "match"},
        }
        for g in grids
    ]
    return FhirJSONResponse(
        {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    )


# --- the responses -------------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "QuestionnaireResponse")


ResponseBody = Annotated[dict[str, Any], Depends(_body)]


def _audited(request: Request, session: Session, response: FormResponse) -> str:
    """The response's patient's RRI; the response and its patient named in the audit."""
    entry = request.state.audit[-1]
    entry.entity_ref = f"QuestionnaireResponse/{response.resource_id}"
    rri = forms.patient_of(session, response).rri
    entry.patient_ref = f"Patient/{rri}"
    return rri


def _answer(
    request: Request, session: Session, response: FormResponse, status_code: int = 200
) -> FhirJSONResponse:
    rri = _audited(request, session, response)
    headers = {"ETag": f'W/"{response.version}"'}
    if status_code == 201:
        base = request.app.state.settings.fhir_base
        headers["Location"] = f"{base}/QuestionnaireResponse/{response.resource_id}"
    return FhirJSONResponse(
        form_fhir.response(response, rri), status_code=status_code, headers=headers
    )


def _seen(
    request: Request, session: Session, principal: Principal, response_id: str
) -> FormResponse:
    request.state.audit[-1].entity_ref = f"QuestionnaireResponse/{response_id}"[:256]
    response = forms.response_by_id(session, response_id)
    _audited(request, session, response)  # refusals are audited with the patient too
    return forms.seen(session, response, reader_of(session, principal))


@router.post(
    "/fhir/QuestionnaireResponse", status_code=201, summary="Record an evaluation of a patient"
)
def create_response(
    request: Request, session: DbSession, principal: FormCreate, body: ResponseBody
) -> FhirJSONResponse:
    patient = patient_from(request, session, body.get("subject"))
    if body.get("status", forms.COMPLETED) != forms.COMPLETED:
        raise Unprocessable("QuestionnaireResponse.status: a new evaluation is completed")
    grid = form_fhir.grid_of(body)
    reader = reader_of(session, principal)
    response = forms.create(session, reader, patient, grid, form_fhir.given(body))
    return _answer(request, session, response, 201)


@router.get("/fhir/QuestionnaireResponse/{response_id}", summary="Read an evaluation")
def read_response(
    request: Request, response_id: str, session: DbSession, principal: FormRead
) -> FhirJSONResponse:
    return _answer(request, session, _seen(request, session, principal, response_id))


@router.put("/fhir/QuestionnaireResponse/{response_id}", summary="Amend an evaluation (If-Match)")
def amend_response(
    request: Request,
    response_id: str,
    session: DbSession,
    principal: FormUpdate,
    body: ResponseBody,
) -> FhirJSONResponse:
    expected = expected_version(request)
    response = _seen(request, session, principal, response_id)
    if body.get("id") != response_id:
        raise BadRequest("the QuestionnaireResponse's id must be the id in the URL")
    rri = forms.patient_of(session, response).rri
    subject = body.get("subject")
    if not isinstance(subject, dict) or subject.get("reference") != f"Patient/{rri}":
        raise Unprocessable(f"QuestionnaireResponse.subject does not change (Patient/{rri})")
    if form_fhir.grid_of(body).id != response.questionnaire:
        raise Unprocessable("QuestionnaireResponse.questionnaire does not change")
    if body.get("status") != forms.AMENDED:
        raise Unprocessable("QuestionnaireResponse.status: a change makes it amended")
    reader = reader_of(session, principal)
    forms.amend(session, reader, response, form_fhir.given(body), expected)
    return _answer(request, session, response)


def response_spec() -> SearchSpec:
    """``GET /fhir/QuestionnaireResponse``: ``patient`` (required) and ``questionnaire`` (the
    grid's canonical URL or ``Questionnaire/{id}``), both applied by the base statement;
    newest first; ``_sort`` on ``authored`` and ``_lastUpdated``."""
    return SearchSpec(
        "QuestionnaireResponse",
        {
            "patient": SearchParam.reference(targets=["Patient"], match=applied),
            "questionnaire": SearchParam.uri(match=applied),
        },
        sorts={"authored": FormResponse.authored_at, "_lastUpdated": FormResponse.updated_at},
        default_sort="-authored",
        tiebreaker=FormResponse.id,
        default_count=20,
        max_count=100,
    )


@router.get("/fhir/QuestionnaireResponse", summary="Find a patient's evaluations")
def search_responses(
    request: Request, session: DbSession, principal: FormSearch
) -> FhirJSONResponse:
    parsed = parsed_search(request, response_spec())
    query = request.query_params
    if "patient" not in query:
        raise BadRequest("a search of evaluations names the patient (patient=Patient/{RRI})")
    patient = patient_from(request, session, query["patient"])
    stmt = forms.responses_stmt(session, reader_of(session, principal), patient)
    if "questionnaire" in query:
        try:
            grid = forms.named(query["questionnaire"]).id
        except Unprocessable as exc:
            raise BadRequest(exc.message) from None
        stmt = stmt.where(FormResponse.questionnaire == grid)

    def render(page: Sequence[FormResponse]) -> list[dict[str, Any]]:
        return [form_fhir.response(r, patient.rri) for r in page]

    return searchset(request, session, parsed, stmt, render)
