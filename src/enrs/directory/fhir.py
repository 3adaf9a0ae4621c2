"""The directory's entries as FHIR R4 resources (IHE mCSD, FR Core, the national Annuaire
Santé FHIR API's conventions):

- ``Practitioner/{idNatPs}``: the professional; identifiers idNatPs
  (``urn:oid:1.2.250.1.71.4.2.1``) and, for an RPPS, the bare number
  (``https://rpps.esante.gouv.fr``); name with the civility of practice as prefix;
  qualifications: the professions of its active activities, its savoir-faire and diplomas;
  telecom: its MSSanté mailboxes;
- ``PractitionerRole/{activity key}``: one activity: profession and professional category
  (``code``), savoir-faire (``specialty``), the site (``organization`` when its FINESS is in
  the directory, else the site's name), mode of practice and sector as extensions-free
  codings in ``code``, the site's phone, fax and e-mail;
- ``Organization/{FINESS}``: a FINESS establishment, with its category, address (and its WGS84
  position, extension ``geolocation``), telecoms, and its legal entity (``partOf`` by
  identifier).

An entry registered in the regional directory (:mod:`.registration`) carries the tag
``regional`` (``meta.tag``, system ``urn:oid:{root}.3``) and its local identifier (system
``urn:oid:{root}.3.1`` or ``.3.2``): its only identifier until an RPPS number is attached,
then a ``secondary`` one beside idNatPs and RPPS. A regional profession is coded in
``urn:oid:{root}.3.3`` (:mod:`.identifiers`).

Codes use the ANS terminology (NOS) systems, ``https://mos.esante.gouv.fr/NOS/<table>/FHIR/…``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM, origin_tag_system
from enrs.directory.models import (
    Activity,
    Diploma,
    Mailbox,
    Professional,
    Qualification,
    Structure,
)

RPPS_NUMBER_SYSTEM = "https://rpps.esante.gouv.fr"
SIRET_SYSTEM = "http://sirene.fr"
FR_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
GEOLOCATION = "http://hl7.org/fhir/StructureDefinition/geolocation"


def nos(table: str) -> str:
    """The FHIR system of an ANS terminology table (``TRE_G15-ProfessionSante``)."""
    return f"https://mos.esante.gouv.fr/NOS/{table}/FHIR/{table.replace('_', '-')}"


PROFESSION = nos("TRE_G15-ProfessionSante")
CATEGORY = nos("TRE_R09-CategorieProfessionnelle")
CIVILITY = nos("TRE_R11-CiviliteExercice")
MODE = nos("TRE_R23-ModeExercice")
SECTOR = nos("TRE_R02-SecteurActivite")
ESTABLISHMENT_CATEGORY = nos("TRE_R66-CategorieEtablissement")
# Savoir-faire by its type (Code type savoir-faire): ordinal specialty, competence,
# qualification of non-doctors, capacity…; another type keeps its code without a system.
SKILL = {
    "S": nos("TRE_R38-SpecialiteOrdinale"),
    "CEX": nos("TRE_R40-CompetenceExclusive"),
    "C": nos("TRE_R39-Competence"),
    "PAC": nos("TRE_R44-QualificationPAC"),
    "CAPA": nos("TRE_R43-CapaciteSavoirFaire"),
    "DSEC": nos("TRE_R42-DESCnonQualifiant"),
}


def _coding(system: str | None, code: str, display: str) -> dict[str, Any]:
    coding = {"system": system, "code": code, "display": display or None}
    return {k: v for k, v in coding.items() if v}


def _concept(system: str | None, code: str, display: str) -> dict[str, Any] | None:
    return {"coding": [_coding(system, code, display)]} if code else None


REGIONAL_TAG = "regional"


def _meta(updated_at: datetime, local_system: str | None = None) -> dict[str, Any]:
    """``lastUpdated``, and the ``regional`` tag of an entry registered in the region (whose
    local identifiers are of ``local_system``)."""
    meta: dict[str, Any] = {"lastUpdated": updated_at.isoformat(timespec="milliseconds")}
    if local_system:
        tag = {"system": origin_tag_system(local_system), "code": REGIONAL_TAG}
        meta["tag"] = [tag | {"display": "Enregistré dans l'annuaire régional"}]
    return meta


def _local_identifier(system: str | None, value: str | None, use: str) -> list[dict[str, Any]]:
    """The local identifier of a regional entry (none for a national one)."""
    if not system or not value:
        return []
    return [{"use": use, "system": system, "value": value}]


def _regional_system(origin: str, local_system: str | None) -> str | None:
    return local_system if origin == "regional" else None


def _telecom(*points: tuple[str, str]) -> list[dict[str, str]]:
    return [{"system": system, "value": value, "use": "work"} for system, value in points if value]


def _mailboxes(boxes: Iterable[Mailbox]) -> list[dict[str, str]]:
    return [{"system": "email", "value": m.address, "use": "work"} for m in boxes if m.active]


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v not in (None, "", [], {})}


@dataclass
class Extras:
    """What a Practitioner shows besides its activities: savoir-faire, diplomas, mailboxes."""

    qualifications: list[Qualification] = field(default_factory=list)
    diplomas: list[Diploma] = field(default_factory=list)
    mailboxes: list[Mailbox] = field(default_factory=list)


DIPLOMA = {"DE": nos("TRE_R48-DiplomeEtatFrancais")}


def practitioner(
    p: Professional, activities: Iterable[Activity] = (), extras: Extras | None = None
) -> dict[str, Any]:
    """A professional as a Practitioner: its qualifications (the professions of its
    ``activities``, its savoir-faire and diplomas) and its MSSanté mailboxes (``extras``)."""
    extras = extras or Extras()
    if p.local_id is not None and p.id_nat_ps == p.local_id:  # regional, no RPPS yet
        identifiers = _local_identifier(p.local_system, p.local_id, "official")
    else:
        identifiers = [
            {
                "use": "official",
                "type": {"coding": [{"system": FR_V2_0203, "code": "IDNPS"}]},
                "system": RPPS_SYSTEM,
                "value": p.id_nat_ps,
            }
        ]
        identifiers += _local_identifier(p.local_system, p.local_id, "secondary")
    if p.id_type == "8":
        identifiers.append(
            {
                "type": {"coding": [{"system": FR_V2_0203, "code": "RPPS"}]},
                "system": RPPS_NUMBER_SYSTEM,
                "value": p.number,
            }
        )
    name = _clean(
        {
            "use": "official",
            "family": p.family,
            "given": [p.given] if p.given else [],
            "prefix": [c for c in [p.practice_civility or p.civility] if c],
        }
    )
    seen: dict[str, dict[str, Any]] = {}
    for a in activities:
        if a.active and a.profession_code and a.profession_code not in seen:
            seen[a.profession_code] = {
                "code": _concept(a.profession_system or PROFESSION, a.profession_code, a.profession)
            }
    qualifications = list(seen.values())
    for q in extras.qualifications:
        if q.active and q.skill_code:
            concept = _concept(SKILL.get(q.skill_type_code), q.skill_code, q.skill)
            qualifications.append({"code": concept})
    for d in extras.diplomas:
        if d.active and (d.diploma_code or d.discipline_code):
            code, label = (
                (d.diploma_code, d.diploma)
                if d.diploma_code
                else (
                    d.discipline_code,
                    d.discipline,
                )
            )
            qualifications.append({"code": _concept(DIPLOMA.get(d.diploma_type_code), code, label)})
    telecom = [
        {"system": "email", "value": m.address, "use": "work"} for m in extras.mailboxes if m.active
    ]
    return _clean(
        {
            "resourceType": "Practitioner",
            "id": p.id_nat_ps,
            "meta": _meta(p.updated_at, _regional_system(p.origin, p.local_system)),
            "identifier": identifiers,
            "active": p.active,
            "name": [name],
            "telecom": telecom,
            "qualification": qualifications,
        }
    )


def practitioner_role(a: Activity, professional: Professional | None, site: bool) -> dict[str, Any]:
    """An activity as a PractitionerRole (``site``: its FINESS site is an Organization here)."""
    who = {"reference": f"Practitioner/{a.id_nat_ps}"}
    if professional is not None:
        who["display"] = f"{professional.given} {professional.family}".strip()
    if site:
        organization: dict[str, Any] | None = {"reference": f"Organization/{a.finess_site}"}
        if a.site_name:
            organization["display"] = a.site_name  # type: ignore[index]
    elif a.site_name or a.finess_site:
        organization = {"display": a.site_name or a.finess_site}
    else:
        organization = None
    codes = [
        _concept(a.profession_system or PROFESSION, a.profession_code, a.profession),
        _concept(CATEGORY, a.category_code, a.category),
        _concept(MODE, a.mode_code, a.mode),
        _concept(SECTOR, a.sector_code, a.sector),
    ]
    return _clean(
        {
            "resourceType": "PractitionerRole",
            "id": a.activity_key,
            "meta": _meta(
                a.updated_at,
                _regional_system(a.origin, professional.local_system if professional else None),
            ),
            "active": a.active,
            "practitioner": who,
            "organization": organization,
            "code": [c for c in codes if c],
            "specialty": [
                c for c in [_concept(SKILL.get(a.skill_type_code), a.skill_code, a.skill)] if c
            ],
            "telecom": _telecom(
                ("phone", a.phone), ("phone", a.phone2), ("fax", a.fax), ("email", a.email)
            ),
        }
    )


def organization(s: Structure, mailboxes: Iterable[Mailbox] = ()) -> dict[str, Any]:
    """A FINESS establishment as an Organization (with its organisational MSSanté
    ``mailboxes``)."""
    if s.local_id is not None and s.finess == s.local_id:  # regional, no FINESS
        identifiers = _local_identifier(s.local_system, s.local_id, "official")
    else:
        identifiers = [
            {
                "use": "official",
                "type": {"coding": [{"system": FR_V2_0203, "code": "FINEG"}]},
                "system": FINESS_SYSTEM,
                "value": s.finess,
            }
        ]
    if s.siret:
        identifiers.append(
            {
                "type": {"coding": [{"system": FR_V2_0203, "code": "SIRET"}]},
                "system": SIRET_SYSTEM,
                "value": s.siret,
            }
        )
    address = _clean(
        {
            "use": "work",
            "type": "both",
            "line": [line for line in (s.addressee, s.address_line) if line],
            "postalCode": s.postal_code,
            "city": s.city,
            "district": s.department,
            "country": "FR",
        }
    )
    if s.latitude is not None and s.longitude is not None:
        address["extension"] = [
            {
                "url": GEOLOCATION,
                "extension": [
                    {"url": "latitude", "valueDecimal": round(s.latitude, 6)},
                    {"url": "longitude", "valueDecimal": round(s.longitude, 6)},
                ],
            }
        ]
    legal = None
    if s.finess_ej:
        legal = {
            "identifier": {"system": FINESS_SYSTEM, "value": s.finess_ej},
            "display": f"FINESS EJ {s.finess_ej}",
        }
    return _clean(
        {
            "resourceType": "Organization",
            "id": s.finess,
            "meta": _meta(s.updated_at, _regional_system(s.origin, s.local_system)),
            "identifier": identifiers,
            "active": s.active,
            "type": [
                c for c in [_concept(ESTABLISHMENT_CATEGORY, s.category_code, s.category)] if c
            ],
            "name": s.name,
            "alias": [s.long_name] if s.long_name and s.long_name != s.name else [],
            "telecom": _telecom(("phone", s.phone), ("fax", s.fax))
            + [
                {"system": "email", "value": m.address, "use": "work"}
                for m in mailboxes
                if m.active
            ],
            "address": [address] if address.keys() - {"use", "type", "country"} else [],
            "partOf": legal,
        }
    )
