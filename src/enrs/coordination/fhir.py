"""The care circle as FHIR R4 resources (ANS guide *Cercle de soins*): ``CareTeam`` with one
``participant`` per member, ``Consent`` for the patient's agreement that someone joins.

A participant's member is a logical reference by identifier (``Practitioner`` by its idNatPs,
``Organization`` by its FINESS) or, for a family carer, a ``RelatedPerson`` by display only;
its ``period`` says when they were in the circle; where they are in the joining process
(``invited``, ``active``, ``removed``) is the extension :data:`PARTICIPANT_STATUS`, which R4
has no element for."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from enrs.coordination.models import CareTeam, CircleConsent, Member
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.kit.errors import Unprocessable

PARTICIPANT_STATUS = "https://enrs.fr/fhir/StructureDefinition/care-team-participant-status"


def _instant(moment: datetime) -> str:
    return moment.isoformat()


def _member_reference(member: Member) -> dict[str, Any]:
    if member.kind == "practitioner":
        ident = {"system": RPPS_SYSTEM, "value": f"8{member.rpps}"}
        return {"type": "Practitioner", "identifier": ident, "display": member.display}
    if member.kind == "organization":
        ident = {"system": FINESS_SYSTEM, "value": member.finess or ""}
        return {"type": "Organization", "identifier": ident, "display": member.display}
    return {"type": "RelatedPerson", "display": member.display}


def participant(member: Member) -> dict[str, Any]:
    period: dict[str, str] = {}
    if member.period_start is not None:
        period["start"] = _instant(member.period_start)
    if member.period_end is not None:
        period["end"] = _instant(member.period_end)
    found: dict[str, Any] = {
        "id": str(member.id),
        "extension": [{"url": PARTICIPANT_STATUS, "valueCode": member.status}],
        "role": [{"text": member.role}],
        "member": _member_reference(member),
    }
    if period:
        found["period"] = period
    return found


def care_team(team: CareTeam, members: list[Member], rri: str) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": team.resource_id,
        "meta": {"versionId": str(team.version), "lastUpdated": _instant(team.updated_at)},
        "status": team.status,
        "name": team.name,
        "subject": {"reference": f"Patient/{rri}"},
        "period": {"start": _instant(team.created_at)},
        "participant": [participant(m) for m in members],
    }


def consent(found: CircleConsent, team: CareTeam, rri: str) -> dict[str, Any]:
    if found.rpps:
        actor = {
            "type": "Practitioner",
            "identifier": {"system": RPPS_SYSTEM, "value": f"8{found.rpps}"},
        }
    else:
        actor = {
            "type": "Organization",
            "identifier": {"system": FINESS_SYSTEM, "value": found.finess},
        }
    return {
        "resourceType": "Consent",
        "id": found.resource_id,
        "status": found.status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "treatment",
                }
            ]
        },
        "category": [{"text": "Entrée dans le cercle de soins"}],
        "patient": {"reference": f"Patient/{rri}"},
        "dateTime": _instant(found.recorded_at),
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": actor,
                }
            ],
            "data": [
                {"meaning": "related", "reference": {"reference": f"CareTeam/{team.resource_id}"}}
            ],
        },
    }


def identified(reference: Any, what: str) -> tuple[str, str | None, str | None]:
    """``(kind, rpps, finess)`` of a reference by identifier: a professional by idNatPs
    (``8`` + RPPS) or RPPS, a structure by FINESS."""
    ident = reference.get("identifier") if isinstance(reference, dict) else None
    if not isinstance(ident, dict):
        raise Unprocessable(f"{what}: a reference by identifier (idNatPs or FINESS)")
    system, value = ident.get("system"), ident.get("value")
    if not isinstance(value, str) or not value:
        raise Unprocessable(f"{what}.identifier.value is required")
    if system == RPPS_SYSTEM:
        return "practitioner", value[1:] if value.startswith("8") else value, None
    if system == "https://rpps.esante.gouv.fr":
        return "practitioner", value, None
    if system == FINESS_SYSTEM:
        return "organization", None, value
    raise Unprocessable(f"{what}.identifier.system: {RPPS_SYSTEM} or {FINESS_SYSTEM}")
