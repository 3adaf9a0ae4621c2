"""The index queries of :mod:`enrs.imaging.query` (what C-FIND answers, what C-GET / C-MOVE
retrieve) on the real database, SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy.orm import Session

from enrs.imaging import query
from enrs.imaging.models import CONFLICT, RESOLVED, UNKNOWN, Instance, Series, Study
from enrs.imaging.query import QueryError
from enrs.kit.db import Database
from enrs.settings import Settings

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _study(session: Session, uid: str, **values: object) -> Study:
    values.setdefault("patient_status", UNKNOWN)
    values.setdefault("sending_aet", "MODALITY")
    study = Study(study_uid=uid, **values)
    session.add(study)
    session.flush()
    return study


def _series(session: Session, study: Study, uid: str, modality: str, number: int) -> Series:
    series = Series(series_uid=uid, study_id=study.id, modality=modality, series_number=number)
    session.add(series)
    session.flush()
    return series


def _instance(session: Session, series: Series, uid: str, number: int, sop: str = CT) -> None:
    session.add(
        Instance(
            sop_instance_uid=uid, series_id=series.id, sop_class_uid=sop,
            transfer_syntax_uid="1.2.840.10008.1.2.1", instance_number=number, size=10,
            sha256="0" * 64, blob_key=f"imaging/{uid}.dcm", sending_aet="MODALITY",
        )
    )  # fmt: skip
    session.flush()


@pytest.fixture
def index(settings: Settings) -> Iterator[Database]:
    """Three studies: 1.1 (IPP-1, Dupont^Marie, CT 2 + MR 1 instances, 2026-12-05, resolved to
    patient 7), 1.2 (IPP-1, CT 1 instance, 2026-11-10, flagged unknown), 1.3 (IPP-2,
    Durand^Éric, no date, flagged conflict, MR 1 instance)."""
    db = Database(settings.database_url)
    with db.transaction() as session:
        a = _study(
            session, "1.1", patient_id=7, patient_status=RESOLVED, source_patient_id="IPP-1",
            source_issuer="1.2.250.1", patient_name="Dupont^Marie",
            patient_birth_date=date(1961, 4, 9), patient_sex="F", accession_number="ACC01",
            study_date=date(2026, 12, 5), study_description="TDM THORAX",
        )  # fmt: skip
        b = _study(
            session, "1.2", source_patient_id="IPP-1", source_issuer="1.2.250.1",
            patient_name="Dupont^Marie", accession_number="ACC02",
            study_date=date(2026, 11, 10), study_description="TDM ABDOMEN",
        )  # fmt: skip
        c = _study(
            session, "1.3", patient_status=CONFLICT, source_patient_id="IPP-2",
            patient_name="Durand^Éric", accession_number="X-9", study_description="IRM GENOU",
        )  # fmt: skip
        a_ct, a_mr = _series(session, a, "1.1.1", "CT", 1), _series(session, a, "1.1.2", "MR", 2)
        _instance(session, a_ct, "1.1.1.1", 1)
        _instance(session, a_ct, "1.1.1.2", 2)
        _instance(session, a_mr, "1.1.2.1", 1, MR)
        _instance(session, _series(session, b, "1.2.1", "CT", 1), "1.2.1.1", 1)
        _instance(session, _series(session, c, "1.3.1", "MR", 5), "1.3.1.1", 1, MR)
    try:
        yield db
    finally:
        db.dispose()


def _uids(db: Database, level: str, filters: dict[str, object], **options: object) -> list[str]:
    key = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
    with db.transaction(write=False) as session:
        found = query.find(session, level, filters, **options)  # type: ignore[arg-type]
    return [str(ds.get(key.get(level, "PatientID"))) for ds in found]


def test_universal_match_and_single_values(index: Database) -> None:
    assert _uids(index, "STUDY", {"StudyInstanceUID": ""}) == ["1.1", "1.2", "1.3"]
    assert _uids(index, "STUDY", {"AccessionNumber": "ACC02"}) == ["1.2"]
    assert _uids(index, "STUDY", {"AccessionNumber": "acc02"}) == []  # case-sensitive
    assert _uids(index, "STUDY", {"PatientID": "IPP-1", "StudyDescription": ""}) == ["1.1", "1.2"]
    assert _uids(index, "SERIES", {"Modality": "MR"}) == ["1.1.2", "1.3.1"]
    assert _uids(index, "SERIES", {"SeriesNumber": "5"}) == ["1.3.1"]
    assert _uids(index, "IMAGE", {"SeriesInstanceUID": "1.1.1", "InstanceNumber": "2"}) == [
        "1.1.1.2"
    ]


def test_wildcards(index: Database) -> None:
    assert _uids(index, "STUDY", {"StudyDescription": "TDM*"}) == ["1.1", "1.2"]
    assert _uids(index, "STUDY", {"StudyDescription": "*GENOU"}) == ["1.3"]
    assert _uids(index, "STUDY", {"AccessionNumber": "ACC0?"}) == ["1.1", "1.2"]
    assert _uids(index, "STUDY", {"AccessionNumber": "ACC?"}) == []
    assert _uids(index, "STUDY", {"AccessionNumber": "X-*"}) == ["1.3"]  # regex chars literal
    assert _uids(index, "STUDY", {"StudyDescription": "TDM.*"}) == []
    # PN: case-insensitive, wildcards and non-ASCII
    assert _uids(index, "STUDY", {"PatientName": "dupont*"}) == ["1.1", "1.2"]
    assert _uids(index, "STUDY", {"PatientName": "Durand^?ric"}) == ["1.3"]


def test_date_ranges(index: Database) -> None:
    assert _uids(index, "STUDY", {"StudyDate": "20261205"}) == ["1.1"]
    assert _uids(index, "STUDY", {"StudyDate": "20261101-20261130"}) == ["1.2"]
    assert _uids(index, "STUDY", {"StudyDate": "20261110-"}) == ["1.1", "1.2"]
    assert _uids(index, "STUDY", {"StudyDate": "-20261110"}) == ["1.2"]  # bounds included
    assert _uids(index, "STUDY", {"StudyDate": "20250101-20251231"}) == []
    assert _uids(index, "STUDY", {"PatientBirthDate": "19600101-19621231"}) == ["1.1"]


def test_uid_lists(index: Database) -> None:
    assert _uids(index, "STUDY", {"StudyInstanceUID": "1.3\\1.1"}) == ["1.1", "1.3"]
    assert _uids(index, "STUDY", {"StudyInstanceUID": ["1.2", "1.3"]}) == ["1.2", "1.3"]
    assert _uids(index, "IMAGE", {"SOPClassUID": MR}) == ["1.1.2.1", "1.3.1.1"]


def test_modalities_in_study_and_counts(index: Database) -> None:
    assert _uids(index, "STUDY", {"ModalitiesInStudy": "MR"}) == ["1.1", "1.3"]
    assert _uids(index, "STUDY", {"ModalitiesInStudy": "CT\\US"}) == ["1.1", "1.2"]
    with index.transaction(write=False) as session:
        [study] = query.find(
            session, "STUDY", {"StudyInstanceUID": "1.1", "ModalitiesInStudy": ""},
            include=["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
        )  # fmt: skip
        [series] = query.find(
            session, "SERIES", {"SeriesInstanceUID": "1.1.1"},
            include=["NumberOfSeriesRelatedInstances", "NumberOfStudyRelatedInstances"],
        )  # fmt: skip
    assert study.ModalitiesInStudy == ["CT", "MR"] and study.QueryRetrieveLevel == "STUDY"
    assert study.NumberOfStudyRelatedSeries == 2 and study.NumberOfStudyRelatedInstances == 3
    assert series.NumberOfSeriesRelatedInstances == 1 * 2
    assert series.StudyInstanceUID == "1.1"  # unique key of the level above
    assert series.NumberOfStudyRelatedInstances == 3


def test_patient_level_groups_the_studies(index: Database) -> None:
    with index.transaction(write=False) as session:
        found = query.find_matches(
            session, "PATIENT", {"PatientID": "", "PatientName": ""},
            include=["NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances"],
            model=query.PATIENT_ROOT,
        )  # fmt: skip
        with pytest.raises(QueryError, match="no PATIENT level"):
            query.find(session, "PATIENT", {})  # Study Root
    assert [(m.dataset.PatientID, m.dataset.NumberOfPatientRelatedStudies) for m in found] == [
        ("IPP-1", 2),
        ("IPP-2", 1),
    ]
    assert found[0].dataset.NumberOfPatientRelatedInstances == 4
    assert found[0].patients == {7} and found[1].patients == frozenset()  # flagged: none
    assert found[1].dataset.PatientName == "Durand^Éric"
    assert found[1].dataset.SpecificCharacterSet == "ISO_IR 192"


def test_flagged_studies_are_found_and_unsupported_keys_returned_empty(index: Database) -> None:
    with index.transaction(write=False) as session:
        found = query.find_matches(
            session,
            "STUDY",
            {"PatientID": "IPP-1", "StudyTime": "1015", "ReferringPhysicianName": ""},
        )
    assert [m.dataset.StudyInstanceUID for m in found] == ["1.1", "1.2"]  # 1.2 is unknown
    assert [m.patients for m in found] == [{7}, frozenset()]
    answer = found[0].dataset
    assert "StudyTime" in answer and not answer.StudyTime  # not held: empty, not matched
    assert "ReferringPhysicianName" in answer and not answer.ReferringPhysicianName


def test_limit_offset_and_visibility(index: Database) -> None:
    assert _uids(index, "STUDY", {}, limit=2) == ["1.1", "1.2"]
    assert _uids(index, "STUDY", {}, limit=2, offset=2) == ["1.3"]
    assert _uids(index, "STUDY", {}, visible=Study.patient_status == RESOLVED) == ["1.1"]
    assert _uids(index, "IMAGE", {"Modality": "MR"}, visible=Study.study_uid != "1.1") == [
        "1.3.1.1"
    ]


@pytest.mark.parametrize(
    ("level", "filters", "message"),
    [
        ("FRAME", {}, "QueryRetrieveLevel"),
        ("STUDY", {"StudyDate": "2026-12"}, "StudyDate"),
        ("STUDY", {"StudyDate": "20261332"}, "not a date"),
        ("STUDY", {"StudyDate": "-"}, "range"),
        ("STUDY", {"StudyInstanceUID": "1.2\\abc"}, "UID"),
        ("SERIES", {"SeriesNumber": "two"}, "integer"),
        ("STUDY", {"AccessionNumber": "A\\B"}, "one value"),
        ("STUDY", {"NoSuchKeyword": ""}, "not a DICOM attribute"),
    ],
)
def test_bad_queries_are_refused(
    index: Database, level: str, filters: dict[str, object], message: str
) -> None:
    with index.transaction(write=False) as session, pytest.raises(QueryError, match=message):
        query.find(session, level, filters)


def test_what_a_retrieve_designates(index: Database) -> None:
    with index.transaction(write=False) as session:
        study = query.to_retrieve(session, "STUDY", {"StudyInstanceUID": "1.1\\1.3"})
        series = query.to_retrieve(session, "SERIES", {"SeriesInstanceUID": "1.1.2"})
        patient = query.to_retrieve(
            session, "PATIENT", {"PatientID": "IPP-1"}, model=query.PATIENT_ROOT
        )
        image = query.to_retrieve(session, "IMAGE", {"SOPInstanceUID": "1.2.1.1"})
        # other keys than the unique keys do not narrow a retrieve
        broad = query.to_retrieve(
            session, "STUDY", {"StudyInstanceUID": "1.1", "StudyDescription": "nothing"}
        )
        with pytest.raises(QueryError, match="needs SeriesInstanceUID"):
            query.to_retrieve(session, "SERIES", {"StudyInstanceUID": "1.1"})
    assert [s.sop_instance_uid for s in study] == ["1.1.1.1", "1.1.1.2", "1.1.2.1", "1.3.1.1"]
    assert [s.patient for s in study] == [7, 7, 7, None]
    assert [s.sop_instance_uid for s in series] == ["1.1.2.1"] and series[0].sop_class_uid == MR
    assert len(patient) == 4 and len(broad) == 3
    assert image[0].blob_key == "imaging/1.2.1.1.dcm" and image[0].study_uid == "1.2"
