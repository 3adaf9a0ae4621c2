"""Shared FHIR R4 (4.0.1) plumbing: outcomes, content negotiation, search, Bundles, metadata.

Domain-free: services build on it, it never imports a service. See FHIR R4 http.html,
search.html, bundle.html and capabilitystatement.html.
"""

from enrs.kit.fhir.bundle import bundle_entry, searchset_bundle
from enrs.kit.fhir.capability import FHIR_VERSION, CapabilityRegistry
from enrs.kit.fhir.media import check_request_content_type, negotiate_format, parse_resource_body
from enrs.kit.fhir.outcome import (
    FHIR_JSON,
    FHIR_JSON_UTF8,
    FhirJSONResponse,
    operation_outcome,
    outcome_from_error,
)
from enrs.kit.fhir.search import (
    ParsedSearch,
    SearchParam,
    SearchSpec,
    SearchStatements,
    apply_search,
    count_stmt,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.fhir.search_params import (
    date_clause,
    normalize_text,
    number_clause,
    reference_clause,
    string_clause,
    token_clause,
    uri_clause,
)
from enrs.kit.fhir.search_values import (
    DateValue,
    NumberValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

__all__ = [
    "FHIR_JSON",
    "FHIR_JSON_UTF8",
    "FHIR_VERSION",
    "CapabilityRegistry",
    "DateValue",
    "FhirJSONResponse",
    "NumberValue",
    "ParsedSearch",
    "ReferenceValue",
    "SearchParam",
    "SearchSpec",
    "SearchStatements",
    "StringValue",
    "TokenValue",
    "UriValue",
    "apply_search",
    "bundle_entry",
    "check_request_content_type",
    "count_stmt",
    "date_clause",
    "negotiate_format",
    "normalize_text",
    "number_clause",
    "operation_outcome",
    "outcome_from_error",
    "parse_resource_body",
    "parse_search",
    "reference_clause",
    "search_total",
    "searchset_bundle",
    "split_page",
    "string_clause",
    "token_clause",
    "uri_clause",
]
