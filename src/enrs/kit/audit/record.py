"""IHE ITI-20 *Record Audit Event* (RESTful ATNA): a member facility's system sends an
``AuditEvent`` and the platform keeps it in its own hash-chained trail.

The event is validated against the R4 cardinalities that matter for a trail (``type``,
``recorded``, ``agent`` with ``requestor``, ``source.observer``) and its coded values; the
searchable fields are extracted, the whole resource is kept verbatim in ``detail``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from enrs.kit.audit.trail import AuditEntry
from enrs.kit.errors import Unprocessable

_ACTIONS = {"C", "R", "U", "D", "E"}
_OUTCOMES = {"0", "4", "8", "12"}


def _invalid(path: str, problem: str) -> Unprocessable:
    return Unprocessable(f"AuditEvent.{path}: {problem}")


def _coding(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("code"), str):
        raise _invalid(path, "a Coding with a code is required")
    return value


def _instant(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _invalid(path, "an instant is required")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _invalid(path, f"{value!r} is not a FHIR instant") from exc
    if parsed.tzinfo is None or "T" not in value:
        raise _invalid(path, "an instant needs a time and a time zone")


def _requestor(agents: Any) -> dict[str, Any]:
    if not isinstance(agents, list) or not agents:
        raise _invalid("agent", "at least one agent is required")
    for i, agent in enumerate(agents):
        if not isinstance(agent, dict) or not isinstance(agent.get("requestor"), bool):
            raise _invalid(f"agent[{i}].requestor", "a boolean is required")
    return next((a for a in agents if a["requestor"]), agents[0])


def _patient(entities: Any) -> str | None:
    if entities is None:
        return None
    if not isinstance(entities, list):
        raise _invalid("entity", "a list is expected")
    for entity in entities:
        what = entity.get("what") if isinstance(entity, dict) else None
        ref = what.get("reference") if isinstance(what, dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/") and len(ref) <= 128:
            return ref
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def entry_from_audit_event(event: dict[str, Any]) -> AuditEntry:
    """Validate an ``AuditEvent`` and turn it into a trail entry (category ``external``)."""
    event_type = _coding(event.get("type"), "type")
    _instant(event.get("recorded"), "recorded")
    source = event.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("observer"), dict):
        raise _invalid("source.observer", "the reporting system is required")
    action = event.get("action", "E")
    if action not in _ACTIONS:
        raise _invalid("action", f"{action!r} is not one of C R U D E")
    outcome = event.get("outcome", "0")
    if outcome not in _OUTCOMES:
        raise _invalid("outcome", f"{outcome!r} is not one of 0 4 8 12")
    subtypes = event.get("subtype") or []
    if not isinstance(subtypes, list):
        raise _invalid("subtype", "a list of Codings is expected")
    interaction = _coding(subtypes[0], "subtype[0]")["code"] if subtypes else event_type["code"]
    agent = _requestor(event.get("agent"))
    who = _object(agent.get("who"))
    identifier = _object(who.get("identifier"))
    network = _object(agent.get("network"))
    return AuditEntry(
        category="external",
        interaction=str(interaction)[:32],
        action=action,
        outcome=outcome,
        outcome_desc=event.get("outcomeDesc")
        if isinstance(event.get("outcomeDesc"), str)
        else None,
        agent_kind="user",
        agent_id=str(identifier.get("value"))[:128] if identifier.get("value") else None,
        agent_name=str(who.get("display"))[:256] if who.get("display") else None,
        source_ip=str(network.get("address"))[:64] if network.get("address") else None,
        patient_ref=_patient(event.get("entity")),
        resource_type="AuditEvent",
        detail=json.dumps(event, ensure_ascii=False, separators=(",", ":")),
    )
