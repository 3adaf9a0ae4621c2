"""FR Core Patient (FR Core 2.x, FHIR R4) ⇄ the identity service's records.

Reading (PIXm ITI-104 feed, PDQm ITI-119 match input) is lenient: the birth name is the name
with use ``official`` (else one without use, else the ``usual`` one), its first ``given`` is the
first birth first name and the full list comes from the ``fr-core-patient-birth-list-given-name``
extension (on the name, or on the Patient) split on spaces, else from every ``given``; the used
name is the ``usual`` one; the INS is the identifier whose system is an INS OID (NIR before NIA,
``use = old`` last); identity attributes DOUT/FICT/HOMA are read from any sub-extension of
``fr-core-identity-reliability`` (``identityStatus``, ``comment``, ...). A structure that cannot
be read raises :class:`Unprocessable` (422) naming the FHIRPath.

Writing is strict FR Core, of what :mod:`enrs.identity.access` lets the caller see: ``PI``
(``use = usual``, ``old`` once deactivated), the INS slice with its FR Core type code, and the
regional identifier as an ``RRI`` identifier (v2-0203 ``RRI``, ``use = secondary``) in the
namespace ``urn:oid:{ENRS_OID_ROOT}.1`` (``IdentityConfig.rri_system``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import date
from typing import Any

from pydantic import ValidationError

from enrs.identity import record
from enrs.identity.access import Identifier
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.identity.schemas import OfferedIdentifier, SourceIdentityIn, Telecom
from enrs.identity.traits import (
    ATTRIBUTES,
    INS_DEMO_NIR_OID,
    INS_NIA_OID,
    INS_NIR_OID,
    INS_TEST_NIR_OID,
    STATUSES,
)
from enrs.identity.translate import BIRTH_LIST
from enrs.kit.errors import Unprocessable

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
FR_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
FR_CORE_PATIENT = FR_CORE + "fr-core-patient"
FR_CORE_PATIENT_INS = FR_CORE + "fr-core-patient-ins"
INSEE_CODE = FR_CORE + "fr-core-address-insee-code"
RELIABILITY = FR_CORE + "fr-core-identity-reliability"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
STATUS_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
VALIDATION_MODE_SYSTEM = (
    "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-mode-validation-identity"
)
COMMUNE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"

INS_TYPES = {
    INS_NIR_OID: "INS-NIR",
    INS_NIA_OID: "INS-NIA",
    INS_TEST_NIR_OID: "INS-NIR-TEST",
    INS_DEMO_NIR_OID: "INS-NIR-DEMO",
}
_INS_PREFERENCE = (INS_NIR_OID, INS_TEST_NIR_OID, INS_DEMO_NIR_OID, INS_NIA_OID)
GENDER_IN = {"male": "M", "female": "F", "unknown": "U", "other": "U"}
GENDER_OUT = {"M": "male", "F": "female", "U": "unknown"}
_TELECOM_SYSTEMS = frozenset({"phone", "email", "fax"})
_FULL_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2})?$")
_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_FIELD_PATHS = {
    "authority": "Patient.identifier.system",
    "ipp": "Patient.identifier.value",
    "birth_name": "Patient.name.family",
    "used_name": "Patient.name.where(use='usual').family",
    "given_names": "Patient.name.given",
    "address_line": "Patient.address.line",
    "postal_code": "Patient.address.postalCode",
    "city": "Patient.address.city",
    "telecom": "Patient.telecom",
    "method_collection": f"Patient.extension('{RELIABILITY}')",
    "validation_mode": f"Patient.extension('{RELIABILITY}')",
}


def oid_of(system: str) -> str | None:
    """``urn:oid:1.2.3`` → ``1.2.3``; ``None`` for any other URI."""
    oid = system.removeprefix("urn:oid:")
    return oid if system.startswith("urn:oid:") and _OID.match(oid) else None


# --- reading ---------------------------------------------------------------------------------


@dataclass
class PatientFields:
    """What an FR Core Patient says about an identity, before the service's validation."""

    identifiers: list[tuple[str, str]] = field(default_factory=list)
    identifier_types: dict[tuple[str, str], str] = field(default_factory=dict)
    birth_name: str | None = None
    used_name: str | None = None
    given_names: list[str] = field(default_factory=list)
    birth_date: date | None = None
    sex: str = "U"
    birth_place: str | None = None
    address_line: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country: str | None = None
    telecom: list[Telecom] = field(default_factory=list)
    ins: str | None = None
    ins_system: str | None = None
    status: str = "PROV"
    attributes: frozenset[str] = frozenset()
    method_collection: str | None = None
    validation_mode: str | None = None


def _invalid(path: str, problem: str) -> Unprocessable:
    return Unprocessable(f"{path}: {problem}", issue_code="invalid")


def _objects(parent: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _invalid(f"{path}.{key}", "an array of objects is expected")
    return value


def _text(parent: dict[str, Any], key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{path}.{key}", "a string is expected")
    return value.strip() or None


def _texts(parent: dict[str, Any], key: str, path: str) -> list[str]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"{path}.{key}", "an array of strings is expected")
    return [v.strip() for v in value if v.strip()]


def _code(ext: dict[str, Any]) -> str | None:
    """The code of a ``valueCoding``, ``valueCodeableConcept``, ``valueCode`` or ``valueString``."""
    coding = ext.get("valueCoding")
    if isinstance(coding, dict) and isinstance(coding.get("code"), str):
        return str(coding["code"]).strip() or None
    concept = ext.get("valueCodeableConcept")
    if isinstance(concept, dict):
        for c in concept.get("coding") or []:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                return str(c["code"]).strip() or None
    for key in ("valueCode", "valueString"):
        if isinstance(ext.get(key), str):
            return str(ext[key]).strip() or None
    return None


def _extensions(parent: dict[str, Any], url: str, path: str) -> list[dict[str, Any]]:
    return [e for e in _objects(parent, "extension", path) if e.get("url") == url]


def _pick_name(names: list[dict[str, Any]]) -> dict[str, Any] | None:
    for wanted in ("official", None, "usual"):
        for name in names:
            if name.get("use") == wanted and name.get("family"):
                return name
    return next((n for n in names if n.get("family")), None)


def _given_names(resource: dict[str, Any], birth: dict[str, Any] | None) -> list[str]:
    given = _texts(birth, "given", "Patient.name") if birth else []
    listed = [_code(e) for e in _extensions(birth or {}, BIRTH_LIST, "Patient.name")]
    listed += [_code(e) for e in _extensions(resource, BIRTH_LIST, "Patient")]
    full = next((v.split() for v in listed if v), [])
    if not full:
        return given
    if given and given[0].upper() not in " ".join(full).upper():
        return [given[0], *full]  # the first birth first name leads the list
    return full


def _read_names(resource: dict[str, Any], fields: PatientFields) -> None:
    names = _objects(resource, "name", "Patient")
    birth = _pick_name(names)
    usual = next((n for n in names if n.get("use") == "usual" and n is not birth), None)
    fields.birth_name = _text(birth, "family", "Patient.name") if birth else None
    fields.used_name = _text(usual, "family", "Patient.name") if usual else None
    fields.given_names = _given_names(resource, birth)
    if not fields.given_names and usual is not None:
        fields.given_names = _texts(usual, "given", "Patient.name")


def _read_birth_date(resource: dict[str, Any], fields: PatientFields, *, strict: bool) -> None:
    raw = resource.get("birthDate")
    if raw is None:
        return
    if not isinstance(raw, str):
        raise _invalid("Patient.birthDate", "a date string is expected")
    m = _FULL_DATE.match(raw)
    if m is None:
        if _PARTIAL_DATE.match(raw) and not strict:
            return
        raise _invalid("Patient.birthDate", f"{raw!r} is not a full date (YYYY-MM-DD)")
    try:
        fields.birth_date = date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise _invalid("Patient.birthDate", f"{raw!r} is not a date ({exc})") from None


def _read_identifiers(resource: dict[str, Any], fields: PatientFields) -> None:
    ins: list[tuple[int, str, str]] = []
    for ident in _objects(resource, "identifier", "Patient"):
        system = _text(ident, "system", "Patient.identifier")
        value = _text(ident, "value", "Patient.identifier")
        if not system or not value:
            continue
        fields.identifiers.append((system, value))
        codings = (
            (ident.get("type") or {}).get("coding") if isinstance(ident.get("type"), dict) else None
        )
        if isinstance(codings, list) and codings and isinstance(codings[0], dict):
            code = codings[0].get("code")
            if isinstance(code, str) and code:
                fields.identifier_types[(system, value)] = code[:8]
        oid = oid_of(system)
        if oid in INS_TYPES:
            rank = _INS_PREFERENCE.index(oid) + (10 if ident.get("use") == "old" else 0)
            ins.append((rank, oid, value))
    if ins:
        _, fields.ins_system, fields.ins = min(ins)


def _read_place_and_address(resource: dict[str, Any], fields: PatientFields) -> None:
    for ext in _extensions(resource, BIRTH_PLACE, "Patient"):
        address = ext.get("valueAddress")
        if isinstance(address, dict):
            codes = [_code(e) for e in _extensions(address, INSEE_CODE, "Patient.extension")]
            fields.birth_place = next((c for c in codes if c), fields.birth_place)
    addresses = _objects(resource, "address", "Patient")
    home = next((a for a in addresses if a.get("use") in ("home", None)), None)
    home = home or (addresses[0] if addresses else None)
    if home is None:
        return
    lines = _texts(home, "line", "Patient.address")
    fields.address_line = "\n".join(lines) or None
    fields.postal_code = _text(home, "postalCode", "Patient.address")
    fields.city = _text(home, "city", "Patient.address")
    country = _text(home, "country", "Patient.address")
    fields.country = country if country and len(country) <= 3 else None


def _read_telecom(resource: dict[str, Any], fields: PatientFields) -> None:
    for contact in _objects(resource, "telecom", "Patient"):
        value = _text(contact, "value", "Patient.telecom")
        system = contact.get("system")
        if value:
            kind = system if system in _TELECOM_SYSTEMS else "other"
            fields.telecom.append(Telecom(system=kind, value=value[:256]))


def _read_reliability(resource: dict[str, Any], fields: PatientFields) -> None:
    """``identityStatus`` (PROV/RECUP/VALI/QUAL, or an attribute put there), attributes from
    any sub-extension (``comment``, ``identityStatusComment``...), ``methodCollection``,
    ``validationMode``. ``validationDate`` and ``dateCollection`` are not kept."""
    attributes: set[str] = set()
    path = f"Patient.extension('{RELIABILITY}')"
    for ext in _extensions(resource, RELIABILITY, "Patient"):
        for sub in _objects(ext, "extension", path):
            url, code = sub.get("url"), _code(sub)
            if not code:
                continue
            code = code.upper() if url != "validationMode" else code
            if url == "methodCollection":
                fields.method_collection = code
            elif url == "validationMode":
                fields.validation_mode = code
            elif code in ATTRIBUTES:
                attributes.add(code)
            elif url == "identityStatus":
                if code not in STATUSES:
                    raise _invalid(
                        f"{path}.extension('identityStatus')",
                        f"{code!r} is not one of {', '.join(STATUSES)}",
                    )
                fields.status = code
    fields.attributes = frozenset(attributes)


def read_patient(resource: dict[str, Any], *, strict: bool = True) -> PatientFields:
    """The identity an FR Core Patient describes. ``strict`` (the feed) refuses a partial birth
    date; a match input keeps going without it. Raises :class:`Unprocessable` (422)."""
    fields = PatientFields()
    gender = resource.get("gender")
    if gender is not None:
        if gender not in GENDER_IN:
            raise _invalid("Patient.gender", f"{gender!r} is not one of {', '.join(GENDER_IN)}")
        fields.sex = GENDER_IN[gender]
    _read_identifiers(resource, fields)
    _read_names(resource, fields)
    _read_birth_date(resource, fields, strict=strict)
    _read_place_and_address(resource, fields)
    _read_telecom(resource, fields)
    _read_reliability(resource, fields)
    return fields


def source_identity_in(fields: PatientFields, *, authority: str, ipp: str) -> SourceIdentityIn:
    """The service's input for the facility ``authority``'s identity ``ipp`` (ITI-104).

    Raises :class:`Unprocessable` (422) naming the FHIR element when a required trait is
    missing or too long."""
    if not fields.birth_name:
        raise _invalid("Patient.name", "a birth name (use 'official', with a family) is required")
    if not fields.given_names:
        raise _invalid("Patient.name.given", "at least one birth first name is required")
    kept = {(f"urn:oid:{authority}", ipp)}
    if fields.ins and fields.ins_system:
        kept.add((f"urn:oid:{fields.ins_system}", fields.ins))
    offered = [
        OfferedIdentifier(
            system=oid_of(system) or system, value=value, type=fields.identifier_types.get(key)
        )
        for key in fields.identifiers
        if key not in kept
        for system, value in [key]
    ]
    try:
        traits = {f.name: getattr(fields, f.name) for f in dataclass_fields(fields)}
        del traits["identifiers"], traits["identifier_types"]
        return SourceIdentityIn(authority=authority, ipp=ipp, other_identifiers=offered, **traits)
    except ValidationError as exc:
        problems = [
            f"{_FIELD_PATHS.get(str(e['loc'][0]), str(e['loc'][0]))}: {e['msg']}"
            for e in exc.errors()
        ]
        raise Unprocessable("; ".join(problems), issue_code="invalid") from None


# --- writing ---------------------------------------------------------------------------------


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def identifier_to_fhir(ident: Identifier, *, active: bool = True) -> dict[str, Any]:
    """An identifier as FR Core slices it: ``PI`` (use ``usual``; ``old``, the slice ``PI_OLD``,
    for an inactive identity), ``RRI`` (use ``secondary``), the INS (``INS-NIR``, ``INS-NIA``,
    ``INS-NIR-TEST``...)."""
    system = f"urn:oid:{ident.system}"
    if ident.type == "INS":
        return {
            "use": "temp" if ident.system == INS_NIA_OID else "official",
            "type": _coding(FR_V2_0203, INS_TYPES.get(ident.system, "INS-NIR")),
            "system": system,
            "value": ident.value,
        }
    use = "secondary" if ident.type == "RRI" else "usual" if active else "old"
    return {
        "use": use,
        "type": _coding(V2_0203, ident.type),
        "system": system,
        "value": ident.value,
    }


def _reliability(source: SourceIdentity) -> dict[str, Any]:
    subs: list[dict[str, Any]] = [
        {"url": "identityStatus", "valueCoding": {"system": STATUS_SYSTEM, "code": source.status}}
    ]
    for attribute in sorted(source.attribute_set):
        subs.append({"url": "comment", "valueCoding": {"system": STATUS_SYSTEM, "code": attribute}})
    if source.method_collection:
        subs.append({"url": "methodCollection", "valueCoding": {"code": source.method_collection}})
    if source.validation_mode:
        coding = {"system": VALIDATION_MODE_SYSTEM, "code": source.validation_mode}
        subs.append({"url": "validationMode", "valueCoding": coding})
    return {"url": RELIABILITY, "extension": subs}


def _names(source: SourceIdentity) -> list[dict[str, Any]]:
    given = source.given_names.split()
    official: dict[str, Any] = {"use": "official", "family": source.birth_name}
    if given:
        official["given"] = given[:1]
        official["extension"] = [{"url": BIRTH_LIST, "valueString": " ".join(given)}]
    names = [official]
    if source.used_name:
        names.append({"use": "usual", "family": source.used_name})
    return names


def _address(source: SourceIdentity) -> list[dict[str, Any]]:
    address: dict[str, Any] = {}
    if source.address_line:
        address["line"] = source.address_line.split("\n")
    for key, value in (
        ("city", source.city),
        ("postalCode", source.postal_code),
        ("country", source.country),
    ):
        if value:
            address[key] = value
    return [{"use": "home", **address}] if address else []


def _telecom(source: SourceIdentity) -> list[dict[str, Any]]:
    if not source.telecom:
        return []
    items = json.loads(source.telecom)
    return [{"system": t["system"], "value": t["value"]} for t in items if t.get("value")]


def source_to_fhir(
    source: SourceIdentity, rri: str, identifiers: Sequence[Identifier]
) -> dict[str, Any]:
    """A facility's identity as an FR Core Patient (id = the source identity's id) with
    ``identifiers`` (what the caller sees of it: ``access.source_identifiers``) and a ``refer``
    link to the regional Patient ``rri``."""
    extensions = [_reliability(source)]
    if source.birth_place:
        coding = {"system": COMMUNE_SYSTEM, "code": source.birth_place}
        place = {"extension": [{"url": INSEE_CODE, "valueCoding": coding}]}
        extensions.append({"url": BIRTH_PLACE, "valueAddress": place})
    with_ins = any(i.type == "INS" for i in identifiers)
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(source.id),
        "meta": {
            "versionId": str(source.version),
            "lastUpdated": source.updated_at.isoformat(timespec="milliseconds"),
            "profile": [FR_CORE_PATIENT_INS if with_ins else FR_CORE_PATIENT],
        },
        "extension": extensions,
        "identifier": [identifier_to_fhir(i, active=source.active) for i in identifiers],
        "active": source.active,
        "name": _names(source),
        "telecom": _telecom(source),
        "gender": GENDER_OUT.get(source.sex, "unknown"),
        "birthDate": source.birth_date.isoformat() if source.birth_date else None,
        "address": _address(source),
        "link": [{"other": {"reference": f"Patient/{rri}"}, "type": "refer"}],
    }
    resource |= record.fhir_elements(source.record)  # as fed, when fed over FHIR
    return {k: v for k, v in resource.items() if v not in (None, [])}


def inactive_source_to_fhir(source: SourceIdentity, rri: str | None) -> dict[str, Any]:
    """An inactive (merged) identity as read by a facility: nothing of it but that it is
    inactive and, when there is one, the regional Patient ``rri`` that replaced it."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(source.id),
        "meta": {
            "versionId": str(source.version),
            "lastUpdated": source.updated_at.isoformat(timespec="milliseconds"),
        },
        "active": False,
    }
    if rri is not None:
        resource["link"] = [{"other": {"reference": f"Patient/{rri}"}, "type": "replaced-by"}]
    return resource


_RELIABILITY_RANK = {"QUAL": 0, "VALI": 1, "RECUP": 2, "PROV": 3}


def reference_source(sources: Sequence[SourceIdentity]) -> SourceIdentity | None:
    """The identity whose traits stand for the regional patient: the most reliable status,
    then the most recently updated."""
    active = [s for s in sources if s.active]
    if not active:
        return None
    latest = sorted(active, key=lambda s: s.updated_at, reverse=True)
    return min(latest, key=lambda s: _RELIABILITY_RANK.get(s.status, 9))


def regional_to_fhir(
    patient: RegionalPatient,
    sources: Sequence[SourceIdentity],
    identifiers: Sequence[Identifier],
    survivor_rri: str | None,
) -> dict[str, Any]:
    """The regional view (id = the RRI): traits of :func:`reference_source` among ``sources``
    (its readable identities), ``identifiers`` (``access.patient_identifiers``), ``seealso``
    links to the source identities, and a ``replaced-by`` link when the patient was merged
    into ``survivor_rri``."""
    best = reference_source(sources)
    resource: dict[str, Any] = {"resourceType": "Patient"}
    if best is not None:
        resource = source_to_fhir(best, patient.rri, identifiers)
        resource.pop("link", None)
    with_ins = any(i.type == "INS" for i in identifiers)
    resource["id"] = patient.rri
    resource["meta"] = {
        "lastUpdated": patient.updated_at.isoformat(timespec="milliseconds"),
        "profile": [FR_CORE_PATIENT_INS if with_ins else FR_CORE_PATIENT],
    }
    resource["identifier"] = [identifier_to_fhir(i) for i in identifiers]
    resource["active"] = patient.active
    links = [{"other": {"reference": f"Patient/{s.id}"}, "type": "seealso"} for s in sources]
    if survivor_rri:
        links.insert(0, {"other": {"reference": f"Patient/{survivor_rri}"}, "type": "replaced-by"})
    if links:
        resource["link"] = links
    return resource
