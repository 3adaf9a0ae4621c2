"""Merges and identifier changes of source identities, and the identifier cross-reference.

- :func:`merge_sources`: IHE PAM ITI-30 *merge* (HL7 v2 ADT^A40; FHIR PMIR ITI-93 merge);
- :func:`change_identifier`: ITI-30 *change patient identifier* (ADT^A47);
- :func:`link_identities` and :func:`unlink_identities`: ITI-30 *link / unlink patient
  information* (ADT^A24, ADT^A37), a facility's manual decision on two of its identities;
- :func:`find_patient` and :func:`cross_reference`: the PIX query (ITI-9 QBP^Q23/RSP^K23,
  later PIXm ITI-83): every identifier of the regional patient behind one identifier.

Nothing is deleted: a merged identity is deactivated with its previous version kept and its
link history extended; services only flush.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.identity import repository
from enrs.identity.models import (
    IdentityTask,
    RegionalPatient,
    SourceIdentity,
    SourceIdentityVersion,
)
from enrs.identity.service import link_source, new_patient, snapshot
from enrs.identity.traits import INS_OIDS
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict, NotFound, Unprocessable
from enrs.kit.events import emit
from enrs.settings import Settings

# The region's OID arc (``ENRS_OID_ROOT``, read once per process: identifiers given out carry
# it); the assigning authority of the regional identifier (FR Core type ``RRI``) is ``.1``.
PLATFORM_OID = Settings().oid_root
RRI_AUTHORITY = f"{PLATFORM_OID}.1"


class UnknownIdentifier(NotFound):
    """No active source identity has this identifier."""


class DuplicateIdentifier(Conflict):
    """The identifier is already taken in its assigning authority."""


@dataclass(frozen=True)
class MergeResult:
    surviving_rri: str
    merged_rri: str
    patient_retired: bool
    already_merged: bool = False


@dataclass(frozen=True)
class Identifier:
    value: str
    system: str  # an OID
    type: str  # PI, RRI or INS (HL7 table 0203)


@dataclass(frozen=True)
class CrossReference:
    patient_id: int
    rri: str
    identifiers: list[Identifier]


def _active(session: Session, authority: str, ipp: str) -> SourceIdentity:
    source = repository.source_by_key(session, authority, ipp)
    if source is None or not source.active:
        raise UnknownIdentifier(f"no active identity {ipp!r} in assigning authority {authority}")
    return source


def _keep_version(session: Session, source: SourceIdentity, *, actor: str) -> None:
    data = {**json.loads(snapshot(source)), "authority": source.authority, "ipp": source.ipp}
    data["active"] = source.active
    session.add(
        SourceIdentityVersion(
            source_id=source.id,
            version=source.version,
            data=json.dumps(data, default=str),
            actor=actor,
            recorded_at=utcnow(),
        )
    )
    source.version += 1
    source.updated_at = utcnow()


def _rri(session: Session, patient_id: int) -> str:
    patient = repository.patient(session, patient_id)
    assert patient is not None
    return patient.rri


def merge_sources(
    session: Session, *, authority: str, surviving_ipp: str, merged_ipp: str, actor: str
) -> MergeResult:
    """ITI-30 merge (ADT^A40): the identity ``merged_ipp`` disappears into ``surviving_ipp``,
    both of one assigning authority.

    The merged identity is deactivated (its previous version kept), its link ends and a
    ``MERGE`` link to the surviving identity's regional patient is recorded; nothing else
    moves. A regional patient left without active identities becomes inactive, merged into the
    surviving one's (event ``identity.merged``). Repeating a merge already done is a no-op.

    Raises :class:`UnknownIdentifier` (either identity unknown or inactive) and
    :class:`Unprocessable` (an identity merged into itself)."""
    surviving = _active(session, authority, surviving_ipp)
    merged = repository.source_by_key(session, authority, merged_ipp)
    if merged is None:
        raise UnknownIdentifier(f"no identity {merged_ipp!r} in assigning authority {authority}")
    if merged.id == surviving.id:
        raise Unprocessable(f"identity {merged_ipp!r} cannot be merged into itself")
    if not merged.active:
        link = repository.current_link(session, merged.id)
        if link is not None and link.method == "MERGE" and link.patient_id == surviving.patient_id:
            rri = _rri(session, surviving.patient_id)
            return MergeResult(rri, rri, patient_retired=False, already_merged=True)
        raise UnknownIdentifier(f"identity {merged_ipp!r} is already deactivated")
    former = merged.patient_id
    merged_rri = _rri(session, former)
    _keep_version(session, merged, actor=actor)
    merged.active = False
    session.flush()
    link_source(
        session,
        merged,
        surviving.patient_id,
        "MERGE",
        actor=actor,
        reason=f"merged into identity {surviving_ipp} of {authority}",
    )
    retired = former != surviving.patient_id and _retire(session, former, surviving.patient_id)
    session.flush()
    return MergeResult(_rri(session, surviving.patient_id), merged_rri, retired)


def _retire(session: Session, patient_id: int, into: int) -> bool:
    """A regional patient left without active identities is merged into ``into``."""
    if repository.sources_of_patient(session, patient_id):
        return False
    patient = repository.patient(session, patient_id)
    if patient is None or not patient.active:
        return False
    patient.active, patient.merged_into_id, patient.updated_at = False, into, utcnow()
    emit(session, "identity.merged", {"from_patient_id": patient_id, "into_patient_id": into})
    return True


def change_identifier(
    session: Session, *, authority: str, old_ipp: str, new_ipp: str, actor: str
) -> str:
    """ITI-30 change patient identifier (ADT^A47): ``old_ipp`` becomes ``new_ipp``, the previous
    version kept (event ``identity.identifier_changed``). Returns the regional id (RRI).

    Raises :class:`UnknownIdentifier` (``old_ipp`` unknown or inactive) and
    :class:`DuplicateIdentifier` (``new_ipp`` exists: that is a merge, A40)."""
    source = _active(session, authority, old_ipp)
    if old_ipp == new_ipp:
        return _rri(session, source.patient_id)
    if repository.source_by_key(session, authority, new_ipp) is not None:
        raise DuplicateIdentifier(
            f"identity {new_ipp!r} already exists in assigning authority {authority} "
            "(a merge, ADT^A40, is needed)"
        )
    _keep_version(session, source, actor=actor)
    source.ipp = new_ipp
    session.flush()
    emit(
        session,
        "identity.identifier_changed",
        {"source_id": source.id, "authority": authority, "old": old_ipp, "new": new_ipp},
    )
    return _rri(session, source.patient_id)


def authority_known(session: Session, authority: str) -> bool:
    """Whether ``authority`` is a domain the cross-reference can answer for."""
    if authority == RRI_AUTHORITY or authority in INS_OIDS:
        return True
    stmt = select(SourceIdentity.id).where(SourceIdentity.authority == authority).limit(1)
    return session.scalar(stmt) is not None


def find_patient(session: Session, *, system: str, value: str) -> RegionalPatient | None:
    """The active regional patient behind an identifier: an IPP of an assigning authority, the
    regional id (:data:`RRI_AUTHORITY`) or an INS (an INS OID). A merged patient leads to the
    one it was merged into."""
    found: RegionalPatient | None = None
    if system == RRI_AUTHORITY:
        found = repository.patient_by_rri(session, value)
    elif system in INS_OIDS:
        same = repository.sources_by_ins(session, value.replace(" ", "").upper())
        found = repository.patient(session, same[0].patient_id) if same else None
    else:
        source = repository.source_by_key(session, system, value)
        if source is not None and source.active:
            found = repository.patient(session, source.patient_id)
    hops = 0
    while found is not None and not found.active and found.merged_into_id and hops < 16:
        found, hops = repository.patient(session, found.merged_into_id), hops + 1
    return found if found is not None and found.active else None


def cross_reference(session: Session, patient: RegionalPatient) -> CrossReference:
    """Every identifier of ``patient``: the IPPs of its active identities, its regional id,
    and its INS when one of its identities is qualified (only a qualified INS is shared)."""
    sources = repository.sources_of_patient(session, patient.id)
    identifiers = [Identifier(s.ipp, s.authority, "PI") for s in sources]
    identifiers.append(Identifier(patient.rri, RRI_AUTHORITY, "RRI"))
    seen: set[str] = set()
    for s in sources:
        if s.status == "QUAL" and s.ins and s.ins_system and s.ins not in seen:
            seen.add(s.ins)
            identifiers.append(Identifier(s.ins, s.ins_system, "INS"))
    return CrossReference(patient.id, patient.rri, identifiers)


@dataclass(frozen=True)
class LinkResult:
    first_rri: str
    second_rri: str
    changed: bool


def _pair(
    session: Session, authority: str, first_ipp: str, second_ipp: str
) -> tuple[SourceIdentity, SourceIdentity]:
    first = _active(session, authority, first_ipp)
    second = _active(session, authority, second_ipp)
    if first.id == second.id:
        raise Unprocessable(f"identity {first_ipp!r} cannot be linked with itself")
    return first, second


def link_identities(
    session: Session, *, authority: str, first_ipp: str, second_ipp: str, actor: str
) -> LinkResult:
    """ITI-30 *link patient information* (ADT^A24): the facility says its identities
    ``first_ipp`` and ``second_ipp`` are one person. The second joins the first's regional
    patient, a manual link (method ``MANUAL``, the link history kept, as the cell's ``LINK``
    decision does); its former patient, left without identities, is retired into the first's.
    Linking identities already together changes nothing.

    Raises :class:`UnknownIdentifier` (either identity unknown or inactive) and
    :class:`Unprocessable` (the two carry different INS: two persons)."""
    first, second = _pair(session, authority, first_ipp, second_ipp)
    if first.ins and second.ins and first.ins != second.ins:
        raise Unprocessable(
            f"identities {first_ipp!r} and {second_ipp!r} carry different INS: two persons"
        )
    into = first.patient_id
    if second.patient_id == into:
        rri = _rri(session, into)
        return LinkResult(rri, rri, changed=False)
    former = second.patient_id
    reason = f"ADT^A24: identity {second_ipp} of {authority} is identity {first_ipp}"
    link_source(session, second, into, "MANUAL", actor=actor, reason=reason)
    _retire(session, former, into)
    session.flush()
    rri = _rri(session, into)
    return LinkResult(rri, rri, changed=True)


def unlink_identities(
    session: Session, *, authority: str, first_ipp: str, second_ipp: str, actor: str
) -> LinkResult:
    """ITI-30 *unlink patient information* (ADT^A37): the identities ``first_ipp`` and
    ``second_ipp`` of the facility are two persons. If they share a regional patient, the
    second leaves it (method ``MANUAL``, event ``identity.unlinked``): back to the regional
    patient it had before a manual link (an A24, or the cell's), brought back if that link had
    retired it, else to a new regional patient. Identities already apart: nothing changes.

    Raises :class:`UnknownIdentifier` (either identity unknown or inactive)."""
    first, second = _pair(session, authority, first_ipp, second_ipp)
    shared = first.patient_id
    if second.patient_id != shared:
        return LinkResult(_rri(session, shared), _rri(session, second.patient_id), changed=False)
    target = _former_patient(session, second, shared)
    if target is None:
        target = new_patient(session)
    elif not target.active:
        target.active, target.merged_into_id, target.updated_at = True, None, utcnow()
        emit(session, "identity.unmerged", {"patient_id": target.id})
    reason = f"ADT^A37: identity {second_ipp} of {authority} is not identity {first_ipp}"
    link_source(session, second, target.id, "MANUAL", actor=actor, reason=reason)
    # Recorded as the cell's decision on a collision would be: in the cell's history, and
    # binding on matching (service.decide never links the two automatically again).
    now = utcnow()
    session.add(
        IdentityTask(
            kind="COLLISION",
            status="DONE",
            source_id=second.id,
            other_patient_id=shared,
            other_source_id=first.id,
            created_at=now,
            decision="UNLINK",
            decided_by=actor,
            reason=reason,
            decided_at=now,
            effects=json.dumps([{"source_id": second.id, "from": shared, "to": target.id}]),
        )
    )
    emit(
        session,
        "identity.unlinked",
        {"source_id": second.id, "from_patient_id": shared, "to_patient_id": target.id},
    )
    session.flush()
    return LinkResult(_rri(session, shared), target.rri, changed=True)


def _former_patient(
    session: Session, source: SourceIdentity, current: int
) -> RegionalPatient | None:
    """The regional patient ``source`` belonged to before a manual link into ``current``:
    still active, or retired into ``current`` by that link; else ``None``."""
    links = repository.links_of(session, source.id)
    if len(links) < 2 or links[0].method != "MANUAL" or links[0].patient_id != current:
        return None
    former = repository.patient(session, links[1].patient_id)
    if former is None or former.id == current:
        return None
    if former.active or former.merged_into_id == current:
        return former
    return None
