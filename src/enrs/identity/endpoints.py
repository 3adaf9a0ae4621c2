"""FHIR R4 endpoints of the identity server: PIXm ITI-104 (feed) and ITI-83 (``$ihe-pix``),
PDQm ITI-78 (search, read) and ITI-119 (``$match``), over FR Core Patient.

Resource ids: a facility's *source identity* is ``Patient/{its numeric id}`` (what ITI-104
stores, what ITI-78 and ITI-119 return); the *regional patient* is ``Patient/{RRI}`` (the
``targetId`` of ITI-83; its read gives the regional view: the most reliable identity's traits
and every identifier). Errors are OperationOutcomes (``enrs.kit.http``): 400 malformed request,
401 no valid token, 403 missing scope or role, 404 unknown resource, 415 wrong media type,
422 a Patient the identity rules refuse (INS key, incoherent status, missing birth name).
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from enrs.identity import access, fhir, record, repository, search, updates, xref
from enrs.identity import service as identity_service
from enrs.identity.auth import PatientFeed, PatientRead, PatientSearch, actor, check_writer
from enrs.identity.config import IdentityConfig
from enrs.identity.models import SourceIdentity
from enrs.identity.schemas import FeedResult
from enrs.identity.traits import INS_OIDS
from enrs.kit.errors import BadRequest, EnrsError, NotFound, Unprocessable
from enrs.kit.fhir.bundle import bundle_entry, searchset_bundle
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse, outcome_issue
from enrs.kit.fhir.requests import FhirFormat, prefers_strict, read_resource
from enrs.kit.http import DbSession, TransactionalRoute, in_unit
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["identity"], dependencies=[FhirFormat])

PIX_DEFINITION = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"
MATCH_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-match"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
MATCH_DEFAULT_COUNT, MATCH_MAX_COUNT = 10, 100


# Where the identity server departs from IHE PIXm/PDQm on purpose (docs/conformance.md).
FRENCH_RULES = (
    "French rules (RNIV, CI-SIS), differing from IHE on purpose: birth name and first names "
    "are required; identifier domains are OIDs (urn:oid:) registered by the administrator, an "
    "unregistered one is refused; the INS is used and returned only from a qualified identity "
    "and must agree with the sex and birth date it encodes; a douteuse or fictive identity, or "
    "a second IPP of one facility, is never linked automatically; a facility writes and merges "
    "only in its own domain. See docs/conformance.md."
)


def register_capabilities(registry: CapabilityRegistry, config: IdentityConfig) -> None:
    """Patient: update (ITI-104, conditional), read, search-type (ITI-78), ``$ihe-pix``
    (ITI-83) and ``$match`` (ITI-119)."""
    registry.add_resource(
        "Patient",
        interactions=["update", "read", "search-type"],
        search_params=search.pdqm_search(config),
        operations=[("ihe-pix", PIX_DEFINITION), ("match", MATCH_DEFINITION)],
        profile=fhir.FR_CORE_PATIENT,
        documentation=FRENCH_RULES,
    )


async def patient_body(request: Request) -> dict[str, Any]:
    """An FR Core Patient body: 415 wrong media type, 400 not JSON, 422 not a Patient."""
    return await read_resource(request, "Patient")


async def operation_body(request: Request) -> dict[str, Any]:
    """A ``Parameters`` (or, for ``$match``, a bare Patient) body."""
    return await read_resource(request, None)


def identity_config(request: Request) -> IdentityConfig:
    """The identity server's configuration, built by ``create_app``."""
    config: IdentityConfig = request.app.state.identity_config
    return config


def _audit_patient(request: Request, rri: str | None, entity: str | None = None) -> None:
    entry = request.state.audit[-1]
    if rri is not None:
        entry.patient_ref = f"Patient/{rri}"
    if entity is not None:
        entry.entity_ref = entity


# --- PIXm ITI-83 (declared before Patient/{id}) -------------------------------------------


@router.get("/fhir/Patient/$ihe-pix", summary="PIXm ITI-83: identifier cross-reference")
def iti_83_pix_query(
    request: Request, session: DbSession, _principal: PatientSearch
) -> FhirJSONResponse:
    """``sourceIdentifier=system|value`` (an IPP, the RRI or a qualified identity's INS) and
    optional ``targetSystem`` → ``Parameters``: for each regional patient found (merges
    followed), a ``targetIdentifier`` per identifier of it (the rules of :mod:`.xref`: active
    IPPs, the RRI, the INS only from a qualified identity, never the source identifier itself)
    and its ``targetId`` ``Patient/{RRI}``.

    400 ``code-invalid`` unknown source domain or malformed parameter, 404 ``not-found``
    unknown identifier, 403 ``code-invalid`` unknown ``targetSystem`` (PIXm 2:3.83.4.2.2)."""
    found = search.iti_83_cross_reference(
        session,
        identity_config(request),
        request.query_params.get("sourceIdentifier"),
        request.query_params.getlist("targetSystem"),
    )
    parameters: list[dict[str, Any]] = []
    for patient in found.patients:
        for ident in patient.identifiers:
            value = fhir.identifier_to_fhir(ident)
            parameters.append({"name": "targetIdentifier", "valueIdentifier": value})
        reference = {"reference": f"Patient/{patient.rri}"}
        parameters.append({"name": "targetId", "valueReference": reference})
    request.state.audit[-1].interaction = "operation"
    _audit_patient(request, found.patients[0].rri if len(found.patients) == 1 else None)
    return FhirJSONResponse({"resourceType": "Parameters", "parameter": parameters})


# --- PDQm ITI-119 ----------------------------------------------------------------------------


def _match_parameters(body: dict[str, Any]) -> tuple[dict[str, Any], bool, int]:
    """``(patient, onlyCertainMatches, count)``; a bare Patient body is accepted (ITI-119).
    400 for a missing or malformed parameter, 422 for a body of another resource type."""
    if body["resourceType"] == "Patient":
        return body, False, MATCH_DEFAULT_COUNT
    if body["resourceType"] != "Parameters":
        raise Unprocessable(
            "$match takes a Parameters resource (or a Patient)", issue_code="invalid"
        )
    params = body.get("parameter")
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise BadRequest("Parameters.parameter must be an array of objects")
    patient, only_certain, count = None, False, MATCH_DEFAULT_COUNT
    for param in params:
        name = param.get("name")
        if name == "resource":
            patient = param.get("resource")
        elif name == "onlyCertainMatches":
            only_certain = param.get("valueBoolean")
            if not isinstance(only_certain, bool):
                raise BadRequest("onlyCertainMatches takes a valueBoolean")
        elif name == "count":
            count = param.get("valueInteger")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise BadRequest("count takes a positive valueInteger")
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise BadRequest("the 'resource' parameter must hold a Patient")
    return patient, only_certain, min(count, MATCH_MAX_COUNT)


@router.post("/fhir/Patient/$match", summary="PDQm ITI-119: patient match")
def iti_119_match(
    request: Request,
    session: DbSession,
    _principal: PatientSearch,
    body: Annotated[dict[str, Any], Depends(operation_body)],
) -> FhirJSONResponse:
    """A ``searchset`` Bundle of candidates, most likely first: for each regional patient its
    best-scoring source identity, ``search.score`` = the model's calibrated probability and the
    ``match-grade`` extension on ``entry.search``. ``certainly-not`` candidates are never
    returned. 400 malformed Parameters, 422 a Patient that cannot be read or an INS whose key
    does not check."""
    patient, only_certain, count = _match_parameters(body)
    config = identity_config(request)
    traits = search.traits_of_fields(fhir.read_patient(patient, strict=False), config)
    order = record.birth_order(
        {"fhir": {"multipleBirthInteger": patient.get("multipleBirthInteger")}}
    )
    traits = dataclasses.replace(traits, birth_order=order)
    results = search.iti_119_match(
        session, request.app.state.matcher, traits, only_certain=only_certain, count=count
    )
    base = request.app.state.settings.fhir_base
    entries = []
    for result in results:
        shown = access.source_identifiers(result.source, result.rri, config)
        resource = fhir.source_to_fhir(result.source, result.rri, shown)
        entry = bundle_entry(resource, base_url=base, score=round(result.probability, 6))
        entry["search"]["extension"] = [{"url": MATCH_GRADE, "valueCode": result.grade}]
        entries.append(entry)
    request.state.audit[-1].interaction = "operation"
    _audit_patient(request, results[0].rri if len({r.rri for r in results}) == 1 else None)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries)}
    if entries:
        bundle["entry"] = entries
    return FhirJSONResponse(bundle)


# --- PIXm ITI-104 ----------------------------------------------------------------------------


def _conditional_identifier(request: Request) -> tuple[str, str]:
    """``identifier=urn:oid:{authority}|{ipp}`` of the conditional update, else 400."""
    params = request.query_params
    others = set(params.keys()) - {"identifier", "_format", "_pretty"}
    if others:
        raise BadRequest(f"ITI-104 takes only identifier=, not {', '.join(sorted(others))}")
    values = params.getlist("identifier")
    if len(values) != 1:
        raise BadRequest("ITI-104 needs exactly one identifier=urn:oid:{authority}|{ipp}")
    system, sep, ipp = values[0].partition("|")
    authority = fhir.oid_of(system)
    if not sep or not ipp or authority is None:
        raise BadRequest(f"identifier {values[0]!r} is not urn:oid:{{authority}}|{{ipp}}")
    if authority in INS_OIDS or system == identity_config(request).rri_system:
        raise BadRequest("the conditional identifier must be the facility's IPP, not INS or RRI")
    return authority, ipp


def _feed_headers(result: FeedResult) -> dict[str, str]:
    headers = {"ENRS-Link-Method": result.link_method}
    if result.score is not None:
        headers["ENRS-Link-Score"] = f"{result.score:.2f}"
    if result.task is not None:
        headers["ENRS-Task"] = f"{result.task}; id={result.task_id}"
    return headers


def _identifier_warnings(result: FeedResult) -> list[dict[str, Any]]:
    """A warning for each Patient.identifier not kept (:mod:`.others` says why), and one for
    a possible intra-facility duplicate."""
    duplicate = identity_service.same_facility_note(result)
    return [
        outcome_issue(
            note, code="informational", severity="warning", expression=["Patient.identifier"]
        )
        for note in [*result.ignored, *([duplicate] if duplicate else [])]
    ]


def _feed_outcome(result: FeedResult, source: SourceIdentity) -> dict[str, Any]:
    what = "created" if result.created else "updated"
    text = (
        f"Patient/{source.id} {what} (version {source.version}), regional patient "
        f"{result.rri}, link {result.link_method}"
    )
    if result.score is not None:
        text += f", match weight {result.score:.2f}"
    if result.task is not None:
        text += f"; potential {result.task.lower()} task {result.task_id} for the cell"
    issue = outcome_issue(text, code="informational", severity="information")
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _prefer_return(request: Request) -> str:
    prefer = request.headers.get("prefer", "")
    for item in prefer.split(","):
        key, _, value = item.strip().partition("=")
        if key.strip() == "return":
            return value.strip().strip('"')
    return "representation"


def _feed(
    request: Request,
    session: Session,
    principal: Principal,
    resource: dict[str, Any],
    authority: str,
    ipp: str,
) -> Response:
    """Check ``authority`` is a registered domain (422) and the caller may write it (403),
    read the Patient, feed it to ``service.feed``, answer as ITI-104 says."""
    if not xref.known_domain(session, identity_config(request), authority):
        raise Unprocessable(
            f"Patient.identifier: the assigning authority urn:oid:{authority} is not registered "
            "on this server",
            issue_code="code-invalid",
        )
    check_writer(session, principal, authority)
    fields = fhir.read_patient(resource)
    if (f"urn:oid:{authority}", ipp) not in fields.identifiers:
        raise BadRequest(f"the Patient must carry its IPP urn:oid:{authority}|{ipp}")
    data = fhir.source_identity_in(fields, authority=authority, ipp=ipp)
    data.record = record.from_fhir(resource)
    config = identity_config(request)
    result = identity_service.feed(
        session, request.app.state.matcher, data, actor=actor(principal), config=config
    )
    source = session.get(SourceIdentity, result.source_id)
    assert source is not None
    entry = request.state.audit[-1]
    _audit_patient(request, result.rri, f"Patient/{source.id}")
    if result.created:
        entry.interaction, entry.action = "create", "C"
    entry.detail = json.dumps(result.model_dump(exclude={"rri", "source_id"}))
    headers = {
        "Location": f"{request.app.state.settings.fhir_base}/Patient/{source.id}",
        "ETag": f'W/"{source.version}"',
        **_feed_headers(result),
    }
    status = 201 if result.created else 200
    wanted = _prefer_return(request)
    if wanted == "minimal":
        return Response(status_code=status, headers=headers)
    if wanted == "OperationOutcome":
        body = _feed_outcome(result, source)
        body["issue"] += _identifier_warnings(result)
    else:
        shown = access.source_identifiers(source, result.rri, config, fed_by_caller=True)
        body = fhir.source_to_fhir(source, result.rri, shown)
    return FhirJSONResponse(body, status_code=status, headers=headers)


def _replaced_by(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The ``replaced-by`` link of a Patient that asks for a merge (ITI-104 merge, as PMIR's
    ITI-93): ``active: false`` and one link of type ``replaced-by``; ``None`` for a feed."""
    links = resource.get("link")
    if not isinstance(links, list):
        return None
    replaced = [x for x in links if isinstance(x, dict) and x.get("type") == "replaced-by"]
    if not replaced:
        return None
    if resource.get("active") is not False or len(replaced) != 1:
        raise Unprocessable(
            "a merge is a Patient with active: false and one link of type replaced-by",
            issue_code="invariant",
        )
    other = replaced[0].get("other")
    return other if isinstance(other, dict) else {}


def _merge(
    request: Request,
    session: Session,
    principal: Principal,
    authority: str,
    ipp: str,
    other: dict[str, Any],
) -> Response:
    """Merge the facility's identity ``ipp`` into the one ``other`` names by its identifier,
    of the same assigning authority (a facility merges only within its own domain, as A40):
    the merged identity is deactivated and its regional patient follows (``updates``)."""
    ident = other.get("identifier")
    if not isinstance(ident, dict) or not ident.get("value") or not ident.get("system"):
        raise Unprocessable(
            "Patient.link.other: the surviving identity is named by its identifier "
            "(system urn:oid:{authority}, value its IPP)",
            issue_code="required",
        )
    if fhir.oid_of(str(ident["system"])) != authority:
        raise Unprocessable(
            f"Patient.link.other.identifier: a facility merges only within its own domain "
            f"(urn:oid:{authority}), not {ident['system']}",
            issue_code="business-rule",
        )
    check_writer(session, principal, authority)
    result = updates.merge_sources(
        session,
        authority=authority,
        surviving_ipp=str(ident["value"]),
        merged_ipp=ipp,
        actor=actor(principal),
    )
    merged = repository.source_by_key(session, authority, ipp)
    assert merged is not None
    entry = request.state.audit[-1]
    entry.action = "U"
    _audit_patient(request, result.surviving_rri, f"Patient/{merged.id}")
    entry.detail = json.dumps(
        {"merge": True, "into": str(ident["value"]), "merged_rri": result.merged_rri,
         "already_merged": result.already_merged}
    )  # fmt: skip
    return FhirJSONResponse(fhir.inactive_source_to_fhir(merged, result.surviving_rri))


@router.put("/fhir/Patient", summary="PIXm ITI-104: patient identity feed")
def iti_104_patient_feed(
    request: Request,
    session: DbSession,
    principal: PatientFeed,
    resource: Annotated[dict[str, Any], Depends(patient_body)],
) -> Response:
    """Conditional update ``PUT Patient?identifier=urn:oid:{authority}|{ipp}``: creates (201)
    or updates (200) the facility's source identity and matches it (``service.feed``).

    The body is the stored identity as FR Core Patient with its ``RRI``; ``Prefer:
    return=OperationOutcome`` returns instead an ``information`` issue describing the link,
    ``return=minimal`` no body. The link (method, weight, task for the cell) is always in the
    ``ENRS-Link-Method``, ``ENRS-Link-Score`` and ``ENRS-Task`` headers. 400 missing or
    malformed identifier, identifier absent from the body, or body ``id`` other than the
    stored one; 403 a system client not registered for the identifier's assigning authority;
    422 an invalid INS key, incoherent status, or untraceable trait."""
    authority, ipp = _conditional_identifier(request)
    replaced_by = _replaced_by(resource)
    if replaced_by is not None:
        return _merge(request, session, principal, authority, ipp, replaced_by)
    existing = repository.source_by_key(session, authority, ipp)
    body_id = resource.get("id")
    if existing is not None and body_id is not None and str(body_id) != str(existing.id):
        raise BadRequest(f"Patient.id {body_id!r} is not the id of that identity ({existing.id})")
    return _feed(request, session, principal, resource, authority, ipp)


@router.put("/fhir/Patient/{patient_id}", summary="Update a source identity by id")
def update_patient(
    request: Request,
    patient_id: str,
    session: DbSession,
    principal: PatientFeed,
    resource: Annotated[dict[str, Any], Depends(patient_body)],
) -> Response:
    """``PUT Patient/{id}`` of an existing source identity: the same as its ITI-104 feed (no
    update-as-create: 404 for an unknown id, 405 for the read-only regional ``Patient/{RRI}``).
    400 when ``Patient.id`` is not ``{id}`` or the body lacks the identity's IPP; 403 for a
    system client not registered for the identity's assigning authority."""
    source = repository.source(session, int(patient_id)) if _is_id(patient_id) else None
    if source is None:
        if repository.patient_by_rri(session, patient_id) is not None:
            raise EnrsError("the regional Patient is read-only", 405, issue_code="not-supported")
        raise NotFound(f"Patient/{patient_id} not found (use ITI-104 to create an identity)")
    if resource.get("id") != patient_id:
        raise BadRequest(f"Patient.id must be {patient_id!r}, the id in the URL")
    return _feed(request, session, principal, resource, source.authority, source.ipp)


# --- PDQm ITI-78 -----------------------------------------------------------------------------


def _is_id(text: str) -> bool:
    """Whether ``text`` may be a source identity's id (the ids of ``Patient/{id}``)."""
    return text.isdigit() and len(text) <= 18


@router.get("/fhir/Patient", summary="PDQm ITI-78: search patients")
async def iti_78_search(
    request: Request, session: DbSession, _principal: PatientSearch
) -> FhirJSONResponse:
    """The active source identities matching ``family``, ``given``, ``birthdate``, ``gender``,
    ``identifier``, ``address-postalcode``, ``address-city``, ``_id``, paged (``_count``,
    ``_offset``), each as FR Core Patient with its RRI; the INS only of qualified identities.
    ``identifier=system|`` also restricts the identifiers returned to those domains. 400 for a
    malformed or unsupported parameter, 404 "targetSystem not found" for an unknown domain."""
    return await in_unit(request, partial(_search, request, session))


def _search(request: Request, session: Session) -> FhirJSONResponse:
    base = request.app.state.settings.fhir_base
    config = identity_config(request)
    page = search.iti_78_search_patients(
        session,
        config,
        list(request.query_params.multi_items()),
        base_url=base,
        strict=prefers_strict(request),
    )
    resources = [
        fhir.source_to_fhir(s, rri, access.source_identifiers(s, rri, config))
        for s, rri in page.rows
    ]
    if page.domains:  # ITI-78 case 2: only the identifiers of the domains asked for
        for resource in resources:
            kept = [i for i in resource["identifier"] if i["system"] in page.domains]
            resource["identifier"] = kept
    rris = {rri for _, rri in page.rows}
    _audit_patient(request, next(iter(rris)) if len(rris) == 1 else None)
    bundle = searchset_bundle(
        base_url=base,
        resource_type="Patient",
        resources=resources,
        parsed=page.parsed,
        total=page.total,
        has_next=page.has_next,
    )
    return FhirJSONResponse(bundle)


@router.get("/fhir/Patient/{patient_id}", summary="PDQm: read a patient")
async def iti_78_read_patient(
    request: Request, patient_id: str, session: DbSession, _principal: PatientRead
) -> FhirJSONResponse:
    """``Patient/{RRI}``: the regional view (``replaced-by`` link once merged);
    ``Patient/{id}``: a source identity, or, once inactive (merged), only that it is and the
    regional Patient that replaced it (:mod:`.access`, rule 2). 404 otherwise."""
    return await in_unit(request, partial(_read_patient, request, patient_id, session))


def _read_patient(request: Request, patient_id: str, session: Session) -> FhirJSONResponse:
    config = identity_config(request)
    # A source identity's id (digits) first: most reads are of one; an RRI is 16 hex digits.
    readable = access.readable_source(session, int(patient_id)) if _is_id(patient_id) else None
    if readable is not None:
        source, rri = readable
        _audit_patient(request, rri, f"Patient/{source.id}")
        shown = access.source_identifiers(source, rri, config)
        return FhirJSONResponse(fhir.source_to_fhir(source, rri, shown))
    patient = repository.patient_by_rri(session, patient_id) if len(patient_id) <= 32 else None
    if patient is not None:
        current = xref.follow_merges(session, patient)
        sources = access.patient_sources(session, patient.id)
        identifiers = access.patient_identifiers(sources, patient.rri, config)
        survivor = current.rri if current is not None and current.id != patient.id else None
        resource = fhir.regional_to_fhir(patient, sources, identifiers, survivor)
        _audit_patient(request, patient.rri, f"Patient/{patient.rri}")
        return FhirJSONResponse(resource)
    inactive = repository.source(session, int(patient_id)) if _is_id(patient_id) else None
    if inactive is None:
        raise NotFound(f"Patient/{patient_id} not found")
    home = repository.patient(session, inactive.patient_id)
    now = xref.follow_merges(session, home) if home is not None else None
    _audit_patient(request, now.rri if now else None, f"Patient/{inactive.id}")
    return FhirJSONResponse(fhir.inactive_source_to_fhir(inactive, now.rri if now else None))
