"""Content negotiation and request-body parsing for the FHIR REST API.

FHIR R4 http.html, "Content Types and encodings" and "General parameters": the JSON mime
type is ``application/fhir+json`` (``application/json`` and the DSTU2-era
``application/json+fhir`` are tolerated), the ``_format`` query parameter overrides the
``Accept`` header, and a server SHALL return ``406 Not Acceptable`` for a format it does not
support and ``415 Unsupported Media Type`` for a request body it cannot read. An optional
``fhirVersion`` mime-type parameter that names another FHIR version is likewise refused
(http.html#version-parameter). This server produces and consumes JSON only.
"""

from __future__ import annotations

import json
from typing import Any

from enrs.kit.errors import (
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)

__all__ = [
    "check_request_content_type",
    "negotiate_format",
    "parse_resource_body",
]

_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_FORMAT_ALIASES = frozenset({"json", *_JSON_TYPES})
_OUR_FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})
_JSON_ONLY = "This server produces FHIR JSON only (application/fhir+json)"


def _parse_media(text: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; k=v; ...`` into a lower-cased type and its parameters."""
    parts = text.split(";")
    media = parts[0].strip().lower()
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return media, params


def _version_ok(params: dict[str, str]) -> bool:
    version = params.get("fhirversion")
    return version is None or version in _OUR_FHIR_VERSIONS


def _range_accepts_json(media: str, params: dict[str, str]) -> bool:
    if media in ("*/*", "application/*"):
        return True
    return media in _JSON_TYPES and _version_ok(params)


def negotiate_format(accept_header: str | None, format_param: str | None) -> None:
    """Check that the client accepts FHIR JSON, else raise :class:`NotAcceptable` (406).

    ``_format`` (``json``, ``application/fhir+json``, ``application/json``) wins over
    ``Accept``; ``xml``, ``ttl``, ``html`` and anything else are refused. Without ``_format``,
    a missing or empty ``Accept`` accepts anything; otherwise at least one media range with
    a non-zero ``q`` must cover JSON (``application/fhir+json``, ``application/json``,
    ``application/json+fhir``, ``application/*`` or ``*/*``).
    """
    if format_param is not None and format_param.strip():
        # An unencoded "+" in a query string decodes to a space: "application/fhir json".
        media, params = _parse_media(format_param.strip())
        media = media.replace(" ", "+")
        if media in _FORMAT_ALIASES and _version_ok(params):
            return
        raise NotAcceptable(f"{_JSON_ONLY}; _format={format_param!r} is not supported")
    if accept_header is None or not accept_header.strip():
        return
    for item in accept_header.split(","):
        if not item.strip():
            continue
        media, params = _parse_media(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0 and _range_accepts_json(media, params):
            return
    raise NotAcceptable(f"{_JSON_ONLY}; Accept: {accept_header!r} does not allow it")


def check_request_content_type(content_type: str | None) -> None:
    """Check the ``Content-Type`` of a request body, else raise :class:`UnsupportedMediaType`.

    Accepts ``application/fhir+json``, ``application/json`` and ``application/json+fhir``,
    with an optional ``charset=utf-8`` and ``fhirVersion=4.0`` (http.html#mime-type).
    """
    if content_type is None or not content_type.strip():
        raise UnsupportedMediaType("A Content-Type header is required; send application/fhir+json")
    media, params = _parse_media(content_type)
    if media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported; this server reads application/fhir+json"
        )
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; FHIR JSON is UTF-8")
    if not _version_ok(params):
        raise UnsupportedMediaType(
            f"fhirVersion {params['fhirversion']!r} is not supported; this server speaks 4.0"
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate property {key!r}")
        obj[key] = value
    return obj


def _is_resource_type(value: str) -> bool:
    return value.isascii() and value.isalpha() and value[:1].isupper()


def parse_resource_body(raw: bytes, *, max_bytes: int, expected_type: str | None) -> dict[str, Any]:
    """Decode a FHIR JSON resource from a request body (json.html, http.html#create).

    Refusals, each with a diagnostic naming the problem:

    * more than ``max_bytes`` bytes: :class:`PayloadTooLarge` (413);
    * empty body, invalid UTF-8, invalid JSON (with line and column), duplicate property
      names, ``NaN``/``Infinity``, or a JSON value that is not an object: :class:`BadRequest`;
    * no string ``resourceType``: :class:`BadRequest`;
    * a ``resourceType`` other than ``expected_type``: :class:`Unprocessable` (422).
    """
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"Request body is {len(raw)} bytes; the limit is {max_bytes} bytes")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise BadRequest("Request body is empty; a FHIR JSON resource is required")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"Request body is not valid UTF-8 (byte offset {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"Request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise BadRequest(f"Request body is not valid FHIR JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("Request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(
            f"Request body must be a JSON object (a FHIR resource), not a {type(data).__name__}"
        )
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not _is_resource_type(resource_type):
        raise BadRequest("Resource has no valid 'resourceType' property")
    if expected_type is not None and resource_type != expected_type:
        raise Unprocessable(
            f"Resource type {resource_type!r} does not match the endpoint type {expected_type!r}",
            issue_code="invalid",
        )
    return data
