"""The directory's MSSanté mailboxes as FHIR ``Endpoint`` (IHE mCSD): how to reach a
professional or a structure securely. One Endpoint per mailbox of the national extraction:
``address`` ``mailto:…``, ``connectionType`` ``direct-project`` (HL7's code for secure
messaging by S/MIME mail in a trust space, which MSSanté is), ``payloadType`` MSSanté,
``status`` ``active`` (``off`` once gone from the extraction), the structure managing it
(``managingOrganization``, when its FINESS is in the directory) and, for a personal mailbox,
its owner's idNatPs as an identifier.

Search (ITI-90): ``_id``, ``_lastUpdated``, ``identifier`` (the address), ``organization``,
``status``, ``connection-type``, ``name`` (the owner's or service's name), and ``mailbox-type``
(``PER``, ``ORG``, ``APP``, ``CAB``); ``_include=Endpoint:organization``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.directory.identifiers import RPPS_SYSTEM
from enrs.directory.models import Mailbox, Structure
from enrs.directory.search import Page, organizations
from enrs.kit.fhir.search import (
    SearchParam,
    SearchSpec,
    apply_search,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.fhir.search_params import string_clause
from enrs.kit.fhir.search_values import ReferenceValue, TokenValue

CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
MAILTO = "urn:ietf:rfc:3986"
KINDS = {
    "PER": "BAL personnelle",
    "ORG": "BAL organisationnelle",
    "APP": "BAL applicative",
    "CAB": "BAL de cabinet",
}
SP = "http://hl7.org/fhir/SearchParameter/"
M = Mailbox


def _name(m: Mailbox) -> str:
    owner = " ".join(p for p in (m.civility, m.given, m.family) if p) if m.kind == "PER" else ""
    place = m.service or m.structure_name
    return f"{KINDS.get(m.kind, 'BAL')} {owner or place}".strip()


def endpoint(m: Mailbox, known_structure: bool) -> dict[str, Any]:
    """A mailbox as an Endpoint; ``known_structure``: its structure is in the directory."""
    identifiers = [{"system": MAILTO, "value": f"mailto:{m.address}"}]
    if m.kind == "PER" and m.id_nat_ps:
        identifiers.append({"system": RPPS_SYSTEM, "value": m.id_nat_ps})
    resource: dict[str, Any] = {
        "resourceType": "Endpoint",
        "id": str(m.id),
        "meta": {"lastUpdated": m.updated_at.isoformat(timespec="milliseconds")},
        "identifier": identifiers,
        "status": "active" if m.active else "off",
        "connectionType": {"system": CONNECTION, "code": "direct-project"},
        "name": _name(m),
        "payloadType": [{"text": f"MSSanté ({KINDS.get(m.kind, m.kind)})"}],
        "address": f"mailto:{m.address}",
    }
    if known_structure:
        resource["managingOrganization"] = {
            "reference": f"Organization/{m.structure_id}",
            "display": m.structure_name or None,
        }
    return resource


def _identifier(value: TokenValue) -> sa.ColumnElement[bool]:
    if value.code is None:
        return sa.true() if value.system in (MAILTO, RPPS_SYSTEM) else sa.false()
    if value.system == RPPS_SYSTEM:
        return sa.and_(M.kind == "PER", M.id_nat_ps == value.code)
    if value.system in (None, MAILTO):
        return M.address == value.code.removeprefix("mailto:").lower()
    return sa.false()


def _status(value: TokenValue) -> sa.ColumnElement[bool]:
    if value.code == "active":
        return M.active.is_(True)
    if value.code == "off":
        return M.active.is_(False)
    return sa.false()


def _organization(value: ReferenceValue) -> sa.ColumnElement[bool]:
    if value.type not in (None, "Organization"):
        return sa.false()
    return M.structure_id == value.id


def _ids(value: TokenValue) -> sa.ColumnElement[bool]:
    if value.code is None or not value.code.isdigit():
        return sa.false()
    return M.id == int(value.code)


@cache
def endpoint_spec() -> SearchSpec:
    return SearchSpec(
        resource_type="Endpoint",
        params={
            "_id": SearchParam.token(match=_ids, definition=SP + "Resource-id"),
            "_lastUpdated": SearchParam.date(M.updated_at, definition=SP + "Resource-lastUpdated"),
            "identifier": SearchParam.token(
                match=_identifier,
                doc="The address (mailto:…), or the owner's idNatPs (personal mailboxes)",
                definition=SP + "Endpoint-identifier",
            ),
            "organization": SearchParam.reference(
                targets=("Organization",),
                match=_organization,
                definition=SP + "Endpoint-organization",
            ),
            "status": SearchParam.token(match=_status, definition=SP + "Endpoint-status"),
            "connection-type": SearchParam.token(
                match=lambda v: (
                    sa.true()
                    if v.system in (None, CONNECTION) and v.code == "direct-project"
                    else sa.false()
                ),
                definition=SP + "Endpoint-connection-type",
            ),
            "name": SearchParam.string(
                match=lambda v: string_clause(v, (M.family, M.service, M.structure_name), ()),
                doc="The owner's family name, the service or the structure",
                definition=SP + "Endpoint-name",
            ),
            "mailbox-type": SearchParam.token(
                match=lambda v: M.kind == v.code if v.code else sa.false(),
                doc="PER, ORG, APP or CAB",
            ),
        },
        sorts={"_lastUpdated": M.updated_at},
        tiebreaker=M.id,
        default_total="none",
        includes=frozenset({"Endpoint:organization"}),
    )


def _known(session: Session, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    stmt = sa.select(Structure.finess).where(Structure.finess.in_(sorted(ids)))
    return set(session.scalars(stmt))


def endpoints(session: Session, boxes: Sequence[Mailbox]) -> list[dict[str, Any]]:
    known = _known(session, {m.structure_id for m in boxes if m.structure_id})
    return [endpoint(m, m.structure_id in known) for m in boxes]


def read(session: Session, resource_id: str) -> dict[str, Any] | None:
    if not resource_id.isdigit():
        return None
    box = session.get(M, int(resource_id))
    return endpoints(session, [box])[0] if box else None


def history(
    session: Session, since: datetime | None, count: int, offset: int
) -> tuple[list[dict[str, Any]], bool]:
    stmt = sa.select(M).order_by(M.updated_at, M.id).offset(offset).limit(count + 1)
    if since is not None:
        stmt = stmt.where(M.updated_at >= since)
    rows = session.scalars(stmt).all()
    return endpoints(session, rows[:count]), len(rows) > count


def search_endpoints(
    session: Session, items: Sequence[tuple[str, str]], *, base_url: str, strict: bool
) -> Page:
    """ITI-90 ``GET /fhir/Endpoint``."""
    spec, stmt = endpoint_spec(), sa.select(M)
    parsed = parse_search(spec, items, strict=strict, base_url=base_url)
    rows = session.scalars(apply_search(stmt, parsed)).all()
    found, has_next = split_page(rows, parsed)
    total = search_total(session, stmt, parsed, found, has_next)
    page = Page(endpoints(session, found), parsed, total, has_next)
    if "Endpoint:organization" in parsed.includes and found:
        ids = sorted({m.structure_id for m in found if m.structure_id})
        structures = session.scalars(sa.select(Structure).where(Structure.finess.in_(ids)))
        page.included = organizations(session, structures.all())
    return page
