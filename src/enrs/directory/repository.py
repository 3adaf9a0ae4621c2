"""All the directory's SQL.

The import (:mod:`.imports`) stages an extraction in ``<table>_stage`` (:func:`stage`), then
:func:`apply` compares it with the table by key and content hash, in the transaction the
caller holds: new entries inserted, changed ones updated, national entries the extraction no
longer has made inactive (never deleted).

An entry registered in the region (``origin`` ``regional``) is never *gone*: only national
entries are made inactive. Its key cannot be in a national file (a local identifier begins
with a letter, a regional activity key with ``R``) until an RPPS number is attached to a
regional professional: when the national file then lists that RPPS, the national entry takes
over the row (its data, ``origin`` national), which keeps its local identifier and its
regional activities."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from enrs.directory.models import (
    ACTIVITY_STAGE,
    DIPLOMA_STAGE,
    MAILBOX_STAGE,
    POSITION_STAGE,
    PROFESSIONAL_STAGE,
    QUALIFICATION_STAGE,
    STRUCTURE_STAGE,
    Activity,
    Diploma,
    LocalCounter,
    Mailbox,
    Professional,
    Qualification,
    Structure,
)
from enrs.kit.db import indexes_rebuilt, insert_rows_ignoring_duplicates

PROFESSIONAL: Table = Professional.__table__  # type: ignore[assignment]
ACTIVITY: Table = Activity.__table__  # type: ignore[assignment]
STRUCTURE: Table = Structure.__table__  # type: ignore[assignment]
QUALIFICATION: Table = Qualification.__table__  # type: ignore[assignment]
DIPLOMA: Table = Diploma.__table__  # type: ignore[assignment]
MAILBOX: Table = Mailbox.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Target:
    """A table the national files feed, with its stage table and its key; ``per_professional``:
    each row belongs to a professional of the directory (``professional_id``, found by
    ``id_nat_ps``), a row of a professional the directory does not hold is left out."""

    table: Table
    stage: Table
    key: str
    per_professional: bool = False


TARGETS = {
    "directory_professional": Target(PROFESSIONAL, PROFESSIONAL_STAGE, "id_nat_ps"),
    "directory_activity": Target(ACTIVITY, ACTIVITY_STAGE, "activity_key", True),
    "directory_qualification": Target(
        QUALIFICATION, QUALIFICATION_STAGE, "qualification_key", True
    ),
    "directory_diploma": Target(DIPLOMA, DIPLOMA_STAGE, "diploma_key", True),
    "directory_mailbox": Target(MAILBOX, MAILBOX_STAGE, "address"),
    "directory_structure": Target(STRUCTURE, STRUCTURE_STAGE, "finess"),
    "directory_structure_position": Target(STRUCTURE, POSITION_STAGE, "finess"),
}


class MassRemoval(Exception):
    """Applying the extraction would make too many national entries inactive."""


def clear_stage(conn: Connection, names: Sequence[str]) -> None:
    for name in names:
        conn.execute(delete(TARGETS[name].stage))


def stage(conn: Connection, name: str, rows: Sequence[dict[str, Any]]) -> None:
    """Add ``rows`` to the stage of target ``name``; a key already staged keeps its first row
    (a professional appears on each of their activity lines)."""
    insert_rows_ignoring_duplicates(conn, TARGETS[name].stage, rows)


def staged(conn: Connection, name: str) -> int:
    return int(conn.scalar(select(func.count()).select_from(TARGETS[name].stage)) or 0)


def _national(t: Table) -> ColumnElement[bool]:
    return and_(t.c.active.is_(True), t.c.origin == "national")


def apply(
    conn: Connection, name: str, now: datetime, *, removal_limit: float | None
) -> dict[str, int]:
    """Apply the stage of target ``name`` to its table; the counts of ``new``, ``changed``,
    ``unchanged`` and ``gone`` entries. :class:`MassRemoval` (nothing changed) when more than
    ``removal_limit`` (a fraction) of the active national entries would be gone."""
    target = TARGETS[name]
    if target.stage is POSITION_STAGE:
        return {"changed": _apply_positions(conn, now)}
    t, s, key = target.table, target.stage, target.key
    missing = ~exists().where(s.c[key] == t.c[key])
    gone = int(conn.scalar(select(func.count()).select_from(t).where(_national(t), missing)) or 0)
    if removal_limit is not None and gone:
        total = int(conn.scalar(select(func.count()).select_from(t).where(_national(t))) or 0)
        if gone > removal_limit * total:
            raise MassRemoval(
                f"{t.name}: {gone} of {total} active entries would be made inactive "
                f"(over {removal_limit:.0%}): a partial extraction? (--allow-removals)"
            )
    columns = [c.name for c in s.columns]
    stamp = [
        literal("national"),
        literal(True),
        literal(now, t.c.created_at.type),
        literal(now, t.c.updated_at.type),
    ]
    fresh = ~exists().where(t.c[key] == s.c[key])
    source = select(*[s.c[c] for c in columns], *stamp).where(fresh)
    into = [*columns, "origin", "active", "created_at", "updated_at"]
    outside = 0
    if target.per_professional:  # the professional's row, applied before (or held already)
        p = PROFESSIONAL
        source = source.add_columns(p.c.id).join_from(s, p, p.c.id_nat_ps == s.c.id_nat_ps)
        into.append("professional_id")
        unknown = ~exists().where(p.c.id_nat_ps == s.c.id_nat_ps)
        outside = int(conn.scalar(select(func.count()).select_from(s).where(unknown)) or 0)
    adding = insert(t).from_select(into, source).execution_options(preserve_rowcount=True)
    first_load = conn.scalar(select(t.c[key]).limit(1)) is None  # indexes built after it
    with indexes_rebuilt(conn, t) if first_load else nullcontext():
        new = conn.execute(adding).rowcount
    differs = or_(
        t.c.content_hash != s.c.content_hash, t.c.active.is_(False), t.c.origin != "national"
    )
    values: dict[str, Any] = {c: s.c[c] for c in columns if c != key}
    values |= {"active": True, "origin": "national", "updated_at": now}
    total = staged(conn, name)
    changed = 0
    if new + outside < total:  # some staged rows were there already: compare them
        changing = update(t).where(t.c[key] == s.c[key], differs).values(values)
        changed = conn.execute(changing).rowcount
    if gone:
        conn.execute(update(t).where(_national(t), missing).values(active=False, updated_at=now))
    unchanged = total - new - changed - outside
    counts = {"new": new, "changed": changed, "unchanged": unchanged, "gone": gone}
    return counts | ({"outside": outside} if outside else {})


def _apply_positions(conn: Connection, now: datetime) -> int:
    t, s = STRUCTURE, POSITION_STAGE
    moved = or_(
        t.c.latitude.is_(None),
        t.c.latitude != s.c.latitude,
        t.c.longitude != s.c.longitude,
        t.c.position_source.is_(None),
        t.c.position_source != s.c.position_source,
    )
    values = {
        "latitude": s.c.latitude,
        "longitude": s.c.longitude,
        "position_source": s.c.position_source,
        "updated_at": now,
    }
    stmt = update(t).where(t.c.finess == s.c.finess, moved).values(values)
    return int(conn.execute(stmt).rowcount)


def activities_of(
    session: Session, professional_ids: Sequence[int], *, active_only: bool
) -> dict[int, list[Activity]]:
    """The activities of each of ``professional_ids`` (every id a key), in their order."""
    found: dict[int, list[Activity]] = {i: [] for i in professional_ids}
    if professional_ids:
        stmt = select(Activity).where(Activity.professional_id.in_(professional_ids))
        if active_only:
            stmt = stmt.where(Activity.active.is_(True))
        for a in session.scalars(stmt.order_by(Activity.id)):
            found[a.professional_id].append(a)
    return found


# --- regional registration (:mod:`.registration`) -----------------------------------------


def next_local_number(session: Session, kind: str) -> int:
    """The next number of the ``kind`` counter (``professional``, ``structure``), taken under
    the lock of its row, held to the end of the transaction: concurrent registrations wait,
    none shares a number, and a rolled-back one gives its number back."""
    counter: Table = LocalCounter.__table__  # type: ignore[assignment]
    stmt = (
        update(counter)
        .where(counter.c.kind == kind)
        .values(value=counter.c.value + 1)
        .returning(counter.c.value)
    )
    return int(session.execute(stmt).scalar_one())


def professional(session: Session, id_nat_ps: str) -> Professional | None:
    return session.scalar(select(Professional).where(Professional.id_nat_ps == id_nat_ps))


def structure(session: Session, key: str) -> Structure | None:
    """The structure of FINESS (or local identifier) ``key``."""
    return session.scalar(select(Structure).where(Structure.finess == key))


def activity(session: Session, key: str) -> Activity | None:
    return session.scalar(select(Activity).where(Activity.activity_key == key))


def follow_professional(session: Session, professional_id: int, id_nat_ps: str) -> None:
    """The activities of a professional take its new idNatPs (an RPPS number attached)."""
    stmt = update(Activity).where(Activity.professional_id == professional_id)
    session.execute(stmt.values(id_nat_ps=id_nat_ps))


def regional_structures(session: Session, limit: int = 1000) -> list[Structure]:
    """The active structures registered in the region, by name."""
    stmt = select(Structure).where(Structure.origin == "regional", Structure.active.is_(True))
    return list(session.scalars(stmt.order_by(Structure.n_name, Structure.id).limit(limit)))
