"""Queries on the imaging archive's index: what a C-FIND (and, later, a QIDO-RS search) answers,
and which instances a C-GET / C-MOVE retrieves.

:func:`find` answers a query at a level (``PATIENT``, ``STUDY``, ``SERIES``, ``IMAGE``) of the
Patient Root or Study Root information model (PS3.4 C.6.1, C.6.2): ``filters`` maps attribute
keywords to the values of the request's identifier (an empty value is a return key), ``include``
names further return keys; ``limit`` / ``offset`` page the answer; ``visible``, an SQLAlchemy
condition on :class:`~enrs.imaging.models.Study`, restricts the studies the caller may see (a web
layer's access rule: C-FIND passes none). Each answer is a pydicom :class:`Dataset` with
QueryRetrieveLevel, the unique keys of its level and the levels above, and every requested key,
valued from the index or empty.

Keys the index holds, and their matching (PS3.4 C.2.2.2):

=================  ==================================  ========================================
level              keys                                matching
=================  ==================================  ========================================
PATIENT            PatientID, IssuerOfPatientID,       single value; ``*`` / ``?`` wildcards on
                   PatientSex                          text (case-sensitive)
                   PatientName                         the same, case-insensitive (allowed for
                                                       PN)
                   PatientBirthDate                    date, or range ``A-B``, ``A-``, ``-B``
STUDY              StudyInstanceUID                    UID list ``uid1\\uid2``
                   StudyDate                           date or range
                   AccessionNumber, StudyDescription   single value or wildcards
                   ModalitiesInStudy                   a study with a series of one of the
                                                       values (``CT\\MR``)
SERIES             SeriesInstanceUID                   UID list
                   Modality, SeriesDescription         single value or wildcards
                   SeriesNumber                        single integer
IMAGE              SOPInstanceUID, SOPClassUID         UID list
                   InstanceNumber                      single integer
=================  ==================================  ========================================

Return-only counts: NumberOfPatientRelatedStudies / Series / Instances,
NumberOfStudyRelatedSeries / Instances, NumberOfSeriesRelatedInstances. An empty value is a
universal match. Keys of the level and the levels above are matched ("relational" leniency: a
Patient Root query at STUDY level needs no PatientID); any other key of the data dictionary (not
held by the index, or of a lower level) is returned empty and not matched, as PS3.4 asks of keys
an SCP does not support. A study whose value is absent does not match a non-universal key.

Studies the cell flagged (``patient_status`` ``unknown`` or ``conflict``) are found like the
others: the modalities and the RIS that sent them need them back; only the regional patient is
missing (:attr:`Match.patients` is then empty).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, Select, and_, case, distinct, func, null, or_, select
from sqlalchemy.orm import Session

from enrs.imaging.models import RESOLVED, Instance, Series, Study

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT_ROOT, STUDY_ROOT = "PATIENT", "STUDY"

# keyword -> (level, column, kind); kinds: text, pn, date, uid, int
_KEYS: dict[str, tuple[str, Any, str]] = {
    "PatientID": ("PATIENT", Study.source_patient_id, "text"),
    "IssuerOfPatientID": ("PATIENT", Study.source_issuer, "text"),
    "PatientName": ("PATIENT", Study.patient_name, "pn"),
    "PatientBirthDate": ("PATIENT", Study.patient_birth_date, "date"),
    "PatientSex": ("PATIENT", Study.patient_sex, "text"),
    "StudyInstanceUID": ("STUDY", Study.study_uid, "uid"),
    "StudyDate": ("STUDY", Study.study_date, "date"),
    "AccessionNumber": ("STUDY", Study.accession_number, "text"),
    "StudyDescription": ("STUDY", Study.study_description, "text"),
    "SeriesInstanceUID": ("SERIES", Series.series_uid, "uid"),
    "Modality": ("SERIES", Series.modality, "text"),
    "SeriesNumber": ("SERIES", Series.series_number, "int"),
    "SeriesDescription": ("SERIES", Series.series_description, "text"),
    "SOPInstanceUID": ("IMAGE", Instance.sop_instance_uid, "uid"),
    "SOPClassUID": ("IMAGE", Instance.sop_class_uid, "uid"),
    "InstanceNumber": ("IMAGE", Instance.instance_number, "int"),
}
_UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}
_DATE = re.compile(r"^\d{8}$")


class QueryError(ValueError):
    """The query cannot be answered as asked: an unknown level or keyword, a value that is not
    of its attribute's form (C-FIND: 0xA900, *Identifier does not match SOP Class*)."""


@dataclass(frozen=True)
class Match:
    """One answer and the regional patients (``imaging_study.patient_id``, resolved studies
    only) it is about: what the audit record names."""

    dataset: Dataset
    patients: frozenset[int]


@dataclass(frozen=True)
class Stored:
    """An instance to retrieve, and where its bytes are."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    blob_key: str
    study_uid: str
    patient: int | None  # the regional patient of a resolved study


def _depth(level: str) -> int:
    return LEVELS.index(level)


def check_level(level: str, model: str = STUDY_ROOT) -> str:
    value = (level or "").strip().upper()
    if value not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    if model == STUDY_ROOT and value == "PATIENT":
        raise QueryError("the Study Root information model has no PATIENT level")
    return value


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _wildcard(column: Any, value: str, *, fold: bool) -> ColumnElement[bool]:
    if fold:
        column, value = func.lower(column), value.lower()
    if "*" not in value and "?" not in value:
        return column == value  # type: ignore[no-any-return]
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
    return column.regexp_match(f"^{pattern}$")  # type: ignore[no-any-return]


def _day(text: str, keyword: str) -> date:
    if not _DATE.match(text):
        raise QueryError(f"{keyword} {text!r} is not a date YYYYMMDD or a range of dates")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise QueryError(f"{keyword} {text!r} is not a date") from None


def _condition(keyword: str, column: Any, kind: str, value: str) -> ColumnElement[bool]:
    if kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        if any(not re.fullmatch(r"[0-9.]{1,64}", u) for u in uids):
            raise QueryError(f"{keyword} {value!r} is not a UID or a list of UIDs")
        return column.in_(uids)  # type: ignore[no-any-return]
    if kind == "date":
        if "-" not in value:
            return column == _day(value, keyword)  # type: ignore[no-any-return]
        low, _, high = value.partition("-")
        if not low and not high:
            raise QueryError(f"{keyword} {value!r} is not a range of dates")
        parts = []
        if low:
            parts.append(column >= _day(low, keyword))
        if high:
            parts.append(column <= _day(high, keyword))
        return and_(*parts)
    if kind == "int":
        if not re.fullmatch(r"[+-]?\d{1,11}", value):
            raise QueryError(f"{keyword} {value!r} is not an integer")
        return column == int(value)  # type: ignore[no-any-return]
    if "\\" in value:  # text keys are single-valued in the index
        raise QueryError(f"{keyword} takes one value, not a list")
    return _wildcard(column, value, fold=kind == "pn")


def _conditions(filters: Mapping[str, object], level: str) -> list[ColumnElement[bool]]:
    """The conditions of the non-empty keys of ``level`` and the levels above."""
    found: list[ColumnElement[bool]] = []
    for keyword, raw in filters.items():
        value = _text(raw)
        if not value:
            continue
        if keyword == "ModalitiesInStudy" and _depth(level) >= _depth("STUDY"):
            modalities = [m.strip() for m in value.split("\\") if m.strip()]
            having = select(Series.id).where(
                Series.study_id == Study.id,
                or_(*(_wildcard(Series.modality, m, fold=False) for m in modalities)),
            )
            found.append(having.exists())
            continue
        spec = _KEYS.get(keyword)
        if spec is None or _depth(spec[0]) > _depth(level):
            continue
        found.append(_condition(keyword, spec[1], spec[2], value))
    return found


def _check_keywords(keywords: Iterable[str]) -> list[str]:
    found = []
    for keyword in keywords:
        if keyword in _NOT_KEYS or keyword in found:
            continue
        if keyword not in keyword_dict:
            raise QueryError(f"{keyword!r} is not a DICOM attribute keyword")
        found.append(keyword)
    return found


def find(
    session: Session,
    level: str,
    filters: Mapping[str, object],
    *,
    include: Iterable[str] = (),
    limit: int | None = None,
    offset: int = 0,
    visible: ColumnElement[bool] | None = None,
    model: str = STUDY_ROOT,
) -> list[Dataset]:
    """The answers to a query (see the module): one data set per patient, study, series or
    instance matched, in the order they were archived."""
    matched = find_matches(
        session, level, filters, include=include, limit=limit, offset=offset,
        visible=visible, model=model,
    )  # fmt: skip
    return [m.dataset for m in matched]


def find_matches(
    session: Session,
    level: str,
    filters: Mapping[str, object],
    *,
    include: Iterable[str] = (),
    limit: int | None = None,
    offset: int = 0,
    visible: ColumnElement[bool] | None = None,
    model: str = STUDY_ROOT,
) -> list[Match]:
    """:func:`find`, each answer with the regional patients it is about."""
    level = check_level(level, model)
    if (limit is not None and limit < 0) or offset < 0:
        raise QueryError("limit and offset cannot be negative")
    keys = _check_keywords([*filters, *include])
    unique = [_UNIQUE[lv] for lv in LEVELS[: _depth(level) + 1]]
    if model == STUDY_ROOT:
        unique = [k for k in unique if k != "PatientID"]
    keys = [*unique, *(k for k in keys if k not in unique)]
    where = _conditions(filters, level)
    if visible is not None:
        where.append(visible)
    if level == "PATIENT":
        return _patients(session, where, keys, limit, offset)
    statement: Select[Any]
    if level == "STUDY":
        statement = select(Study).order_by(Study.id)
    elif level == "SERIES":
        statement = (
            select(Study, Series)  # type: ignore[assignment]
            .join(Series, Series.study_id == Study.id)
            .order_by(Series.id)
        )
    else:
        statement = (
            select(Study, Series, Instance)  # type: ignore[assignment]
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
            .order_by(Instance.id)
        )
    statement = statement.where(*where).offset(offset)
    if limit is not None:
        statement = statement.limit(limit)
    rows = list(session.execute(statement))
    studies = list({row[0].id: row[0] for row in rows}.values())
    extra = _study_extras(session, studies, keys)
    series_counts = (
        _series_counts(session, [row[1] for row in rows], keys) if level == "SERIES" else {}
    )
    answers = []
    for row in rows:
        study: Study = row[0]
        values: dict[str, object] = {
            "PatientID": study.source_patient_id,
            "IssuerOfPatientID": study.source_issuer,
            "PatientName": study.patient_name,
            "PatientBirthDate": study.patient_birth_date,
            "PatientSex": study.patient_sex,
            "StudyInstanceUID": study.study_uid,
            "StudyDate": study.study_date,
            "AccessionNumber": study.accession_number,
            "StudyDescription": study.study_description,
            **extra.get(study.id, {}),
        }
        if level in ("SERIES", "IMAGE"):
            series: Series = row[1]
            values.update(
                SeriesInstanceUID=series.series_uid,
                Modality=series.modality,
                SeriesNumber=series.series_number,
                SeriesDescription=series.series_description,
                **series_counts.get(series.id, {}),
            )
        if level == "IMAGE":
            instance: Instance = row[2]
            values.update(
                SOPInstanceUID=instance.sop_instance_uid,
                SOPClassUID=instance.sop_class_uid,
                InstanceNumber=instance.instance_number,
            )
        attached = {study.patient_id} if study.patient_status == RESOLVED else set()
        answers.append(
            Match(_dataset(level, keys, values), frozenset(p for p in attached if p is not None))
        )
    return answers


def _study_extras(
    session: Session, studies: Sequence[Study], keys: list[str]
) -> dict[int, dict[str, object]]:
    """ModalitiesInStudy and the study counts of ``studies``, when asked."""
    ids = [s.id for s in studies]
    found: dict[int, dict[str, object]] = {i: {} for i in ids}
    if not ids:
        return found
    if "ModalitiesInStudy" in keys:
        pairs = session.execute(
            select(Series.study_id, Series.modality)
            .where(Series.study_id.in_(ids), Series.modality.is_not(None))
            .distinct()
        )
        for study_id, modality in pairs:
            found[study_id].setdefault("ModalitiesInStudy", []).append(modality)  # type: ignore[attr-defined]
        for values in found.values():
            values["ModalitiesInStudy"] = sorted(values.get("ModalitiesInStudy", []))  # type: ignore[call-overload]
    if "NumberOfStudyRelatedSeries" in keys or "NumberOfStudyRelatedInstances" in keys:
        counts = session.execute(
            select(Series.study_id, func.count(distinct(Series.id)), func.count(Instance.id))
            .outerjoin(Instance, Instance.series_id == Series.id)
            .where(Series.study_id.in_(ids))
            .group_by(Series.study_id)
        )
        for values in found.values():
            values.update(NumberOfStudyRelatedSeries=0, NumberOfStudyRelatedInstances=0)
        for study_id, n_series, n_instances in counts:
            found[study_id].update(
                NumberOfStudyRelatedSeries=n_series, NumberOfStudyRelatedInstances=n_instances
            )
    return found


def _series_counts(
    session: Session, series: Sequence[Series], keys: list[str]
) -> dict[int, dict[str, object]]:
    if "NumberOfSeriesRelatedInstances" not in keys or not series:
        return {}
    ids = [s.id for s in series]
    found = session.execute(
        select(Instance.series_id, func.count(Instance.id))
        .where(Instance.series_id.in_(ids))
        .group_by(Instance.series_id)
    )
    counts = {int(series_id): int(n) for series_id, n in found}
    return {i: {"NumberOfSeriesRelatedInstances": counts.get(i, 0)} for i in ids}


def _patients(
    session: Session,
    where: list[ColumnElement[bool]],
    keys: list[str],
    limit: int | None,
    offset: int,
) -> list[Match]:
    """PATIENT level: the studies grouped by PatientID and issuer (the index has no patient
    table); name, birth date and sex are those of one of its studies. The series and
    instances are joined only when their counts are asked (a third of a ``DUP*`` query's
    time at 1,000,000 instances otherwise)."""
    deep = bool({"NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"} & set(keys))
    statement = select(
        Study.source_patient_id,
        Study.source_issuer,
        func.max(Study.patient_name),
        func.max(Study.patient_birth_date),
        func.max(Study.patient_sex),
        func.count(distinct(Study.id)),
        func.count(distinct(Series.id)) if deep else null(),
        func.count(distinct(Instance.id)) if deep else null(),
        func.max(case((Study.patient_status == RESOLVED, Study.patient_id))),
    )
    if deep:
        statement = statement.outerjoin(Series, Series.study_id == Study.id).outerjoin(
            Instance, Instance.series_id == Series.id
        )
    statement = (
        statement.where(*where)
        .group_by(Study.source_patient_id, Study.source_issuer)
        .order_by(func.min(Study.id))
        .offset(offset)
    )
    if limit is not None:
        statement = statement.limit(limit)
    answers = []
    for pid, issuer, name, birth, sex, n_studies, n_series, n_instances, patient in session.execute(
        statement
    ):
        values = {
            "PatientID": pid,
            "IssuerOfPatientID": issuer,
            "PatientName": name,
            "PatientBirthDate": birth,
            "PatientSex": sex,
            "NumberOfPatientRelatedStudies": n_studies,
            "NumberOfPatientRelatedSeries": n_series,
            "NumberOfPatientRelatedInstances": n_instances,
        }
        attached = frozenset({patient}) if patient is not None else frozenset()
        answers.append(Match(_dataset("PATIENT", keys, values), attached))
    return answers


def _value(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, date):
        return f"{value:%Y%m%d}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def _dataset(level: str, keys: list[str], values: Mapping[str, object]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    wide = False
    for keyword in keys:
        value = _value(values[keyword]) if keyword in values else None
        if dictionary_VR(keyword) == "SQ":
            setattr(ds, keyword, [])
            continue
        setattr(ds, keyword, value)
        texts = value if isinstance(value, list) else [value]
        wide = wide or any(isinstance(t, str) and not t.isascii() for t in texts)
    if wide:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def to_retrieve(
    session: Session,
    level: str,
    filters: Mapping[str, object],
    *,
    visible: ColumnElement[bool] | None = None,
    model: str = STUDY_ROOT,
) -> list[Stored]:
    """The instances a C-GET / C-MOVE identifier designates: its unique keys (PatientID,
    Study / Series / SOP Instance UID lists) of ``level`` and above; the unique key of the level
    itself is required (PS3.4 C.4.2.2.1)."""
    level = check_level(level, model)
    if not _text(filters.get(_UNIQUE[level])):
        raise QueryError(f"a retrieve at the {level} level needs {_UNIQUE[level]}")
    unique = {k: v for k, v in filters.items() if k in _UNIQUE.values() or k == "IssuerOfPatientID"}
    where = _conditions(unique, level)
    if visible is not None:
        where.append(visible)
    rows = session.execute(
        select(Instance, Study.study_uid, Study.patient_id, Study.patient_status)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(*where)
        .order_by(Instance.id)
    )
    return [
        Stored(
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=instance.sop_instance_uid,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            blob_key=instance.blob_key,
            study_uid=study_uid,
            patient=patient if status == RESOLVED else None,
        )
        for instance, study_uid, patient, status in rows
    ]


def filters_of(identifier: Dataset) -> dict[str, str]:
    """A C-FIND / C-GET / C-MOVE identifier as keyword -> value (multiple values joined with
    ``\\``; sequences and private or unknown tags left out)."""
    found: dict[str, str] = {}
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_KEYS or elem.VR == "SQ" or elem.tag.group == 0x0002:
            continue
        value = elem.value
        found[keyword] = _text(list(value) if elem.VM > 1 else value)
    return found
