"""The archive's query/retrieve side with DCMTK's real findscu, getscu and movescu (and storescp
as the C-MOVE destination) against the real listener."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select, text

from enrs.imaging import service
from enrs.imaging.encoding import dataset_of
from enrs.imaging.models import Instance, Series, Study
from enrs.kit.audit.models import AuditRecord
from tests.imaging.conftest import (
    AET,
    J2K,
    JPEG_LS,
    PROPOSE,
    RLE,
    Archived,
    compressed,
    ct_dataset,
    dataset_bytes,
    smooth_ct,
    write,
)


def _register(archive: Archived, aet: str, *, store: bool, retrieve: bool, port: int = 104) -> None:
    with archive.db.transaction() as session:
        service.add_peer(session, aet, host="127.0.0.1", port=port, store=store, retrieve=retrieve)


@pytest.fixture
def studies(archive: Archived, tmp_path: Path) -> dict[str, list[Path]]:
    """Two studies stored by MODALITY (store and retrieve rights): A, a CT of two instances
    in one series (IPP-0001, TEST^SYNTHETIC, 2026-12-05, TDM THORAX, ACC0001); B, an MR of
    one instance (IPP-0002, DOE^JANE, 2026-11-10, IRM GENOU, ACC0002)."""
    _register(archive, "MODALITY", store=True, retrieve=True)
    a, b = ct_dataset(seed=1), ct_dataset(patient_id="IPP-0002", seed=3)
    a2 = ct_dataset(study_uid=a.StudyInstanceUID, series_uid=a.SeriesInstanceUID, seed=2)
    a2.InstanceNumber = 2
    b.PatientName, b.StudyDate, b.StudyDescription = "DOE^JANE", "20261110", "IRM GENOU"
    b.AccessionNumber, b.Modality = "ACC0002", "MR"
    src = tmp_path / "src"
    src.mkdir()
    paths = {
        "A": [write(a, src / "a1.dcm"), write(a2, src / "a2.dcm")],
        "B": [write(b, src / "b1.dcm")],
    }
    done = archive.storescu(*paths["A"], *paths["B"])
    assert done.returncode == 0, done.stderr
    return paths


def _uid(path: Path, keyword: str = "StudyInstanceUID") -> str:
    return str(dcmread(path, stop_before_pixels=True).get(keyword))


def _findscu(
    archive: Archived, out: Path, *keys: str, aet: str = "MODALITY", model: str = "-S"
) -> tuple[subprocess.CompletedProcess[str], list[Dataset]]:
    out.mkdir(exist_ok=True)
    args = [a for k in keys for a in ("-k", k)]
    done = subprocess.run(
        ["findscu", "-v", model, "-aet", aet, "-aec", AET, "-X", "-od", str(out), *args,
         "127.0.0.1", str(archive.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _audit(archive: Archived, interaction: str) -> list[AuditRecord]:
    with archive.db.transaction(write=False) as session:
        found = select(AuditRecord).where(AuditRecord.interaction == interaction)
        return list(session.scalars(found.order_by(AuditRecord.seq)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_find_at_each_level(
    archive: Archived, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    a_study, a_series = _uid(studies["A"][0]), _uid(studies["A"][0], "SeriesInstanceUID")
    done, found = _findscu(
        archive, tmp_path / "study", "QueryRetrieveLevel=STUDY", "PatientName=test*",
        "StudyInstanceUID", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
        "ReferringPhysicianName",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [study] = found
    assert study.StudyInstanceUID == a_study and study.StudyDate == "20261205"
    assert study.PatientName == "TEST^SYNTHETIC" and study.ModalitiesInStudy == "CT"
    assert study.NumberOfStudyRelatedInstances == 2 and study.QueryRetrieveLevel == "STUDY"
    assert "ReferringPhysicianName" in study and not study.ReferringPhysicianName  # not held
    done, found = _findscu(
        archive, tmp_path / "series", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={a_study}",
        "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances",
    )  # fmt: skip
    [series] = found
    assert series.SeriesInstanceUID == a_series and series.Modality == "CT"
    assert series.NumberOfSeriesRelatedInstances == 2
    done, found = _findscu(
        archive, tmp_path / "image", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={a_study}",
        f"SeriesInstanceUID={a_series}", "SOPInstanceUID", "InstanceNumber",
    )  # fmt: skip
    assert [str(i.InstanceNumber) for i in found] == ["1", "2"]
    assert {i.SOPInstanceUID for i in found} == {_uid(p, "SOPInstanceUID") for p in studies["A"]}
    done, found = _findscu(
        archive, tmp_path / "patient", "QueryRetrieveLevel=PATIENT", "PatientID",
        "PatientName", "NumberOfPatientRelatedStudies", model="-P",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [(p.PatientID, p.NumberOfPatientRelatedStudies) for p in found] == [
        ("IPP-0001", 1),
        ("IPP-0002", 1),
    ]
    [record, *_] = _audit(archive, "C-FIND")
    assert record.agent_id == "MODALITY" and record.outcome == "0" and record.action == "E"
    assert json.loads(record.detail or "{}")["matches"] == 1


def test_find_with_wildcards_and_date_ranges(
    archive: Archived, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    b_study = _uid(studies["B"][0])
    cases = {
        "StudyDate=20261101-20261130": [b_study],
        "StudyDate=-20261130": [b_study],
        "StudyDate=20261201-": [_uid(studies["A"][0])],
        "StudyDescription=*GENOU": [b_study],
        "AccessionNumber=ACC000?": [_uid(studies["A"][0]), b_study],
        "PatientID=IPP-0002": [b_study],
        "StudyDate=20260101-20260131": [],
    }
    for n, (key, expected) in enumerate(cases.items()):
        done, found = _findscu(
            archive, tmp_path / str(n), "QueryRetrieveLevel=STUDY", key, "StudyInstanceUID"
        )
        assert done.returncode == 0, done.stderr
        assert [f.StudyInstanceUID for f in found] == expected, key


def test_a_bad_query_is_answered_a_failure(
    archive: Archived, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    done, found = _findscu(
        archive, tmp_path / "bad", "QueryRetrieveLevel=STUDY", "StudyDate=2026-12"
    )
    assert found == []
    assert "(Error: DataSetDoesNotMatchSOPClass)" in done.stderr, done.stderr
    [record] = _audit(archive, "C-FIND")
    assert record.outcome == "4" and "StudyDate" in (record.outcome_desc or "")
    # the listener keeps serving
    done, found = _findscu(archive, tmp_path / "ok", "QueryRetrieveLevel=STUDY", "StudyDate")
    assert len(found) == 2


def test_an_ae_without_the_retrieve_right_is_refused(
    archive: Archived, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    _register(archive, "VIEWER", store=True, retrieve=False)
    done, found = _findscu(
        archive, tmp_path / "f", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", aet="VIEWER"
    )
    assert found == []
    assert "status: 0x124" in done.stderr.lower(), done.stderr
    get = _getscu(archive, tmp_path / "g", _uid(studies["A"][0]), aet="VIEWER")
    assert "status: 0x124" in get.stderr.lower(), get.stderr
    assert list((tmp_path / "g").iterdir()) == []
    move = _movescu(archive, _uid(studies["A"][0]), "MODALITY", aet="VIEWER")
    assert "status: 0x124" in move.stderr.lower(), move.stderr
    for kind in ("C-FIND", "C-GET", "C-MOVE"):
        [record] = _audit(archive, kind)
        assert record.agent_id == "VIEWER" and record.outcome == "4"
        assert "not registered to query and retrieve" in (record.outcome_desc or "")


def _getscu(
    archive: Archived, out: Path, study_uid: str, *, aet: str = "MODALITY"
) -> subprocess.CompletedProcess[str]:
    out.mkdir(exist_ok=True)
    return subprocess.run(
        ["getscu", "-v", "-S", "-aet", aet, "-aec", AET, "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "127.0.0.1", str(archive.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _movescu(
    archive: Archived, study_uid: str, destination: str, *, aet: str = "MODALITY"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["movescu", "-v", "-S", "-aet", aet, "-aec", AET, "-aem", destination,
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "127.0.0.1", str(archive.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _stored(archive: Archived, study_uid: str) -> dict[str, bytes]:
    """The data sets archived of the study, by SOP Instance UID."""
    with archive.db.transaction(write=False) as session:
        found = session.scalars(
            select(Instance)
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_uid == study_uid)
        )
        keys = {i.sop_instance_uid: i.blob_key for i in found}
    return {uid: dataset_of(archive.storage.get(key)) for uid, key in keys.items()}


def _received(out: Path) -> dict[str, bytes]:
    return {_uid(p, "SOPInstanceUID"): dataset_bytes(p) for p in out.iterdir() if p.is_file()}


def test_get_of_a_study_returns_the_data_sets_as_stored(
    archive: Archived, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    study_uid = _uid(studies["A"][0])
    done = _getscu(archive, tmp_path / "got", study_uid)
    assert done.returncode == 0, done.stderr
    received = _received(tmp_path / "got")
    stored = _stored(archive, study_uid)
    assert len(received) == 2 and received == stored
    assert sorted(received.values()) == sorted(dataset_bytes(p) for p in studies["A"])
    [record] = _audit(archive, "C-GET")
    assert record.outcome == "0" and record.action == "R" and record.agent_id == "MODALITY"
    detail = json.loads(record.detail or "{}")
    assert detail["instances"] == 2 and detail["studies"] == [study_uid]


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp (bit-preserving) on a free port, as the AE DEST."""
    with _storescp(tmp_path / "dest") as running:
        yield running


@contextmanager
def _storescp(out: Path, *options: str, aet: str = "DEST") -> Iterator[tuple[int, Path]]:
    port = _free_port()
    out.mkdir()
    process = subprocess.Popen(
        ["storescp", "-aet", aet, "+B", *options, "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port, out
    finally:
        process.terminate()
        process.wait(10)


def test_move_of_a_study_to_a_registered_destination(
    archive: Archived,
    studies: dict[str, list[Path]],
    storescp: tuple[int, Path],
) -> None:
    port, out = storescp
    _register(archive, "DEST", store=False, retrieve=False, port=port)
    study_uid = _uid(studies["A"][0])
    done = _movescu(archive, study_uid, "DEST")
    assert done.returncode == 0, done.stderr
    assert "Received Final Move Response (Success)" in done.stderr, done.stderr
    assert _received(out) == _stored(archive, study_uid)
    [record] = _audit(archive, "C-MOVE")
    assert record.outcome == "0"
    assert json.loads(record.detail or "{}")["move_destination"] == "DEST"


def test_move_to_an_unknown_destination(archive: Archived, studies: dict[str, list[Path]]) -> None:
    done = _movescu(archive, _uid(studies["A"][0]), "NOWHERE")
    assert "(Refused: MoveDestinationUnknown)" in done.stderr, done.stderr
    [record] = _audit(archive, "C-MOVE")
    assert record.outcome == "4" and "NOWHERE" in (record.outcome_desc or "")


def test_a_lost_blob_fails_its_sub_operation_only(
    archive: Archived, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    study_uid = _uid(studies["A"][0])
    lost = _uid(studies["A"][0], "SOPInstanceUID")
    with archive.db.transaction(write=False) as session:
        key = session.scalars(
            select(Instance.blob_key).where(Instance.sop_instance_uid == lost)
        ).one()
    archive.storage.delete(key)
    done = _getscu(archive, tmp_path / "got", study_uid)
    assert "(Warning: SubOperationsCompleteOneOrMoreFailures)" in done.stderr, done.stderr
    assert "Number of Completed Suboperations : 1" in done.stderr
    assert "Number of Failed Suboperations    : 1" in done.stderr
    received = _received(tmp_path / "got")
    assert list(received) == [_uid(studies["A"][1], "SOPInstanceUID")]
    # the listener keeps serving
    again = _getscu(archive, tmp_path / "b", _uid(studies["B"][0]))
    assert again.returncode == 0 and len(_received(tmp_path / "b")) == 1


def test_an_index_that_cannot_be_read_answers_out_of_resources(
    archive: Archived, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    with archive.db.transaction() as session:
        session.execute(text("ALTER TABLE imaging_series RENAME TO imaging_series_gone"))
    try:
        done, found = _findscu(
            archive, tmp_path / "f", "QueryRetrieveLevel=SERIES", "SeriesInstanceUID"
        )
        assert found == [] and "Refused: OutOfResources" in done.stderr, done.stderr
        get = _getscu(archive, tmp_path / "g", _uid(studies["A"][0]))
        assert "Refused: OutOfResources" in get.stderr, get.stderr
        # what does not need the lost table is still answered
        done, found = _findscu(archive, tmp_path / "s", "QueryRetrieveLevel=STUDY", "StudyDate")
        assert len(found) == 2
    finally:
        with archive.db.transaction() as session:
            session.execute(text("ALTER TABLE imaging_series_gone RENAME TO imaging_series"))
    [find, *_] = _audit(archive, "C-FIND")
    assert find.outcome == "8" and find.outcome_desc == "the index cannot be read"


def test_an_instance_not_in_an_accepted_syntax(archive: Archived, tmp_path: Path) -> None:
    """Stored in Implicit VR (storescu -xi): getscu's context is Explicit VR, so the instance is
    sent re-encoded, same values. Stored RLE or JPEG-LS (encoded by DCMTK), which getscu does
    not propose: sent decoded, in Explicit VR, the same pixel values and SOP Instance UID."""
    _register(archive, "MODALITY", store=True, retrieve=True)
    implicit = write(ct_dataset(seed=5), tmp_path / "implicit.dcm")
    done = archive.storescu(implicit, options=("-xi",))
    assert done.returncode == 0, done.stderr
    sent_compressed = {}
    for seed, syntax in ((6, RLE), (7, JPEG_LS)):
        original = write(smooth_ct(seed), tmp_path / f"{seed}.dcm")
        path = compressed(original, syntax)
        done = archive.storescu(path, options=(PROPOSE[syntax],))
        assert done.returncode == 0 and "Success" in done.stderr, done.stderr
        sent_compressed[syntax] = (original, path)
    with archive.db.transaction(write=False) as session:
        syntaxes = set(session.scalars(select(Instance.transfer_syntax_uid)))
    assert syntaxes == {"1.2.840.10008.1.2", RLE, JPEG_LS}
    got = _getscu(archive, tmp_path / "got", _uid(implicit))
    assert got.returncode == 0, got.stderr
    [received] = (tmp_path / "got").iterdir()
    sent, back = dcmread(implicit), dcmread(received)
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back == sent  # the same values
    for syntax, (original, path) in sent_compressed.items():
        out = tmp_path / f"got-{syntax}"
        got = _getscu(archive, out, _uid(path))
        assert "Number of Failed Suboperations    : 0" in got.stderr, got.stderr
        [received] = out.iterdir()
        back, source = dcmread(received), dcmread(original)
        assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert back.SOPInstanceUID == source.SOPInstanceUID
        assert back.PixelData == source.PixelData
        assert back.PatientID == source.PatientID


def test_move_of_a_compressed_instance(archive: Archived, tmp_path: Path) -> None:
    """A JPEG-LS instance moved to a destination that takes only uncompressed syntaxes
    (storescp's default) arrives decoded; to one that takes JPEG-LS (storescp +xa), as kept."""
    _register(archive, "MODALITY", store=True, retrieve=True)
    original = write(smooth_ct(8), tmp_path / "ct.dcm")
    path = compressed(original, JPEG_LS)
    assert archive.storescu(path, options=("-xt",)).returncode == 0
    study_uid = _uid(path)
    for aet, options, expected in (
        ("PLAIN", (), "1.2.840.10008.1.2.1"),
        ("ALL", ("+xa",), JPEG_LS),
    ):
        with _storescp(tmp_path / aet, *options, aet=aet) as (port, out):
            _register(archive, aet, store=False, retrieve=False, port=port)
            done = _movescu(archive, study_uid, aet)
            assert "Received Final Move Response (Success)" in done.stderr, done.stderr
            [received] = out.iterdir()
        back = dcmread(received)
        assert back.file_meta.TransferSyntaxUID == expected
        assert back.SOPInstanceUID == dcmread(original).SOPInstanceUID
        if expected == JPEG_LS:
            assert dataset_bytes(received) == dataset_bytes(path)  # byte for byte
        else:
            assert back.PixelData == dcmread(original).PixelData


def test_move_to_a_destination_that_prefers_a_compressed_syntax(
    archive: Archived, tmp_path: Path
) -> None:
    """storescp +xv / +xt / +xr accepts JPEG 2000 / JPEG-LS / RLE Lossless before any
    uncompressed syntax: an instance kept uncompressed, and one kept in JPEG-LS, arrive in it
    (encoded, or as kept), the same pixel values and SOP Instance UIDs. A destination that
    prefers a lossy syntax (storescp +xw, JPEG 2000 lossy first) gets them uncompressed: the
    archive never encodes with loss."""
    _register(archive, "MODALITY", store=True, retrieve=True)
    plain = write(smooth_ct(9), tmp_path / "plain.dcm")
    kept_ls = compressed(write(smooth_ct(10, study_uid=_uid(plain)), tmp_path / "ls.dcm"), JPEG_LS)
    assert archive.storescu(plain).returncode == 0
    assert archive.storescu(kept_ls, options=("-xt",)).returncode == 0
    originals = {_uid(p, "SOPInstanceUID"): dcmread(p) for p in (plain, kept_ls)}
    originals[_uid(kept_ls, "SOPInstanceUID")].decompress(generate_instance_uid=False)
    for aet, option, expected in (
        ("J2K", "+xv", J2K),
        ("JLS", "+xt", JPEG_LS),
        ("RLE", "+xr", RLE),
        ("LOSSY", "+xw", "1.2.840.10008.1.2.1"),
    ):
        with _storescp(tmp_path / aet, option, aet=aet) as (port, out):
            _register(archive, aet, store=False, retrieve=False, port=port)
            done = _movescu(archive, _uid(plain), aet)
            assert "Received Final Move Response (Success)" in done.stderr, done.stderr
            received = {_uid(p, "SOPInstanceUID"): dcmread(p) for p in out.iterdir()}
        assert received.keys() == originals.keys(), aet
        for uid, back in received.items():
            assert back.file_meta.TransferSyntaxUID == expected, (aet, uid)
            assert back.pixel_array.tobytes() == originals[uid].PixelData
            assert back.PatientID == originals[uid].PatientID


def test_get_by_a_requestor_that_takes_only_a_compressed_syntax(
    archive: Archived, tmp_path: Path
) -> None:
    """A C-GET requestor (pynetdicom's AE) whose CT storage context proposes JPEG-LS Lossless
    alone: the instance kept uncompressed comes back encoded in it, the same pixel values;
    one proposing only a lossy syntax gets nothing, a failed sub-operation."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        StudyRootQueryRetrieveInformationModelGet,
    )

    _register(archive, "MODALITY", store=True, retrieve=True)
    plain = write(smooth_ct(11), tmp_path / "plain.dcm")
    assert archive.storescu(plain).returncode == 0
    for syntax, completed in ((JPEG_LS, 1), ("1.2.840.10008.1.2.4.81", 0)):
        received: list[Dataset] = []

        def on_store(event: evt.Event, received: list[Dataset] = received) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            received.append(ds)
            return 0x0000

        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, [syntax])
        role = build_role(CTImageStorage, scp_role=True)
        assoc = ae.associate(
            "127.0.0.1",
            archive.port,
            ae_title=AET,
            ext_neg=[role],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = _uid(plain)
        try:
            answers = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        finally:
            assoc.release()
        final = answers[-1][0]
        assert final.NumberOfCompletedSuboperations == completed, syntax
        assert final.NumberOfFailedSuboperations == 1 - completed, syntax
        assert len(received) == completed
        if completed:
            [back] = received
            assert back.file_meta.TransferSyntaxUID == syntax
            assert back.SOPInstanceUID == dcmread(plain).SOPInstanceUID
            assert back.pixel_array.tobytes() == dcmread(plain).PixelData
