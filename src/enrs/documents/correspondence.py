"""The ANS CI-SIS correspondence tables (*tables d'association*) that derive a CDA document's
XDS ``classCode`` and ``formatCode`` when it arrives without them (HL7 v2 intake; the CI-SIS
HL7 v2 volets for transmitting CDA documents map classCode by ASS_X04, formatCode by ASS_A11):

- ``ASS_X04-CorrespondanceType-Classe-CISIS``: document type (JDV_J07: LOINC, TRE_A05, ASTM)
  to class (JDV_J06: TRE_A03, and URN for a signature) -- :func:`class_of_type`;
- ``ASS_A11-CorresModeleCDA-XdsFormatCode-CISIS``: CDA model (``templateId``) to format
  (JDV_J10) -- :func:`format_of_model`;
- ``ASS_12_CorresMediaTypeCDANonStructure-XdsFormatCode-CISIS``: media type of a CDA level 1
  body (``nonXMLBody/text@mediaType``) to format (JDV_J10) -- :func:`format_of_media`.

The tables are data: one JSON document each under ``valuesets/`` (name, url, version, date,
source, the code systems with their OIDs, and the pairs). A system is accepted as its FHIR
canonical URL, as ``urn:oid:…`` or as the bare OID (or XDS codingScheme, ``ASTM``/``URN``); the
table between those forms is built from the systems the shipped tables declare.

Only pairs the ANS marks ``equivalent`` (or ``equal``) derive a code. The XDS-SD model
``1.3.6.1.4.1.19376.1.2.20`` maps ``narrower`` to five formats in ASS_A11, so a CDA level 1
document gets its format from its body's media type, not from its model.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

URN_OID = "urn:oid:"
TYPE_TO_CLASS, MODEL_TO_FORMAT, MEDIA_TO_FORMAT = "ASS_X04", "ASS_A11", "ASS_12"
_DERIVING = frozenset({"equivalent", "equal"})


@dataclass(frozen=True)
class Target:
    """A derived code; ``system`` is the FHIR canonical URL of its code system."""

    system: str
    code: str
    display: str


@dataclass(frozen=True)
class Pair:
    """One row of a table: ``source_system|source_code`` maps to ``target``."""

    source_system: str
    source_code: str
    target: Target
    equivalence: str


@dataclass(frozen=True)
class Table:
    """A shipped correspondence table, as published (pairs in the published order)."""

    name: str
    url: str
    version: str
    pairs: tuple[Pair, ...]
    systems: Mapping[str, str | None]  # canonical URL -> OID (or ASTM / URN), None if none

    @functools.cached_property
    def derived(self) -> Mapping[tuple[str, str], Target]:
        """``(source system URL, source code)`` -> target, for sources with exactly one
        ``equivalent`` target; a source mapped ambiguously derives nothing."""
        found: dict[tuple[str, str], list[Target]] = {}
        for pair in self.pairs:
            key = (pair.source_system, pair.source_code)
            targets = found.setdefault(key, [])
            if pair.equivalence in _DERIVING:
                targets.append(pair.target)
        return {key: targets[0] for key, targets in found.items() if len(targets) == 1}


def class_of_type(system: str, code: str) -> Target | None:
    """The XDS classCode (JDV_J06) of document type ``system|code`` by ASS_X04, or None when the
    table has no such type. ``system`` is a canonical URL, ``urn:oid:…`` or a bare OID."""
    url = _canonical_system(system)
    return table(TYPE_TO_CLASS).derived.get((url, code.strip()))


def format_of_model(template_ids: Iterable[str]) -> Target | None:
    """The XDS formatCode (JDV_J10) of the first of a CDA document's ``templateId`` roots (in
    document order; bare or ``urn:oid:``) that ASS_A11 maps to one format; None if none does
    (the CI-SIS header templateId is not a model; an XDS-SD document needs
    :func:`format_of_media`)."""
    by_model = _by_code(MODEL_TO_FORMAT)
    for template_id in template_ids:
        target = by_model.get(_bare_oid(template_id))
        if target is not None:
            return target
    return None


def format_of_media(media_type: str) -> Target | None:
    """The XDS formatCode (JDV_J10) of a CDA level 1 body of ``media_type`` by ASS_12 (type and
    subtype only: case and parameters such as ``; charset=UTF-8`` are ignored), or None."""
    essence = media_type.split(";", 1)[0].strip().lower()
    return _by_code(MEDIA_TO_FORMAT).get(essence)


@functools.cache
def table(name: str) -> Table:
    """The shipped table ``name`` (``ASS_X04``, ``ASS_A11``, ``ASS_12``), read once."""
    path = resources.files("enrs.documents").joinpath("valuesets", f"{name}.json")
    return _read(json.loads(path.read_text(encoding="utf-8")))


def _read(document: Mapping[str, Any]) -> Table:
    systems = {
        str(s["url"]): (None if s["oid"] is None else str(s["oid"])) for s in document["systems"]
    }
    pairs = tuple(
        Pair(
            source_system=str(p["source"]["system"]),
            source_code=str(p["source"]["code"]),
            target=Target(
                str(p["target"]["system"]), str(p["target"]["code"]), str(p["target"]["display"])
            ),
            equivalence=str(p["equivalence"]),
        )
        for p in document["pairs"]
    )
    undeclared = {p.source_system for p in pairs} | {p.target.system for p in pairs}
    undeclared -= systems.keys()
    if undeclared or not pairs:
        raise ValueError(f"{document['name']}: no pairs, or undeclared systems {undeclared}")
    return Table(
        str(document["name"]), str(document["url"]), str(document["version"]), pairs, systems
    )


@functools.cache
def _by_code(name: str) -> Mapping[str, Target]:
    """The derived pairs of a table whose source codes are unique on their own (OIDs, media
    types), keyed by source code alone."""
    derived = table(name).derived
    by_code = {code: target for (_, code), target in derived.items()}
    if len(by_code) != len(derived):
        raise ValueError(f"{name}: a source code appears under two systems")
    return by_code


@functools.cache
def _system_aliases() -> Mapping[str, str]:
    """Every form of every system the shipped tables declare (URL, OID) -> its canonical URL."""
    aliases: dict[str, str] = {}
    for name in (TYPE_TO_CLASS, MODEL_TO_FORMAT, MEDIA_TO_FORMAT):
        for url, oid in table(name).systems.items():
            for alias in (url, oid):
                if alias is not None and aliases.setdefault(alias, url) != url:
                    raise ValueError(f"{alias} names both {aliases[alias]} and {url}")
    return aliases


def _canonical_system(system: str) -> str:
    """``system`` as its canonical URL when a shipped table declares it, else unchanged."""
    system = system.strip()
    aliases = _system_aliases()
    return aliases.get(system) or aliases.get(_bare_oid(system), system)


def _bare_oid(value: str) -> str:
    value = value.strip()
    return value[len(URN_OID) :] if value.lower().startswith(URN_OID) else value
