"""MHD resources as the repository gives them: ``DocumentReference`` (ITI-67 results) and the
SubmissionSet ``List`` (ITI-66 results), and the search parameters of both.

A resource is returned as it was submitted, with what the server owns set: its id and
version, its status, the subject (the regional patient ``Patient/{RRI}`` it is filed for now,
merges followed), the attachment's ``url`` (ITI-68: ``{base}/Binary/{id}``), size and hash."""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from enrs.documents.models import DocumentEntry, SubmissionSet
from enrs.documents.terminology import Binding, Terminology
from enrs.kit.fhir.search import SearchParam, SearchSpec
from enrs.kit.fhir.search_values import ReferenceValue, TokenValue

D, S = DocumentEntry, SubmissionSet
SP = "http://hl7.org/fhir/SearchParameter/"
MHD = "https://profiles.ihe.net/ITI/MHD/SearchParameter/"
RPPS_OID = "1.2.250.1.71.4.2.1"


def _bound(binding: Binding, column: Any) -> Any:
    """A token on a code column whose system the value set gives."""

    def match(value: TokenValue) -> ColumnElement[bool]:
        if value.code is None:
            return column.is_not(None)  # type: ignore[no-any-return]
        if value.system is not None:
            systems = {c.system for c in Terminology.load().concepts(binding)}
            if Terminology.load().canonical_system(value.system) not in systems:
                return sa.false()
        return column == value.code  # type: ignore[no-any-return]

    return match


def _security_label(value: TokenValue) -> ColumnElement[bool]:
    if value.code is None:
        return sa.true()
    if value.code == value.code.upper() and "_" in value.code:  # a DMP visibility code
        return D.visibility.contains(value.code, autoescape=True)
    return D.confidentiality == value.code


def _author_identifier(value: TokenValue) -> ColumnElement[bool]:
    if value.system not in (None, f"urn:oid:{RPPS_OID}") or not value.code:
        return sa.false()
    code = value.code
    return D.author_rpps == (code[1:] if len(code) == 12 and code.startswith("8") else code)


def _author(value: ReferenceValue) -> ColumnElement[bool]:
    return D.author_reference == f"{value.type or 'Practitioner'}/{value.id}"


def _patient_applied(_value: Any) -> ColumnElement[bool]:
    # The patient is resolved by the endpoint through the identity server; the search's
    # base statement (the access rule) already holds only that patient's documents.
    return sa.true()


def _patient_params() -> dict[str, SearchParam]:
    return {
        "patient": SearchParam.reference(
            targets=["Patient"],
            match=_patient_applied,
            doc="Patient/{RRI} (required, or patient.identifier)",
            definition=f"{SP}clinical-patient",
        ),
        "patient.identifier": SearchParam.token(
            match=_patient_applied,
            doc="an identifier of the patient: urn:oid:{domain}|{IPP}, the INS, the RRI",
        ),
    }


@cache
def document_spec() -> SearchSpec:
    """ITI-67: find document references."""
    params = {
        **_patient_params(),
        "status": SearchParam.token(
            D.status, fixed_system="http://hl7.org/fhir/document-reference-status"
        ),
        "type": SearchParam.token(D.type_code, system=D.type_system),
        "category": SearchParam.token(D.class_code, system=D.class_system),
        "date": SearchParam.date(D.date),
        "period": SearchParam.date(D.period_start, end=D.period_end),
        "author": SearchParam.reference(
            targets=["Practitioner", "PractitionerRole"], match=_author
        ),
        "author.identifier": SearchParam.token(match=_author_identifier, doc="the author's RPPS"),
        "facility": SearchParam.token(match=_bound(Binding.FACILITY_TYPE, D.facility_type)),
        "setting": SearchParam.token(match=_bound(Binding.PRACTICE_SETTING, D.practice_setting)),
        "security-label": SearchParam.token(match=_security_label),
        "format": SearchParam.token(match=_bound(Binding.FORMAT, D.format_code)),
    }
    return SearchSpec(
        "DocumentReference",
        params,
        sorts={"date": D.date, "_lastUpdated": D.updated_at},
        default_sort="-date",
        tiebreaker=D.id,
        max_count=200,
    )


@cache
def submission_set_spec() -> SearchSpec:
    """ITI-66: find document lists (SubmissionSets)."""
    params = {
        **_patient_params(),
        "status": SearchParam.token(S.status),
        "date": SearchParam.date(S.date),
        "code": SearchParam.token(
            match=lambda v: sa.true() if v.code in (None, "submissionset") else sa.false()
        ),
        "identifier": SearchParam.token(
            match=lambda v: S.unique_id == (v.code or "").removeprefix("urn:oid:")
        ),
    }
    return SearchSpec("List", params, sorts={"date": S.date}, default_sort="-date", tiebreaker=S.id)


def _version(resource: dict[str, Any], version: int, updated: Any) -> None:
    resource["meta"] = {
        **(resource.get("meta") or {}),
        "versionId": str(version),
        "lastUpdated": updated.isoformat().replace("+00:00", "Z"),
    }


def document_reference(
    entry: DocumentEntry, resource: dict[str, Any], rri: str, base: str
) -> dict[str, Any]:
    """The stored DocumentReference with the server's elements set."""
    resource = dict(resource)
    resource.pop("id", None)
    resource = {"resourceType": "DocumentReference", "id": entry.resource_id, **resource}
    _version(resource, entry.version, entry.updated_at)
    resource["status"] = entry.status
    resource["subject"] = {"reference": f"Patient/{rri}"}
    content = [dict(c) for c in resource.get("content") or [{}]]
    attachment = dict(content[0].get("attachment") or {})
    attachment.update(
        url=f"{base}/Binary/{entry.resource_id}",
        size=entry.size,
        hash=base64.b64encode(bytes.fromhex(entry.sha1)).decode(),
        contentType=entry.mime_type,
    )
    attachment.pop("data", None)
    content[0] = {**content[0], "attachment": attachment}
    resource["content"] = content
    return resource


def submission_set(
    sset: SubmissionSet, resource: dict[str, Any], rri: str, documents: list[str]
) -> dict[str, Any]:
    """The stored SubmissionSet List, its entries pointing at the stored documents."""
    resource = dict(resource)
    resource.pop("id", None)
    resource = {"resourceType": "List", "id": sset.resource_id, **resource}
    _version(resource, 1, sset.created_at)
    resource["status"] = sset.status
    resource["subject"] = {"reference": f"Patient/{rri}"}
    resource["entry"] = [{"item": {"reference": f"DocumentReference/{d}"}} for d in documents]
    return resource
