"""The regional patients an identity event concerns, as its transaction leaves them: added to
the event when it commits (:func:`enrs.kit.events.enrich_at_commit`), so that whoever reads
the event later (the notifications, :mod:`.notify`) sees each change in commit order with
the identifiers of that moment, not those of a later change.

``payload["state"]``: for each patient id the event names (``patient_id``,
``from_patient_id``, ``into_patient_id``, ``to_patient_id``), its RRI, whether it is active,
the RRI it was merged into, and its active identities as ``[id, authority, ipp, ins,
ins_system, status, other_identifiers]``; a patient retired by a merge also lists, as
``moved``, the identities that left it (``[id, authority, ipp, active]``). Events of a new
identity with a new patient (``identity.linked`` method ``NEW``) concern nobody else and are
left as they are."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from enrs.identity.models import IdentityLink, RegionalPatient, SourceIdentity

PATIENT_KEYS = ("patient_id", "from_patient_id", "into_patient_id", "to_patient_id")
S = SourceIdentity


def _concerned(payload: dict[str, Any]) -> list[int]:
    return [int(payload[k]) for k in PATIENT_KEYS if payload.get(k)]


def states(session: Session, patient_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    ids = sorted(set(patient_ids))
    if not ids:
        return {}
    survivor = aliased(RegionalPatient)
    P = RegionalPatient
    found: dict[int, dict[str, Any]] = {}
    rows = session.execute(
        select(P.id, P.rri, P.active, survivor.rri)
        .outerjoin(survivor, survivor.id == P.merged_into_id)
        .where(P.id.in_(ids))
    )
    for pid, rri, active, survivor_rri in rows:
        found[pid] = {"rri": rri, "active": active, "survivor": survivor_rri, "sources": []}
    sources = session.execute(
        select(
            S.patient_id,
            S.id,
            S.authority,
            S.ipp,
            S.ins,
            S.ins_system,
            S.status,
            S.other_identifiers,
        )
        .where(S.patient_id.in_(ids), S.active.is_(True))
        .order_by(S.id)
    )
    for pid, *key in sources:
        found[pid]["sources"].append(list(key))
    return found


def moved_from(session: Session, patient_ids: Iterable[int]) -> dict[int, list[list[Any]]]:
    """For each patient, the identities whose link to it has ended (they left it)."""
    ids = sorted(set(patient_ids))
    moved: dict[int, list[list[Any]]] = {pid: [] for pid in ids}
    if not ids:
        return moved
    L = IdentityLink
    rows = session.execute(
        select(L.patient_id, S.id, S.authority, S.ipp, S.active)
        .join(S, S.id == L.source_id)
        .where(L.patient_id.in_(ids), L.ended_at.is_not(None))
        .order_by(S.id)
        .distinct()
    )
    for pid, *key in rows:
        moved[pid].append(list(key))
    return moved


def enrich(session: Session, rows: list[dict[str, Any]]) -> None:
    """The :func:`~enrs.kit.events.enrich_at_commit` hook of the ``identity.`` events."""
    wanted = [
        r
        for r in rows
        if not (r["name"] == "identity.linked" and r["payload"].get("method") == "NEW")
    ]
    ids = {pid for r in wanted for pid in _concerned(r["payload"])}
    if not ids:
        return
    found = states(session, ids)
    retired = {r["payload"]["from_patient_id"] for r in wanted if r["name"] == "identity.merged"}
    moved = moved_from(session, retired)
    for row in wanted:
        state = {}
        for pid in _concerned(row["payload"]):
            if pid in found:
                state[str(pid)] = dict(found[pid])
                if row["name"] == "identity.merged" and pid in moved:
                    state[str(pid)]["moved"] = moved[pid]
        row["payload"]["state"] = state
