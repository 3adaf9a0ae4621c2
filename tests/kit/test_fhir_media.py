"""FHIR content negotiation, request-body parsing, OperationOutcome and the fhir+json response."""

from __future__ import annotations

import json

import pytest

from enrs.kit.errors import (
    BadRequest,
    EnrsError,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from enrs.kit.fhir import (
    FHIR_JSON,
    FhirJSONResponse,
    check_request_content_type,
    negotiate_format,
    operation_outcome,
    outcome_from_error,
    parse_resource_body,
)

# ---------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, None),
        ("", None),
        ("application/fhir+json", None),
        ("application/json", None),
        ("application/json+fhir", None),
        ("APPLICATION/FHIR+JSON; charset=utf-8", None),
        ("application/fhir+json; fhirVersion=4.0", None),
        ("*/*", None),
        ("application/*", None),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", None),
        ("application/fhir+xml;q=1.0, application/fhir+json;q=0.5", None),
        ("application/fhir+xml", "json"),
        ("application/fhir+xml", "application/fhir+json"),
        ("application/fhir+xml", "application/json"),
        (None, "application/fhir json"),  # unencoded "+" in the query string
        (None, "application/json+fhir"),
    ],
)
def test_negotiation_accepts_json(accept: str | None, fmt: str | None) -> None:
    negotiate_format(accept, fmt)


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("application/fhir+xml", None),
        ("application/xml", None),
        ("text/turtle", None),
        ("application/x-turtle", None),
        ("text/html", None),
        ("application/fhir+json;q=0", None),
        ("*/*;q=0", None),
        ("application/fhir+json; fhirVersion=3.0", None),
        ("garbage", None),
        (None, "xml"),
        (None, "application/fhir+xml"),
        (None, "ttl"),
        (None, "html"),
        ("application/fhir+json", "xml"),  # _format overrides Accept
        (None, "application/fhir+json; fhirVersion=5.0"),
    ],
)
def test_negotiation_refuses_other_formats(accept: str | None, fmt: str | None) -> None:
    with pytest.raises(NotAcceptable) as info:
        negotiate_format(accept, fmt)
    assert info.value.status == 406
    assert "JSON only" in info.value.message


@pytest.mark.parametrize(
    "content_type",
    [
        "application/fhir+json",
        "application/fhir+json; charset=utf-8",
        "application/fhir+json;charset=UTF-8",
        "application/json",
        "application/json; charset=utf-8",
        "application/json+fhir",
        "application/fhir+json; fhirVersion=4.0",
    ],
)
def test_request_content_type_accepted(content_type: str) -> None:
    check_request_content_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/fhir+xml",
        "application/xml",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/fhir+json; charset=latin-1",
        "application/fhir+json; fhirVersion=3.0",
    ],
)
def test_request_content_type_refused(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_request_content_type(content_type)
    assert info.value.status == 415


# ---------------------------------------------------------------------- body parsing


def test_parse_body_ok() -> None:
    raw = json.dumps({"resourceType": "Patient", "name": [{"family": "Hélène"}]}).encode()
    assert parse_resource_body(raw, max_bytes=1000, expected_type="Patient")["name"] == [
        {"family": "Hélène"}
    ]
    assert parse_resource_body(
        b'\xef\xbb\xbf{"resourceType":"Patient"}', max_bytes=100, expected_type=None
    )
    assert parse_resource_body(b'{"resourceType":"Observation"}', max_bytes=100, expected_type=None)


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        (b"", BadRequest, "empty"),
        (b"   \n", BadRequest, "empty"),
        (b'{"resourceType": "Patient", "name": "\xff"}', BadRequest, "UTF-8"),
        (b'{"resourceType": "Patient",\n  "active": tru}', BadRequest, "line 2, column 13"),
        (b'{"resourceType": "Patient"', BadRequest, "not valid JSON"),
        (b'{"resourceType": "Patient", "a": 1, "a": 2}', BadRequest, "duplicate property 'a'"),
        (b'{"resourceType": "Patient", "v": NaN}', BadRequest, "NaN"),
        (b"[]", BadRequest, "JSON object"),
        (b'"Patient"', BadRequest, "JSON object"),
        (b"{}", BadRequest, "resourceType"),
        (b'{"resourceType": 3}', BadRequest, "resourceType"),
        (b'{"resourceType": "patient"}', BadRequest, "resourceType"),
        (b'{"resourceType": "Observation"}', Unprocessable, "'Observation'"),
        (b"[" * 100_000 + b"]" * 100_000, BadRequest, "nested too deeply"),
    ],
)
def test_parse_body_errors(raw: bytes, error: type[EnrsError], fragment: str) -> None:
    with pytest.raises(error) as info:
        parse_resource_body(raw, max_bytes=1_000_000, expected_type="Patient")
    assert type(info.value) is error
    assert fragment in info.value.message


def test_parse_body_too_large() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse_resource_body(b'{"resourceType":"Patient"}', max_bytes=10, expected_type="Patient")
    assert info.value.status == 413
    assert "limit is 10 bytes" in info.value.message


# --------------------------------------------------------------- outcome and response


def test_operation_outcome() -> None:
    assert operation_outcome("boom") == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "boom"}],
    }
    outcome = operation_outcome(
        "bad", code="invalid", severity="warning", expression=["Patient.name"]
    )
    assert outcome["issue"][0]["expression"] == ["Patient.name"]
    with pytest.raises(ValueError):
        operation_outcome("x", severity="catastrophic")


def test_outcome_from_error() -> None:
    assert outcome_from_error(NotFound("Patient/1 is not known"))["issue"] == [
        {"severity": "error", "code": "not-found", "diagnostics": "Patient/1 is not known"}
    ]
    assert outcome_from_error(NotAcceptable("xml"))["issue"][0]["code"] == "not-supported"
    assert outcome_from_error(ServiceUnavailable("db down"))["issue"][0]["severity"] == "fatal"
    assert outcome_from_error(Unprocessable("x", issue_code="invalid"))["issue"][0]["code"] == (
        "invalid"
    )


def test_fhir_json_response() -> None:
    response = FhirJSONResponse({"resourceType": "Patient", "name": "Zoé"}, status_code=201)
    assert response.headers["content-type"] == f"{FHIR_JSON}; charset=utf-8"
    assert response.status_code == 201
    assert json.loads(bytes(response.body)) == {"resourceType": "Patient", "name": "Zoé"}
    assert "Zoé".encode() in bytes(response.body)
    with pytest.raises(ValueError):
        FhirJSONResponse({"v": float("nan")})
