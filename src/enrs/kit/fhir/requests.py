"""What every FHIR route reads from its request: the negotiated format, ``Prefer:
handling=strict``, and the resource in the body (FHIR R4 http.html, search.html#errors)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from enrs.kit.fhir.media import check_request_content_type, negotiate_format, parse_resource_body


async def fhir_format(request: Request) -> None:
    """Refuse (406) an Accept header or ``_format`` asking for something other than JSON
    (``async``: no thread hop for this check)."""
    negotiate_format(request.headers.get("accept"), request.query_params.get("_format"))


FhirFormat = Depends(fhir_format)


def prefers_strict(request: Request) -> bool:
    """``Prefer: handling=strict`` (FHIR search.html#errors)."""
    prefer = request.headers.get("prefer", "")
    return any(p.strip() == "handling=strict" for p in prefer.split(","))


async def read_resource(request: Request, expected_type: str | None) -> dict[str, Any]:
    """The request's FHIR JSON resource, checked for media type, size and syntax
    (415 / 413 / 400 / 422 as OperationOutcome)."""
    check_request_content_type(request.headers.get("content-type"))
    limit: int = request.app.state.settings.max_body_bytes
    return parse_resource_body(await request.body(), max_bytes=limit, expected_type=expected_type)
