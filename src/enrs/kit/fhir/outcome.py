"""FHIR ``OperationOutcome`` builders and the ``application/fhir+json`` response class.

FHIR R4 (4.0.1) operationoutcome.html: an outcome is a list of issues, each with a
``severity`` (fatal | error | warning | information), an ``IssueType`` ``code`` and
human-readable ``diagnostics``. http.html ("Content Types and encodings") fixes the JSON
mime type to ``application/fhir+json``; the content is always UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from enrs.kit.errors import EnrsError

__all__ = [
    "FHIR_JSON",
    "FHIR_JSON_UTF8",
    "FhirJSONResponse",
    "operation_outcome",
    "outcome_from_error",
    "outcome_issue",
]

FHIR_JSON = "application/fhir+json"
"""The R4 JSON mime type (http.html#mime-type)."""

FHIR_JSON_UTF8 = "application/fhir+json; charset=utf-8"
"""The ``Content-Type`` header value of every FHIR JSON response."""

SEVERITIES = frozenset({"fatal", "error", "warning", "information"})


def outcome_issue(
    diagnostics: str,
    *,
    code: str = "processing",
    severity: str = "error",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    """One ``OperationOutcome.issue`` element (operationoutcome.html)."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown OperationOutcome severity {severity!r}")
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = list(expression)
    return issue


def operation_outcome(
    diagnostics: str,
    *,
    code: str = "processing",
    severity: str = "error",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    """An ``OperationOutcome`` resource with a single issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [outcome_issue(diagnostics, code=code, severity=severity, expression=expression)],
    }


def outcome_from_error(err: EnrsError) -> dict[str, Any]:
    """Render a platform error as an ``OperationOutcome``.

    The issue code is the error's FHIR ``IssueType`` (``err.issue_code``); server-side
    failures (5xx) are ``fatal``, everything else ``error``. An optional ``expression``
    attribute (list of FHIRPath strings) on the error is copied into the issue.
    """
    expression = getattr(err, "expression", None)
    return operation_outcome(
        err.message,
        code=err.issue_code,
        severity="fatal" if err.status >= 500 else "error",
        expression=list(expression) if expression else None,
    )


class FhirJSONResponse(JSONResponse):
    """A JSON response labelled ``application/fhir+json; charset=utf-8`` (http.html#mime-type).

    Rendering matches Starlette's ``JSONResponse`` (compact, UTF-8, no ``NaN``), as FHIR
    JSON forbids ``NaN``/``Infinity`` (json.html).
    """

    media_type = FHIR_JSON_UTF8

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("utf-8")
