"""The assigning authorities (identifier domains) the admin registers: ``enrs identity domains
add OID --namespace NAME [--name LABEL]``. Identities are written (FHIR ITI-104, HL7 v2 ADT) and
queried (PIX, PDQ) only in a registered domain, besides the server's own (the RRI's authority,
the INS OIDs): an identifier of a mistyped or unknown authority is refused instead of silently
creating a new domain.

Who writes which domain is read from the facility registry: a domain is owned by a member
facility (its FINESS, ``--finess`` / ``--owner``), a client or MLLP sender belongs to one
(``enrs clients create --finess``), and a feeder writes the domains its facility owns
(:func:`feeder_grant`), besides those bound to it by name (``--authority``: a shared
record writing for several facilities). A feeder can be bound only to a registered domain.

The namespace is the domain's HL7 v2 name (CX-4.1 / HD-1, e.g. ``CHFDF``), written in the
answers as ``namespace&OID&ISO``; the name is the facility as the cell reads it."""

from __future__ import annotations

import re
from dataclasses import replace

from sqlalchemy.orm import Session

from enrs.accounts.service import FeederGrant
from enrs.directory.identifiers import finess_error
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
    owner: str | None = None,
) -> IdentityDomain:
    """Register the domain ``oid``, or give a registered one (say one registered by the
    migration, without a namespace) its namespace, name and owner (the FINESS of the member
    facility whose feeders write it). 400 for a malformed OID, namespace or FINESS, or one of
    the server's own domains; 409 for a namespace another domain has."""
    value = check_oid(oid)
    finess = owner.strip() if owner is not None else None
    if finess is not None and (error := finess_error(finess)) is not None:
        raise BadRequest(f"the owner is not a FINESS: {error}")
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
        domain = IdentityDomain(oid=value, namespace=ns, name=name, finess=finess)
        session.add(domain)
    else:
        domain.namespace = ns if ns is not None else domain.namespace
        domain.name = name if name is not None else domain.name
        domain.finess = finess if finess is not None else domain.finess
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


def owned_by(session: Session, finess: str) -> list[IdentityDomain]:
    """The domains the member facility ``finess`` owns, by OID."""
    return repository.domains_of(session, finess)


def feeder_grant(session: Session, grant: FeederGrant | None) -> FeederGrant | None:
    """What a feeder (system client, MLLP sender) may write, read from the facility
    registry: the domains bound to it by name, and those its facility owns. The one place
    both feeds (FHIR ITI-104, HL7 v2 ADT) and the subscriptions take it from."""
    if grant is None or grant.finess is None:
        return grant
    owned = {d.oid for d in repository.domains_of(session, grant.finess)}
    return replace(grant, authorities=grant.authorities | owned)
