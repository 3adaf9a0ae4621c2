"""The assigning authorities (identifier domains) the admin registers: ``enrs identity domains
add OID --namespace NAME [--name LABEL]``. Identities are written (FHIR ITI-104, HL7 v2 ADT) and
queried (PIX, PDQ) only in a registered domain, besides the server's own (the RRI's authority,
the INS OIDs): an identifier of a mistyped or unknown authority is refused instead of silently
creating a new domain. A facility's client or MLLP sender can be bound (``--authority``,
``--finess``) only to a registered domain, which it is then the only source of.

The namespace is the domain's HL7 v2 name (CX-4.1 / HD-1, e.g. ``CHFDF``), written in the
answers as ``namespace&OID&ISO``; the name is the facility as the cell reads it."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from enrs.identity import repository
from enrs.identity.config import IdentityConfig
from enrs.identity.models import IdentityDomain
from enrs.kit.errors import BadRequest, Conflict

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_HL7_DELIMITERS = set("|^~\\&#")


def check_oid(oid: str) -> str:
    """``oid`` stripped, or 400 when it is not an OID (dotted numbers, ≤ 64 characters)."""
    value = oid.strip()
    if not _OID.match(value) or len(value) > 64:
        raise BadRequest(f"{oid!r} is not an OID (numbers separated by dots, like 1.2.250.1.71)")
    return value


def add(
    session: Session,
    config: IdentityConfig,
    oid: str,
    *,
    namespace: str | None,
    name: str | None = None,
) -> IdentityDomain:
    """Register the domain ``oid``, or give a registered one (say one registered by the
    migration, without a namespace) its namespace and name. 400 for a malformed OID or
    namespace, or one of the server's own domains; 409 for a namespace another domain has."""
    value = check_oid(oid)
    if value == config.rri_authority or value in config.accepted_ins:
        raise BadRequest(f"{value} is one of this server's own domains (the RRI or the INS)")
    ns = namespace.strip() if namespace else None
    if ns is not None:
        if not ns or len(ns) > 64 or _HL7_DELIMITERS & set(ns) or ns != ns.split()[0]:
            raise BadRequest(
                f"namespace {namespace!r}: 1 to 64 characters, no space and none of | ^ ~ \\ & #"
            )
        other = repository.domain_by_namespace(session, ns)
        if other is not None and other.oid != value:
            raise Conflict(f"namespace {ns!r} is already the domain {other.oid}'s")
    domain = repository.domain(session, value)
    if domain is None:
        domain = IdentityDomain(oid=value, namespace=ns, name=name)
        session.add(domain)
    else:
        domain.namespace = ns if ns is not None else domain.namespace
        domain.name = name if name is not None else domain.name
    session.flush()
    return domain


def require(session: Session, oids: list[str] | tuple[str, ...] | set[str]) -> None:
    """400 naming the first of ``oids`` that is not a registered domain (for the bindings of
    ``enrs clients create``)."""
    for oid in sorted(oids):
        check_oid(oid)
        if repository.domain(session, oid) is None:
            raise BadRequest(
                f"the assigning authority {oid} is not a registered domain: register it first "
                f"(enrs identity domains add {oid} --namespace NAME)"
            )


def namespaces(session: Session) -> dict[str, str]:
    """OID → namespace of the registered domains that have one."""
    return {d.oid: d.namespace for d in repository.domains(session) if d.namespace}


def labels(session: Session) -> dict[str, str]:
    """OID → what the cell reads for each registered domain: its name, else its namespace."""
    return {
        d.oid: d.name or d.namespace or d.oid
        for d in repository.domains(session)
        if d.name or d.namespace
    }
