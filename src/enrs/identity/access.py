"""What a facility's client may read of the regional identity registry: the read policy, in one
place. Every read of the identity server goes through it: PDQm ITI-78 search and read, ITI-119
``$match``, PIXm ITI-83 and the HL7 v2 PIX query ITI-9 (both through :mod:`.xref`), the
regional view ``Patient/{RRI}``.

The rules (RNIV, and what a regional MPI is for):

1. **Regional reads.** A facility's client with ``Patient.s`` may search (ITI-78), match
   (ITI-119) and cross-reference (ITI-83, ITI-9) every *active* identity of the region,
   whichever facility fed it; with ``Patient.r`` it may read any of them and any regional
   patient. Finding a patient known elsewhere is the point of an MPI. (The scopes are checked by
   :mod:`.auth`; an HL7 v2 query by the listener's sender rules.)
2. **Inactive identities are history.** An identity deactivated (merged into another, ADT^A40)
   is never found by search, match or cross-reference, and its data is never given out again: a
   read of it says only that it is inactive and which regional patient replaced it. Its former
   versions and links stay in the registry for the identitovigilance cell.
3. **The INS only from a qualified identity.** An identity shows its IPP, the regional
   identifier (RRI) and its INS only if it is *qualified* (status ``QUAL``: an INS is shared,
   and trusted, only once qualified). One exception: the ITI-104 answer echoes the facility's
   own identity, with the INS it has just sent. A regional patient shows the IPPs of its active
   identities, its RRI and the INS of its qualified identities.
4. **An INS leads to a patient only through a qualified identity** carrying it: searching or
   cross-referencing by INS, and ``$match``'s ``certain`` grade on an equal INS, see only
   qualified identities; an INS not qualified is as if absent.
5. **A retired regional patient** (its identities all merged elsewhere) reads as its RRI, inactive,
   with a ``replaced-by`` link to the patient it was merged into, and no traits.

The identitovigilance cell's workbench (the portal) sees every identity, active or not, with
its INS whatever its status: reviewing them is its job. It is not a facility's client and does
not read through this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.identity import repository
from enrs.identity.config import IdentityConfig
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.identity.traits import INS_NIR_OID

S = SourceIdentity
P = RegionalPatient

QUALIFIED = "QUAL"
"""The identity status whose INS is shared and trusted (rules 3 and 4)."""


@dataclass(frozen=True)
class Identifier:
    """An identifier as a caller sees it: ``system`` is an OID, ``type`` the HL7 table 0203
    code (``PI`` a facility's IPP, ``RRI`` the regional identifier, ``INS``)."""

    value: str
    system: str
    type: str


# --- which identities (rules 1, 2) -------------------------------------------------------


def readable_sources() -> Select[Any]:
    """The base statement of every read of identities: the active ones, each with its regional
    patient's RRI (``(SourceIdentity, rri)`` rows). Searches add their filters to it."""
    stmt = select(S, P.rri).join(P, P.id == S.patient_id).where(S.active.is_(True))
    return cast("Select[Any]", stmt)


def is_readable(source: SourceIdentity) -> bool:
    """The same rule on an identity already loaded."""
    return source.active


# Built once, values bound at each call: a read costs no statement building (and SQLAlchemy
# computes each one's cache key once).
_BY_ID = readable_sources().where(S.id == bindparam("id"))
_OF_PATIENT = readable_sources().where(S.patient_id == bindparam("patient")).order_by(S.id)


def readable_source(session: Session, source_id: int) -> tuple[SourceIdentity, str] | None:
    """The identity ``source_id`` and its RRI, if readable."""
    row = session.execute(_BY_ID, {"id": source_id}).first()
    return (row[0], row[1]) if row is not None else None


def patient_sources(session: Session, patient_id: int) -> list[SourceIdentity]:
    """The readable identities of a regional patient, oldest first."""
    return [row[0] for row in session.execute(_OF_PATIENT, {"patient": patient_id})]


def visible(sources: Iterable[SourceIdentity]) -> list[SourceIdentity]:
    """``sources`` without those a caller may not read (for results not read through
    :func:`readable_sources`, e.g. the candidates of matching)."""
    return [s for s in sources if is_readable(s)]


# --- which INS (rules 3, 4) ----------------------------------------------------------------


def ins_trusted(source: SourceIdentity) -> bool:
    """Whether the INS of ``source`` may be shown and may lead to its patient."""
    return bool(source.ins) and source.active and source.status == QUALIFIED


def trusted_ins_clause() -> ColumnElement[bool]:
    """:func:`ins_trusted` in SQL, for searches by INS (besides the active filter of
    :func:`readable_sources`)."""
    return S.status == QUALIFIED


def trusted_ins_holders(session: Session, ins: str) -> list[SourceIdentity]:
    """The active identities whose INS ``ins`` may be trusted, oldest first."""
    return [s for s in repository.sources_by_ins(session, ins) if ins_trusted(s)]


# --- which identifiers (rule 3) --------------------------------------------------------------


def _ins(source: SourceIdentity) -> Identifier:
    assert source.ins is not None
    return Identifier(source.ins, source.ins_system or INS_NIR_OID, "INS")


def source_identifiers(
    source: SourceIdentity,
    rri: str,
    config: IdentityConfig,
    *,
    fed_by_caller: bool = False,
) -> list[Identifier]:
    """What a caller sees of one identity: its IPP, its INS when trusted (or when the caller
    has just fed it: the ITI-104 answer), the other identifiers kept with it
    (:mod:`.others`), the RRI of its regional patient."""
    found = [Identifier(source.ipp, source.authority, "PI")]
    if source.ins and (fed_by_caller or ins_trusted(source)):
        found.append(_ins(source))
    found += others_of(source)
    return [*found, Identifier(rri, config.rri_authority, "RRI")]


def others_of(source: SourceIdentity) -> list[Identifier]:
    """The other identifiers kept with ``source`` (:mod:`.others`; the column of its row)."""
    try:
        rows = json.loads(source.other_identifiers) if source.other_identifiers else []
    except ValueError:
        return []
    return [Identifier(str(v), str(s), str(t or "PI")) for s, v, t in rows]


def patient_identifiers(
    sources: Sequence[SourceIdentity],
    rri: str,
    config: IdentityConfig,
) -> list[Identifier]:
    """What a caller sees of a regional patient: the IPP of each of its readable identities,
    the INS of its qualified ones (each once), the other identifiers kept with them
    (each once, none that an IPP already lists), its RRI."""
    readable = visible(sources)
    found = [Identifier(s.ipp, s.authority, "PI") for s in readable]
    for ins in dict.fromkeys(_ins(s) for s in readable if ins_trusted(s)):
        found.append(ins)
    listed = {(i.system, i.value) for i in found}
    for source in readable:
        for other in others_of(source):
            if (other.system, other.value) not in listed:
                listed.add((other.system, other.value))
                found.append(other)
    return [*found, Identifier(rri, config.rri_authority, "RRI")]


# --- how other services name a patient ---------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """A regional patient as a care team names them: the names and birth date of its best
    identity (a qualified one first, else the oldest active one), and the INS of a qualified
    identity (rule 3; ``None`` when none is qualified)."""

    family: str
    given: str
    birth_date: date | None
    ins: str | None


def card(session: Session, patient_ids: Sequence[int]) -> Card | None:
    """The :class:`Card` of the patient (its merged patients' identities too, in the order
    given), ``None`` when it has no active identity."""
    sources = [s for pid in patient_ids for s in patient_sources(session, pid)]
    if not sources:
        return None
    qualified = [s for s in sources if ins_trusted(s)]
    best = (qualified or sources)[0]
    family = best.used_name or best.birth_name
    return Card(family, best.given_names, best.birth_date, best.ins if qualified else None)
