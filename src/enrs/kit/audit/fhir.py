"""Map an audit record to a FHIR R4 ``AuditEvent`` following IHE Basic Audit Log Patterns (BALP)."""

from __future__ import annotations

import base64
import json
from typing import Any

from enrs.kit.audit.models import AuditRecord

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
_REST_PROFILES = {
    "create": "IHE.BasicAudit.Create",
    "read": "IHE.BasicAudit.Read",
    "vread": "IHE.BasicAudit.Read",
    "update": "IHE.BasicAudit.Update",
    "delete": "IHE.BasicAudit.Delete",
    "search-type": "IHE.BasicAudit.Query",
    "search-system": "IHE.BasicAudit.Query",
    "operation": "IHE.BasicAudit.Query",
}
_TYPES = {
    "rest": {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    },
    "login": {"system": DCM, "code": "110114", "display": "User Authentication"},
    "logout": {"system": DCM, "code": "110114", "display": "User Authentication"},
    "token": {"system": DCM, "code": "110114", "display": "User Authentication"},
    "security": {"system": DCM, "code": "110113", "display": "Security Alert"},
    "export": {"system": DCM, "code": "110106", "display": "Export"},
    "hl7": {"system": DCM, "code": "110110", "display": "Patient Record"},
    "external": {"system": DCM, "code": "110110", "display": "Patient Record"},
    "batch": {"system": DCM, "code": "110110", "display": "Patient Record"},
    "mss": {"system": DCM, "code": "110110", "display": "Patient Record"},
}
_SUBTYPES = {
    "login": {"system": DCM, "code": "110122", "display": "Login"},
    "logout": {"system": DCM, "code": "110123", "display": "Logout"},
    "token": {"system": DCM, "code": "110122", "display": "Login"},
}
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"


def _subtype(rec: AuditRecord) -> dict[str, str]:
    if rec.category == "rest":
        return {"system": "http://hl7.org/fhir/restful-interaction", "code": rec.interaction}
    return _SUBTYPES.get(
        rec.category, {"system": "urn:enrs:audit-interaction", "code": rec.interaction}
    )


def _agents(rec: AuditRecord, base_url: str) -> list[dict[str, Any]]:
    network = {"address": rec.source_ip, "type": "2"} if rec.source_ip else None
    system = f"{base_url}/{'clients' if rec.agent_kind == 'client' else 'users'}"
    requestor: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                    "display": "information recipient",
                }
            ]
        },
        "who": {"display": rec.agent_name or rec.agent_kind},
        "requestor": True,
    }
    if rec.agent_id:
        requestor["who"]["identifier"] = {"system": system, "value": rec.agent_id}
    if network:
        requestor["network"] = network
    agents = [requestor]
    if rec.client_id and rec.agent_kind == "user":
        agents.append(
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": {"identifier": {"system": f"{base_url}/clients", "value": rec.client_id}},
                "requestor": False,
            }
        )
    return agents


def _entities(rec: AuditRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if rec.patient_ref:
        entities.append(
            {
                "what": {"reference": rec.patient_ref},
                "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if rec.entity_ref:
        entities.append(
            {
                "what": {"reference": rec.entity_ref},
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if rec.query is not None:
        entities.append(
            {
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
                "query": base64.b64encode(rec.query.encode()).decode(),
                **({"description": rec.resource_type} if rec.resource_type else {}),
            }
        )
    return entities


def _hash_extensions(rec: AuditRecord) -> list[dict[str, Any]]:
    return [
        {"url": "urn:enrs:audit:hash", "valueString": rec.hash},
        {"url": "urn:enrs:audit:prev-hash", "valueString": rec.prev_hash},
    ]


def to_audit_event(rec: AuditRecord, base_url: str) -> dict[str, Any]:
    """The BALP AuditEvent for one record; ``base_url`` names the platform's identifiers.
    An event a facility recorded (ITI-20) is returned as it was sent, with our id."""
    if rec.category == "external" and rec.detail:
        sent: dict[str, Any] = json.loads(rec.detail)
        sent["id"] = str(rec.seq)
        sent["extension"] = [*sent.get("extension", []), *_hash_extensions(rec)]
        return sent
    profile = _REST_PROFILES.get(rec.interaction) if rec.category == "rest" else None
    if profile and rec.patient_ref:
        profile = profile.replace("BasicAudit.", "BasicAudit.Patient")
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(rec.seq),
        "type": _TYPES.get(rec.category, _TYPES["security"]),
        "subtype": [_subtype(rec)],
        "action": rec.action,
        "recorded": rec.recorded.isoformat(),
        "outcome": rec.outcome,
        "agent": _agents(rec, base_url),
        "source": {
            "site": base_url,
            "observer": {"display": "ENRS"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "extension": _hash_extensions(rec),
    }
    if profile:
        event["meta"] = {"profile": [BALP + profile]}
    if rec.outcome_desc:
        event["outcomeDesc"] = rec.outcome_desc
    entities = _entities(rec)
    if entities:
        event["entity"] = entities
    if rec.request_id:
        event["extension"].append(
            {"url": "urn:enrs:audit:request-id", "valueString": rec.request_id}
        )
    return event
