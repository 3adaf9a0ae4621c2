"""The identifier cross-reference of the regional MPI: from one identifier to the regional
patient behind it and every identifier of that patient. One rule for both transactions that
ask it, which only render the answer:

- IHE PIX Query ITI-9 (HL7 v2 QBP^Q23 / RSP^K23, :func:`enrs.identity.hl7.pix_query`);
- IHE PIXm ITI-83 (FHIR ``Patient/$ihe-pix``, :mod:`enrs.identity.endpoints`).

The rules:

- an identifier is an IPP of an assigning authority that fed the registry (an *active*
  identity's), the regional identifier (RRI, authority ``{root}.1``), an INS (an accepted INS
  OID) carried by a *qualified* identity (:mod:`.access`, rule 4), or, when no identity of its
  domain has it, an identifier a facility gave with its identity (:mod:`.others`: its domain
  registered); any other domain is unknown;
- it leads to the active regional patient it belongs to, merges followed (``merged_into``), at
  most :data:`MAX_MERGE_HOPS` of them and never twice the same patient; a chain ending on an
  inactive patient, looping or longer leads nowhere (not found);
- an INS may lead to several regional patients (qualified identities the cell has not merged
  yet): each is answered, with its identifiers (ITI-9 then lists them all in the one PID-3, as
  for several identifiers in one domain; ITI-83 gives one ``targetId`` each);
- the identifiers listed are those a caller may see (:func:`access.patient_identifiers`:
  the IPPs of the active identities, the RRI, the INS only from a qualified identity), restricted
  to the domains asked for (QPD-4, ``targetSystem``) if any, and never the queried identifier
  itself (ITI-9 3.9.4.2.2.6 and ITI-45: "not including the queried-for patient identifier";
  PIXm's examples answer the other domains only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from enrs.identity import access, repository
from enrs.identity.access import Identifier
from enrs.identity.config import IdentityConfig
from enrs.identity.models import RegionalPatient
from enrs.kit.errors import BadRequest, NotFound

MAX_MERGE_HOPS = 16
"""Merges followed from a regional patient to the one it now lives in, at most."""


class UnknownDomain(BadRequest):
    """The identifier's assigning authority is not a domain of this server."""


class UnknownPatient(NotFound):
    """No active regional patient has this identifier."""


@dataclass(frozen=True)
class PatientIdentifiers:
    """One regional patient and the identifiers of it the caller sees."""

    patient_id: int
    rri: str
    identifiers: list[Identifier]


@dataclass(frozen=True)
class CrossReference:
    """The answer to a cross-reference query: each regional patient found (usually one)."""

    patients: list[PatientIdentifiers]

    @property
    def identifiers(self) -> list[Identifier]:
        return [i for p in self.patients for i in p.identifiers]


def known_domain(session: Session, config: IdentityConfig, oid: str) -> bool:
    """Whether ``oid`` is an identifier domain of this server: the RRI's authority, an accepted
    INS OID, or a domain the admin registered (``enrs identity domains add``; known before
    any identity of it is fed)."""
    if oid == config.rri_authority or oid in config.accepted_ins:
        return True
    return repository.domain(session, oid) is not None


def _chain(session: Session, patient: RegionalPatient) -> Iterator[RegionalPatient]:
    """``patient``, then the patients it was merged into, in order, at most
    :data:`MAX_MERGE_HOPS` merges, stopping before a patient seen already."""
    seen: set[int] = set()
    current: RegionalPatient | None = patient
    while current is not None and current.id not in seen and len(seen) <= MAX_MERGE_HOPS:
        seen.add(current.id)
        yield current
        if current.merged_into_id is None:
            return
        current = repository.patient(session, current.merged_into_id)


def follow_merges(session: Session, patient: RegionalPatient) -> RegionalPatient | None:
    """The active regional patient ``patient`` now is: itself if active, else the one it was
    merged into (see the module's rules); ``None`` if there is none."""
    for current in _chain(session, patient):
        if current.active:
            return current
    return None


def normalized(config: IdentityConfig, oid: str, value: str) -> str:
    """An identifier's value as stored: an INS without spaces, upper case; others as given."""
    return value.replace(" ", "").upper() if oid in config.accepted_ins else value


def resolve(
    session: Session, config: IdentityConfig, oid: str, value: str
) -> list[RegionalPatient]:
    """The active regional patients the identifier ``value`` of the domain ``oid`` designates
    (one, except for an INS: see the module's rules), in the order of their ids.

    Raises :class:`UnknownDomain` (``oid`` is no domain of this server) or
    :class:`UnknownPatient` (no active patient has that identifier)."""
    if not known_domain(session, config, oid):
        raise UnknownDomain(f"assigning authority {oid} is not known to this server")
    value = normalized(config, oid, value)
    found: list[RegionalPatient | None] = []
    if oid == config.rri_authority:
        found = [repository.patient_by_rri(session, value)]
    elif oid in config.accepted_ins:
        holders = access.trusted_ins_holders(session, value)
        found = [repository.patient(session, pid) for pid in {s.patient_id for s in holders}]
    else:
        source = repository.source_by_key(session, oid, value)
        if source is not None and access.is_readable(source):
            found = [repository.patient(session, source.patient_id)]
        elif source is None:  # no identity of that domain: the identifiers others gave
            holders = repository.sources_with_other(session, oid, value)
            found = [repository.patient(session, pid) for pid in {s.patient_id for s in holders}]
    active = [follow_merges(session, p) for p in found if p is not None]
    patients = sorted({p.id: p for p in active if p is not None}.values(), key=lambda p: p.id)
    if not patients:
        raise UnknownPatient(f"no patient has the identifier {value!r} of {oid}")
    return patients


def cross_reference(
    session: Session,
    config: IdentityConfig,
    patients: Sequence[RegionalPatient],
    oid: str,
    value: str,
    *,
    domains: frozenset[str] = frozenset(),
) -> CrossReference:
    """Every identifier of ``patients``, those :func:`resolve` found for ``value`` of ``oid``,
    as the module's rules say: the caller may see it, of ``domains`` (OIDs) if given, and not
    the queried identifier. The caller checks first that each of ``domains`` is known
    (:func:`known_domain`) and answers in its protocol if not."""
    asked = (oid, normalized(config, oid, value))
    answer = []
    for patient in patients:
        sources = access.patient_sources(session, patient.id)
        listed = access.patient_identifiers(sources, patient.rri, config)
        kept = [
            i
            for i in listed
            if (i.system, i.value) != asked and (not domains or i.system in domains)
        ]
        answer.append(PatientIdentifiers(patient.id, patient.rri, kept))
    return CrossReference(answer)
