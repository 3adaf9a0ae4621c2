"""A facility's updates of its patients' identities, IHE PAM ITI-30 *Patient Identity
Management* beyond create and update (which are ``service.feed``):

- :func:`merge_sources`: *merge* (HL7 v2 ADT^A40; FHIR PMIR ITI-93 merge);
- :func:`change_identifier`: *change patient identifier* (ADT^A47);
- :func:`link_identities` and :func:`unlink_identities`: *link / unlink patient information*
  (ADT^A24, ADT^A37), a facility's manual decision on two of its identities.

Nothing is deleted: a merged identity is deactivated with its previous version kept and its
link history extended; services only flush.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy.orm import Session

from enrs.identity import repository
from enrs.identity.models import IdentityTask, RegionalPatient, SourceIdentity
from enrs.identity.service import keep_version, link_source, new_patient, retire_if_empty
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict, NotFound, Unprocessable
from enrs.kit.events import emit, set_origin


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


def _active(session: Session, authority: str, ipp: str) -> SourceIdentity:
    source = repository.source_by_key(session, authority, ipp)
    if source is None or not source.active:
        raise UnknownIdentifier(f"no active identity {ipp!r} in assigning authority {authority}")
    return source


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
    set_origin(session, authority)
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
    keep_version(session, merged, actor=actor)
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
    into = surviving.patient_id
    retired = former != into and retire_if_empty(session, former, into=into)
    session.flush()
    return MergeResult(_rri(session, surviving.patient_id), merged_rri, retired)


def change_identifier(
    session: Session, *, authority: str, old_ipp: str, new_ipp: str, actor: str
) -> str:
    """ITI-30 change patient identifier (ADT^A47): ``old_ipp`` becomes ``new_ipp``, the previous
    version kept (event ``identity.identifier_changed``). Returns the regional id (RRI).

    Raises :class:`UnknownIdentifier` (``old_ipp`` unknown or inactive) and
    :class:`DuplicateIdentifier` (``new_ipp`` exists: that is a merge, A40)."""
    set_origin(session, authority)
    source = _active(session, authority, old_ipp)
    if old_ipp == new_ipp:
        return _rri(session, source.patient_id)
    if repository.source_by_key(session, authority, new_ipp) is not None:
        raise DuplicateIdentifier(
            f"identity {new_ipp!r} already exists in assigning authority {authority} "
            "(a merge, ADT^A40, is needed)"
        )
    keep_version(session, source, actor=actor)
    source.ipp = new_ipp
    session.flush()
    emit(
        session,
        "identity.identifier_changed",
        {
            "source_id": source.id,
            "patient_id": source.patient_id,
            "authority": authority,
            "old": old_ipp,
            "new": new_ipp,
        },
    )
    return _rri(session, source.patient_id)


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
    set_origin(session, authority)
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
    retire_if_empty(session, former, into=into)
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
    set_origin(session, authority)
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
    link_source(session, second, target.id, "MANUAL", actor=actor, reason=reason, announce=False)
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
