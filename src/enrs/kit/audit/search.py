"""Searching the audit trail (``GET /fhir/AuditEvent`` and the admin page) with the shared FHIR
search engine. Parameters follow R4 AuditEvent's: ``date``, ``agent`` (the agent's identifier:
user id or client id), ``agent-name``, ``altid``, ``patient``, ``action``, ``outcome``,
``subtype``, ``address``, ``entity``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.kit.audit.models import AuditRecord
from enrs.kit.fhir.search import (
    ParsedSearch,
    SearchParam,
    SearchSpec,
    SearchStatements,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.fhir.search_values import ReferenceValue, TokenValue

R = "http://hl7.org/fhir/SearchParameter/AuditEvent-"


def _agent(value: TokenValue) -> ColumnElement[bool]:
    code = value.code or ""
    return or_(AuditRecord.agent_id == code, AuditRecord.client_id == code)


def _patient(value: ReferenceValue) -> ColumnElement[bool]:
    return AuditRecord.patient_ref == f"Patient/{value.id}"


def _entity(value: ReferenceValue) -> ColumnElement[bool]:
    ref = f"{value.type}/{value.id}" if value.type else value.id
    return or_(AuditRecord.entity_ref == ref, AuditRecord.entity_ref.endswith(f"/{value.id}"))


AUDIT_SEARCH = SearchSpec(
    resource_type="AuditEvent",
    params={
        "date": SearchParam.date(
            AuditRecord.recorded, doc="When the event was recorded", definition=R + "date"
        ),
        "agent": SearchParam.token(match=_agent, doc="Identifier of the user or client"),
        "altid": SearchParam.token(
            AuditRecord.agent_id, doc="Alternative user id", definition=R + "altid"
        ),
        "agent-name": SearchParam.string(
            AuditRecord.agent_name, doc="Agent's name", definition=R + "agent-name"
        ),
        "patient": SearchParam.reference(
            match=_patient,
            targets=["Patient"],
            doc="The patient concerned",
            definition=R + "patient",
        ),
        "entity": SearchParam.reference(
            match=_entity,
            targets=["Patient", "AuditEvent"],
            doc="The resource concerned",
            definition=R + "entity",
        ),
        "action": SearchParam.token(AuditRecord.action, doc="C R U D E", definition=R + "action"),
        "outcome": SearchParam.token(AuditRecord.outcome, doc="0 4 8 12", definition=R + "outcome"),
        "subtype": SearchParam.token(
            AuditRecord.interaction, doc="Interaction (read, login…)", definition=R + "subtype"
        ),
        "address": SearchParam.string(
            AuditRecord.source_ip, doc="Source IP address", definition=R + "address"
        ),
    },
    sorts={"date": AuditRecord.recorded, "_id": AuditRecord.seq},
    default_sort="-_id",
    tiebreaker=AuditRecord.seq,
    default_count=50,
    max_count=500,
)

_RECORDS = SearchStatements(select(AuditRecord))

# The admin page's form fields and the FHIR parameters they become.
AUDIT_FILTERS = ("date_from", "date_to", "agent", "patient", "action")


@dataclass(frozen=True)
class AuditPage:
    records: list[AuditRecord]
    parsed: ParsedSearch
    total: int | None
    has_next: bool

    @property
    def next_offset(self) -> int | None:
        return self.parsed.offset + self.parsed.count if self.has_next else None

    @property
    def next_query(self) -> str:
        items = [(k, v) for k, v in self.parsed.used] + [("_offset", str(self.next_offset or 0))]
        return urlencode(items)


def form_to_fhir(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Translate the admin page's filters into AuditEvent search parameters."""
    out: list[tuple[str, str]] = []
    for name, value in items:
        if name == "date_from":
            out.append(("date", f"ge{value}"))
        elif name == "date_to":
            out.append(("date", f"le{value}"))
        else:
            out.append((name, value))
    return out


def search_audit(
    session: Session, items: Sequence[tuple[str, str]], *, base_url: str, strict: bool = False
) -> AuditPage:
    """Run an AuditEvent search; raises BadRequest on malformed parameters."""
    parsed = parse_search(AUDIT_SEARCH, form_to_fhir(items), strict=strict, base_url=base_url)
    stmt, values = _RECORDS.search(parsed)
    rows = list(session.scalars(stmt, values))
    records, has_next = split_page(rows, parsed)
    total = search_total(session, _RECORDS.base, parsed, records, has_next)
    return AuditPage(records, parsed, total, has_next)
