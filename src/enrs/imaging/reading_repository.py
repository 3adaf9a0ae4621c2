"""All SQL of teleradiology and second reading (:mod:`enrs.imaging.reading`)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from enrs.imaging.models import Study
from enrs.imaging.reading_models import (
    DONE,
    Reading,
    ReadingGroup,
    ReadingMember,
    ReadingRequest,
)


def group(session: Session, name: str) -> ReadingGroup | None:
    return session.scalars(select(ReadingGroup).where(ReadingGroup.name == name)).first()


def groups(session: Session) -> list[ReadingGroup]:
    return list(session.scalars(select(ReadingGroup).order_by(ReadingGroup.name)))


def members(session: Session, group_id: int) -> list[str]:
    found = select(ReadingMember.rpps).where(ReadingMember.group_id == group_id)
    return sorted(session.scalars(found))


def groups_of(session: Session, rpps: str) -> list[int]:
    found = select(ReadingMember.group_id).where(ReadingMember.rpps == rpps)
    return list(session.scalars(found))


def study(session: Session, study_uid: str) -> Study | None:
    return session.scalars(select(Study).where(Study.study_uid == study_uid)).first()


def study_by_id(session: Session, study_id: int) -> Study:
    return session.get_one(Study, study_id)


def request(
    session: Session, resource_id: str, *, for_update: bool = False
) -> ReadingRequest | None:
    found = select(ReadingRequest).where(ReadingRequest.resource_id == resource_id)
    if for_update:
        found = found.with_for_update()
    return session.scalars(found).first()


def request_by_id(session: Session, request_id: int, *, for_update: bool = False) -> ReadingRequest:
    found = select(ReadingRequest).where(ReadingRequest.id == request_id)
    if for_update:
        found = found.with_for_update()
    return session.scalars(found).one()


def reading(session: Session, resource_id: str) -> Reading | None:
    return session.scalars(select(Reading).where(Reading.resource_id == resource_id)).first()


def readings(session: Session, request_id: int) -> list[Reading]:
    found = select(Reading).where(Reading.request_id == request_id).order_by(Reading.id)
    return list(session.scalars(found))


def open_work(session: Session, group_ids: list[int]) -> list[tuple[Reading, ReadingRequest]]:
    """The readings of the groups' requests that are not done, soonest due first."""
    found = (
        select(Reading, ReadingRequest)
        .join(ReadingRequest, Reading.request_id == ReadingRequest.id)
        .where(ReadingRequest.group_id.in_(group_ids), ReadingRequest.state != DONE)
        .order_by(ReadingRequest.due_at, Reading.id)
    )
    return [(r, q) for r, q in session.execute(found)]


def requests_of_sites(session: Session, finess: frozenset[str]) -> list[ReadingRequest]:
    found = (
        select(ReadingRequest)
        .where(ReadingRequest.requesting_finess.in_(sorted(finess)))
        .order_by(ReadingRequest.requested_at.desc())
        .limit(200)
    )
    return list(session.scalars(found))


def change_reading(session: Session, reading_id: int, version: int, **values: Any) -> bool:
    """Change the reading only if it is still at ``version`` (optimistic lock); the new
    version is ``version + 1``. False when another change came first."""
    done = session.execute(
        update(Reading)
        .where(Reading.id == reading_id, Reading.version == version)
        .values(version=version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], done).rowcount)
