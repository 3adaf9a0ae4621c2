"""FHIR ``searchset`` Bundles with paging links.

FHIR R4 bundle.html (``Bundle.type = searchset``, ``entry.fullUrl``, ``entry.search.mode``
match | include | outcome, ``entry.search.score``) and search.html#paging: the ``self`` link
echoes only the parameters the server actually used, ``first`` / ``previous`` / ``next`` /
``last`` links are absolute and opaque to clients, and warnings about ignored parameters
travel in an ``OperationOutcome`` entry with ``search.mode = outcome``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from enrs.kit.fhir.outcome import outcome_issue
from enrs.kit.fhir.search import ParsedSearch

__all__ = ["bundle_entry", "searchset_bundle"]

SEARCH_MODES = frozenset({"match", "include", "outcome"})


def bundle_entry(
    resource: dict[str, Any],
    *,
    base_url: str,
    mode: str = "match",
    score: float | None = None,
) -> dict[str, Any]:
    """One searchset entry: ``fullUrl`` ``{base}/{type}/{id}``, the resource and its mode."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown Bundle.entry.search.mode {mode!r}")
    resource_type, ident = resource.get("resourceType"), resource.get("id")
    if not isinstance(resource_type, str) or not isinstance(ident, str):
        raise ValueError("a search result needs a resourceType and an id")
    search: dict[str, Any] = {"mode": mode}
    if score is not None:
        search["score"] = score
    return {
        "fullUrl": f"{base_url.rstrip('/')}/{resource_type}/{ident}",
        "resource": resource,
        "search": search,
    }


def _ignored_outcome(ignored: Sequence[str]) -> dict[str, Any]:
    issues = [
        outcome_issue(
            f"Search parameter {name!r} is not supported and was ignored",
            code="not-supported",
            severity="warning",
        )
        for name in ignored
    ]
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": {"resourceType": "OperationOutcome", "issue": issues},
        "search": {"mode": "outcome"},
    }


def searchset_bundle(
    *,
    base_url: str,
    resource_type: str,
    resources: list[dict[str, Any]],
    parsed: ParsedSearch,
    total: int | None,
    has_next: bool,
    included: list[dict[str, Any]] | None = None,
    scores: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """A FHIR R4 ``searchset`` Bundle for one page of results.

    ``base_url`` is the FHIR base (e.g. ``https://enrs.example/fhir``); links are
    ``{base_url}/{resource_type}?{used parameters}&_count=..&_offset=..``, percent-encoded.
    ``next`` appears only when ``has_next`` (and the offset stays within the spec's
    ``max_offset``), ``previous`` only after the first page, ``last`` only when ``total`` is
    known. ``scores`` (parallel to ``resources``) fills ``entry.search.score``.
    """
    if scores is not None and len(scores) != len(resources):
        raise ValueError("scores must be parallel to resources")
    base = base_url.rstrip("/")
    count, offset = parsed.count, parsed.offset

    def link(relation: str, at: int) -> dict[str, str]:
        return {"relation": relation, "url": f"{base}/{resource_type}?{parsed.query_string(at)}"}

    links = [link("self", offset), link("first", 0)]
    if count and offset:
        links.append(link("previous", max(0, offset - count)))
    if count and has_next and offset + count <= parsed.spec.max_offset:
        links.append(link("next", offset + count))
    if count and total is not None:
        last = max(0, (total - 1) // count * count)
        if last <= parsed.spec.max_offset:
            links.append(link("last", last))

    entries = [
        bundle_entry(res, base_url=base, score=scores[i] if scores is not None else None)
        for i, res in enumerate(resources)
    ]
    entries.extend(bundle_entry(res, base_url=base, mode="include") for res in included or [])
    if parsed.ignored:
        entries.append(_ignored_outcome(parsed.ignored))

    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:  # FHIR JSON arrays are never empty (json.html)
        bundle["entry"] = entries
    return bundle
