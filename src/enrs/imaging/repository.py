"""All SQL of the imaging archive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Insert,
    Table,
    bindparam,
    delete,
    distinct,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.imaging.models import RESOLVED, Instance, Peer, Series, Study, StudyCorrection
from enrs.kit.db import insert_ignoring_duplicates


def peer(session: Session, aet: str) -> Peer | None:
    return session.scalars(select(Peer).where(Peer.aet == aet)).first()


def peers(session: Session) -> list[Peer]:
    return list(session.scalars(select(Peer).order_by(Peer.aet)))


def remove_peer(session: Session, aet: str) -> bool:
    done = session.execute(delete(Peer).where(Peer.aet == aet))
    return bool(cast(CursorResult[Any], done).rowcount)


def instance(session: Session, sop_instance_uid: str) -> Instance | None:
    found = select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
    return session.scalars(found).first()


# The statements of filing an instance, built once (their parameters bound at each call) and run
# on the session's connection: no ORM machinery around the statements made for every instance.
_INSTANCES, _SERIES = Instance.__table__, Series.__table__
_CONTENT = select(_INSTANCES.c.sha256, _INSTANCES.c.size).where(
    _INSTANCES.c.sop_instance_uid == bindparam("uid")
)
_SERIES_IDS = select(_SERIES.c.id, _SERIES.c.study_id).where(
    _SERIES.c.series_uid == bindparam("uid")
)
_STUDIES = cast(Table, Study.__table__)
_STUDY_STATE = (
    select(
        _STUDIES.c.id,
        _STUDIES.c.study_uid,
        _STUDIES.c.patient_id,
        _STUDIES.c.patient_status,
        _STUDIES.c.patient_note,
        _STUDIES.c.source_patient_id,
        _STUDIES.c.source_issuer,
    )
    .where(_STUDIES.c.study_uid == bindparam("uid"))
    .with_for_update()
)
_STUDY_PATIENT = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("study"))
    .values(
        patient_id=bindparam("patient_id"),
        patient_status=bindparam("patient_status"),
        patient_note=bindparam("patient_note"),
        updated_at=bindparam("now"),
    )
)
_INSERTS: dict[tuple[str, str], Insert] = {}


@dataclass
class StudyState:
    """What filing reads of a study's row, and reconciles (its patient)."""

    id: int
    study_uid: str
    patient_id: int | None
    patient_status: str
    patient_note: str | None
    source_patient_id: str | None
    source_issuer: str | None


def study_state(session: Session, study_uid: str) -> StudyState | None:
    """The study's patient and identifier, its row locked until the transaction ends (as
    :func:`study_for_update`)."""
    row = session.connection().execute(_STUDY_STATE, {"uid": study_uid}).first()
    return None if row is None else StudyState(*row)


def update_study_patient(session: Session, study: StudyState, now: datetime) -> None:
    """Write the study's patient, status and note as reconciled."""
    session.connection().execute(
        _STUDY_PATIENT,
        {
            "study": study.id,
            "patient_id": study.patient_id,
            "patient_status": study.patient_status,
            "patient_note": study.patient_note,
            "now": now,
        },
    )


def instance_content(session: Session, sop_instance_uid: str) -> tuple[str, int] | None:
    """The sha256 and size of the archived instance, if any."""
    row = session.connection().execute(_CONTENT, {"uid": sop_instance_uid}).first()
    return None if row is None else (row[0], row[1])


def study(session: Session, study_uid: str) -> Study | None:
    return session.scalars(select(Study).where(Study.study_uid == study_uid)).first()


def series(session: Session, series_uid: str) -> tuple[int, int] | None:
    """The series' id and its study's id."""
    row = session.connection().execute(_SERIES_IDS, {"uid": series_uid}).first()
    return None if row is None else (row[0], row[1])


def insert_if_absent(session: Session, model: type[Any], values: dict[str, Any]) -> int | None:
    """Insert a row of ``model`` unless one with the same unique key is there (another
    association may be storing into the same study or series at this moment); the new row's
    id, ``None`` when it was there."""
    conn = session.connection()
    table = model.__table__
    statement = _INSERTS.get((conn.dialect.name, table.name))
    if statement is None:
        statement = insert_ignoring_duplicates(conn, table).returning(table.c.id)
        _INSERTS[(conn.dialect.name, table.name)] = statement
    row = conn.execute(statement, values).first()  # (rowcount is -1 on psycopg)
    return None if row is None else int(row[0])


def instances_of_study(session: Session, study_id: int) -> list[Instance]:
    found = (
        select(Instance)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study_id)
        .order_by(Instance.id)
    )
    return list(session.scalars(found))


def study_summaries(
    session: Session, visible: ColumnElement[bool], patient_ids: Sequence[int], *, limit: int
) -> list[tuple[Study, list[str], int]]:
    """The studies attached to the patient (``patient_ids``: theirs and those merged into
    them) that ``visible`` allows (:func:`enrs.imaging.access.visible_clause`), newest first,
    each with its modalities and number of instances (the portal's list)."""
    of_patient = (Study.patient_status == RESOLVED) & Study.patient_id.in_(patient_ids)
    found = select(Study).where(of_patient, visible)
    found = found.order_by(Study.study_date.desc().nulls_last(), Study.id.desc()).limit(limit)
    studies = list(session.scalars(found))
    ids = [s.id for s in studies]
    modalities: dict[int, list[str]] = {i: [] for i in ids}
    counts: dict[int, int] = dict.fromkeys(ids, 0)
    if ids:
        pairs = select(Series.study_id, Series.modality).where(
            Series.study_id.in_(ids), Series.modality.is_not(None)
        )
        for study_id, modality in session.execute(pairs.distinct()):
            modalities[study_id].append(str(modality))
        counted = (
            select(Series.study_id, func.count(distinct(Instance.id)))
            .join(Instance, Instance.series_id == Series.id)
            .where(Series.study_id.in_(ids))
            .group_by(Series.study_id)
        )
        counts.update({int(i): int(n) for i, n in session.execute(counted)})
    return [(s, sorted(modalities[s.id]), counts[s.id]) for s in studies]


# --- the cell's corrections (:mod:`enrs.imaging.correction`) -------------------------------------


def study_for_update(session: Session, study_uid: str) -> Study | None:
    """The study, its row locked until the transaction ends (on SQLite the write transaction
    already serializes writers): two corrections, or a correction and a filing, one at a time."""
    found = select(Study).where(Study.study_uid == study_uid).with_for_update()
    return session.scalars(found).first()


def studies(
    session: Session, statuses: Sequence[str] | None, *, limit: int, offset: int
) -> tuple[list[Study], int]:
    """The studies of ``statuses`` (all when ``None``), oldest first, a page; and their count."""
    where = [Study.patient_status.in_(statuses)] if statuses is not None else []
    total = session.scalar(select(func.count()).select_from(Study).where(*where)) or 0
    page = select(Study).where(*where).order_by(Study.created_at, Study.id)
    return list(session.scalars(page.limit(limit).offset(offset))), total


def corrections(session: Session, study_id: int) -> list[StudyCorrection]:
    """The study's corrections, oldest first."""
    found = select(StudyCorrection).where(StudyCorrection.study_id == study_id)
    return list(session.scalars(found.order_by(StudyCorrection.id)))


def last_correction_id(session: Session, study_id: int) -> int:
    found = select(func.max(StudyCorrection.id)).where(StudyCorrection.study_id == study_id)
    return session.scalar(found) or 0


def corrected_away(session: Session, study_id: int) -> frozenset[tuple[str | None, str | None]]:
    """The (PatientID, issuer) pairs the cell's corrections of the study replaced."""
    found = select(
        StudyCorrection.source_patient_id_before, StudyCorrection.source_issuer_before
    ).where(StudyCorrection.study_id == study_id)
    return frozenset((pid, issuer) for pid, issuer in session.execute(found))


def study_instances(
    session: Session,
    study_id: int,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> list[tuple[Instance, str]]:
    """The instances of a study (of one of its series, or one of them) with their series UID,
    in series then instance number order (WADO-RS)."""
    found = (
        select(Instance, Series.series_uid)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study_id)
    )
    if series_uid is not None:
        found = found.where(Series.series_uid == series_uid)
    if sop_instance_uid is not None:
        found = found.where(Instance.sop_instance_uid == sop_instance_uid)
    found = found.order_by(Series.id, Instance.instance_number, Instance.id)
    return [(row[0], row[1]) for row in session.execute(found)]
