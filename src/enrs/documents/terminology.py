"""The French document-sharing value sets (CI-SIS *jeux de valeurs*) and the codes checked
against them, for the document repository (IHE MHD as PDSm profiles it, and the DMP's XDS.b).

The value sets are data, shipped as one JSON document per set under ``valuesets/`` (name, OID,
FHIR canonical url, published version and date, where it was taken from, the code systems it
draws on with their OIDs, and its concepts). Two scopes:

- ``CI-SIS``: the set a metadata element is bound to (JDV_J02 facility type, J04 practice
  setting, J06 class, J07 type, J08 confidentiality, J10 format); exactly one per binding.
- ``DMP``: the DMP's restriction of that set, where one is shipped (J57 class, J58
  confidentiality, J60 format). J61 (facility type), J62 (practice setting) and J66 (type) are
  not shipped: for those bindings :meth:`Terminology.dmp_accepts` accepts every concept.

A concept's ``system`` is always the FHIR canonical URL (``http://loinc.org``,
``https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument``); XDS and
CDA write the same system as an OID (``2.16.840.1.113883.6.1``, ``1.2.250.1.213.1.1.4.1``). The
table between the two is built from the code systems the shipped sets declare, nowhere else.
Two ANS systems have a word, not an OID, in XDS: ``ASTM`` (TRE_A12) and ``URN`` (TRE_A10).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

from enrs.kit.errors import Unprocessable

URN_OID = "urn:oid:"
CI_SIS, DMP = "CI-SIS", "DMP"


class Binding(StrEnum):
    """A coded metadata element of a document and the CI-SIS set it is bound to."""

    TYPE = "type"  # JDV_J07, DocumentReference.type / XDS typeCode
    CLASS = "class"  # JDV_J06, DocumentReference.category / classCode
    FACILITY_TYPE = "facility-type"  # JDV_J02, context.facilityType / healthcareFacilityTypeCode
    PRACTICE_SETTING = "practice-setting"  # JDV_J04, context.practiceSetting
    CONFIDENTIALITY = "confidentiality"  # JDV_J08, securityLabel / confidentialityCode
    FORMAT = "format"  # JDV_J10, content.format / formatCode


@dataclass(frozen=True)
class Concept:
    """A code of a shipped value set; ``system`` is the FHIR canonical URL."""

    system: str
    code: str
    display: str

    def oid(self) -> str:
        """The system as XDS and CDA write it (an OID, or ``ASTM`` / ``URN``)."""
        return Terminology.load().oid_of(self.system)


class UnknownCode(Unprocessable):
    """A code that is not in the value set its element is bound to."""

    issue_code = "code-invalid"

    def __init__(self, message: str, *, binding: Binding, system: str | None, code: str) -> None:
        super().__init__(message)
        self.binding = binding
        self.system = system
        self.code = code


class UnknownSystem(Unprocessable):
    """A code system no shipped value set declares, so it has no known OID."""

    issue_code = "code-invalid"


@dataclass(frozen=True)
class ValueSet:
    """One shipped value set."""

    name: str
    oid: str
    url: str
    version: str
    date: str
    binding: Binding
    scope: str
    concepts: tuple[Concept, ...]

    def keys(self) -> frozenset[tuple[str, str]]:
        return frozenset((c.system, c.code) for c in self.concepts)


def _bare_oid(system: str) -> str:
    return system[len(URN_OID) :] if system.startswith(URN_OID) else system


def _read(document: Mapping[str, Any], systems: dict[str, str]) -> ValueSet:
    """One value-set document; adds its code systems to ``systems`` (URL -> OID)."""
    name = str(document["name"])
    declared: set[str] = set()
    for entry in document["systems"]:
        url, oid = str(entry["url"]), str(entry["oid"])
        if systems.setdefault(url, oid) != oid:
            raise ValueError(f"{name}: {url} has OID {oid}, another set gives {systems[url]}")
        declared.add(url)
    concepts = tuple(
        Concept(str(c["system"]), str(c["code"]), str(c["display"])) for c in document["concepts"]
    )
    undeclared = {c.system for c in concepts} - declared
    if undeclared or not concepts:
        raise ValueError(f"{name}: no concepts, or systems not declared: {sorted(undeclared)}")
    if document["scope"] not in (CI_SIS, DMP):
        raise ValueError(f"{name}: scope {document['scope']!r} is neither {CI_SIS} nor {DMP}")
    return ValueSet(
        name=name,
        oid=str(document["oid"]),
        url=str(document["url"]),
        version=str(document["version"]),
        date=str(document["date"]),
        binding=Binding(document["binding"]),
        scope=str(document["scope"]),
        concepts=concepts,
    )


class Terminology:
    """The shipped value sets, indexed for checking codes and translating systems."""

    def __init__(self, value_sets: Iterable[ValueSet], systems: Mapping[str, str]) -> None:
        self._sets: dict[Binding, ValueSet] = {}
        self._dmp: dict[Binding, ValueSet] = {}
        for vs in value_sets:
            into = self._sets if vs.scope == CI_SIS else self._dmp
            if vs.binding in into:
                raise ValueError(f"{vs.name} and {into[vs.binding].name}: two {vs.scope} sets")
            into[vs.binding] = vs
        missing = [b.value for b in Binding if b not in self._sets]
        if missing:
            raise ValueError(f"no CI-SIS value set for {', '.join(missing)}")
        self._index = {
            b: {(c.system, c.code): c for c in vs.concepts} for b, vs in self._sets.items()
        }
        self._dmp_keys = {b: vs.keys() for b, vs in self._dmp.items()}
        self._oid_of = dict(systems)
        self._url_of = {oid: url for url, oid in systems.items()}
        if len(self._url_of) != len(self._oid_of):
            raise ValueError("two code systems share an OID")

    @classmethod
    def from_documents(cls, documents: Iterable[Mapping[str, Any]]) -> Terminology:
        """Value sets given as documents shaped like the shipped JSON files."""
        systems: dict[str, str] = {}
        value_sets = [_read(document, systems) for document in documents]
        return cls(value_sets, systems)

    @classmethod
    def load(cls) -> Terminology:
        """The value sets shipped with the package (read once per process)."""
        return _shipped()

    def value_set(self, binding: Binding, *, dmp: bool = False) -> ValueSet | None:
        """The CI-SIS set of ``binding``, or with ``dmp`` its DMP restriction (None if none)."""
        return (self._dmp if dmp else self._sets).get(binding)

    def concepts(self, binding: Binding) -> tuple[Concept, ...]:
        """The concepts of the CI-SIS set ``binding`` is bound to, in the published order."""
        return self._sets[binding].concepts

    def canonical_system(self, system: str) -> str:
        """A system given as canonical URL, ``urn:oid:…`` or bare OID, as its canonical URL.

        An unknown system is returned unchanged."""
        if system in self._oid_of:
            return system
        return self._url_of.get(_bare_oid(system), system)

    def oid_of(self, system: str) -> str:
        """The OID that XDS and CDA write for ``system`` (URL, ``urn:oid:…`` or OID).

        Raises :class:`UnknownSystem` for a system no shipped set declares."""
        url = self.canonical_system(system)
        if url not in self._oid_of:
            raise UnknownSystem(f"{system} is not a code system of the shipped value sets")
        return self._oid_of[url]

    def check(self, binding: Binding, system: str | None, code: str) -> Concept:
        """The concept ``system|code`` of the set ``binding`` is bound to.

        ``system`` may be the canonical URL, ``urn:oid:…`` or a bare OID; ``None`` is accepted
        when ``code`` appears under one system only in the set. Raises :class:`UnknownCode`,
        whose message names the binding, the system, the code and the set."""
        vs = self._sets[binding]
        if system is None:
            found = [c for c in vs.concepts if c.code == code]
            if len(found) == 1:
                return found[0]
            why = "is not in" if not found else "is ambiguous (give its system) in"
            raise UnknownCode(
                f"{binding}: {code} {why} {vs.name}", binding=binding, system=None, code=code
            )
        url = self.canonical_system(system)
        concept = self._index[binding].get((url, code))
        if concept is not None:
            return concept
        message = f"{binding}: {url}|{code} is not in {vs.name}"
        elsewhere = sorted(c.system for c in vs.concepts if c.code == code)
        if elsewhere:
            message += f" (it is under {', '.join(elsewhere)})"
        raise UnknownCode(message, binding=binding, system=system, code=code)

    def dmp_accepts(self, binding: Binding, concept: Concept) -> bool:
        """Whether the DMP's restriction of ``binding`` holds ``concept``; True when no
        restriction set is shipped for that binding (J61, J62, J66 today)."""
        keys = self._dmp_keys.get(binding)
        if keys is None:
            return True
        return (self.canonical_system(concept.system), concept.code) in keys


@functools.cache
def _shipped() -> Terminology:
    folder = resources.files("enrs.documents").joinpath("valuesets")
    documents = [
        json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.startswith("JDV_") and entry.name.endswith(".json")
    ]
    return Terminology.from_documents(documents)
