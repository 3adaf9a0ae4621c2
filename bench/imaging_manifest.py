"""Building a study's KOS manifest (:mod:`enrs.imaging.manifest`) for a large study, next to
pydicom reading the same manifest back in the same run.

    .venv/bin/python -m bench.imaging_manifest [--series 4] [--instances 500] [--rounds 5]

A study of ``--series`` × ``--instances`` CT instances (index rows made in memory, no
database) is listed in a KOS manifest: ``build_kos`` (the evidence sequence and the TID 2010
content items) then its encoding in Explicit VR Little Endian. The baseline is ``dcmread`` of
the encoded manifest (pydicom parsing every item). Printed: the manifest's size, milliseconds
per build and per read (best of ``--rounds``), and their ratio. The database part (the
study's instances read, the manifest archived and filed, one transaction) is not measured.

With ``--index N`` (and ``--postgres``), the choice of the studies due: an index of about N
instances is loaded (``bench.imaging_query.load_index``), every study with a filed report and
an up-to-date manifest; then ``--changed`` studies receive one instance each. Timed (best of
``--rounds``): a full weighing (every study's instances counted: what ``enrs imaging documents
run`` and the listener's first round do), and a listener's later round (a ``Watch``: the
studies that received an instance since the round before, then only those weighed). Both must
find the ``--changed`` studies due.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import CTImageStorage, generate_uid
from sqlalchemy import (
    Engine,
    String,
    cast,
    create_engine,
    func,
    insert,
    literal,
    null,
    select,
    text,
)

from bench.http_baseline import PG_ADMIN_URL, temporary_postgres
from bench.imaging_query import load_index, migrate
from enrs.imaging.encoding import part10
from enrs.imaging.manifest import KOS_CLASS, Watch, Where, _encoded, _weigh, build_kos
from enrs.imaging.models import Instance, Series, Study
from enrs.imaging.report_models import StudyDocument
from enrs.kit.db import Database


def _documents(engine: Engine) -> None:
    """Every study reported, and its manifest listing all its instances."""
    counts = (
        select(Series.study_id.label("study_id"), func.count(Instance.id).label("n"))
        .join(Instance, Instance.series_id == Series.id)
        .group_by(Series.study_id)
        .subquery()
    )
    table = StudyDocument.__table__
    stamp = literal(datetime.now(UTC), table.c.created_at.type)
    columns = ["study_id", "kind", "sop_instance_uid", "status", "instance_count"]
    with engine.begin() as conn:
        for kind in ("report", "manifest"):
            rows = select(
                counts.c.study_id,
                literal(kind),
                literal(f"2.25.{len(kind)}.") + cast(counts.c.study_id, String),
                literal("filed"),
                counts.c.n if kind == "manifest" else null(),
                stamp,
                stamp,
            )
            conn.execute(
                insert(StudyDocument).from_select([*columns, "created_at", "updated_at"], rows)
            )


def _one_more(engine: Engine, studies: list[int]) -> None:
    """One instance more in a series of each of ``studies`` (a late instance)."""
    with engine.begin() as conn:
        top = conn.execute(text("SELECT max(id) FROM imaging_instance")).scalar_one()
        for n, study in enumerate(studies, start=1):
            series = conn.execute(
                text("SELECT min(id) FROM imaging_series WHERE study_id = :s"), {"s": study}
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO imaging_instance (id, sop_instance_uid, series_id, sop_class_uid,"
                    " transfer_syntax_uid, size, sha256, blob_key, sending_aet, received_at,"
                    " storage_tier) SELECT :id, :uid, :series, sop_class_uid, transfer_syntax_uid,"
                    " size, sha256, blob_key, sending_aet, received_at, storage_tier"
                    " FROM imaging_instance WHERE series_id = :series LIMIT 1"
                ),
                {"id": top + n, "uid": f"2.25.9.{top + n}", "series": series},
            )


def weigh_at_scale(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-weigh-")))
        if args.postgres:
            url = stack.enter_context(temporary_postgres(PG_ADMIN_URL))
        else:
            url = f"sqlite:///{tmp / 'var' / 'enrs.db'}"
        migrate(tmp / "var", url)
        engine = create_engine(url)
        shape = load_index(engine, args.index, 16)
        _documents(engine)
        print(
            f"index: {shape.instances} instances, {shape.studies} studies "
            f"({'PostgreSQL' if args.postgres else 'SQLite'}), loaded in {shape.seconds:.0f} s"
        )
        db = Database(url)
        stack.callback(db.dispose)
        quiet, changed = timedelta(0), list(range(1, shape.studies + 1, shape.studies // 10))
        changed = changed[: args.changed]
        watch = Watch()
        with db.transaction(write=False) as session:
            assert watch.studies(session, set()) is None  # the first round: every study
        fulls, rounds = [], []
        _one_more(engine, changed)
        for _ in range(args.rounds):
            with db.transaction(write=False) as session:
                start = time.perf_counter()
                due, _ = _weigh(session, quiet, datetime.now(UTC), None)
                fulls.append(time.perf_counter() - start)
            assert sorted(i for i, _ in due) == changed, due
            again = Watch(marks=watch.marks)
            with db.transaction(write=False) as session:
                start = time.perf_counter()
                among = again.studies(session, set())
                due, _ = _weigh(session, quiet, datetime.now(UTC), among)
                rounds.append(time.perf_counter() - start)
            assert sorted(i for i, _ in due) == changed, due
        full_ms, round_ms = min(fulls) * 1000, min(rounds) * 1000
        print(f"full weighing (every study): {full_ms:.1f} ms")
        print(f"listener round ({len(changed)} studies changed): {round_ms:.1f} ms")
        print(f"ratio full/round: {full_ms / round_ms:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--index", type=int, default=0, help="instances indexed (0: skip)")
    parser.add_argument("--changed", type=int, default=10)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    if args.index:
        weigh_at_scale(args)
        return
    study = Study(
        study_uid=generate_uid(), source_patient_id="IPP-1", source_issuer="1.2.250.1.999.1.1",
        patient_name="TEST^BENCH", patient_birth_date=date(1961, 4, 9), patient_sex="F",
        accession_number="ACC1", study_date=date(2026, 12, 5), study_description="TDM",
    )  # fmt: skip
    listed = [
        (Instance(sop_instance_uid=generate_uid(), sop_class_uid=CTImageStorage), series)
        for series in (generate_uid() for _ in range(args.series))
        for _ in range(args.instances)
    ]
    where = Where("ENRS", "https://enrs.example/dicomweb", "1.2.250.1.999.6")
    builds, reads, file = [], [], b""
    for _ in range(args.rounds):
        start = time.perf_counter()
        kos = build_kos(study, listed, where, datetime.now(UTC))
        data = _encoded(kos)
        builds.append(time.perf_counter() - start)
        file = part10(data, sop_class=KOS_CLASS, sop_instance=kos.SOPInstanceUID,
                      transfer_syntax="1.2.840.10008.1.2.1", source_aet="ENRS")  # fmt: skip
        start = time.perf_counter()
        back = dcmread(BytesIO(file))
        back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[-1]
        len(back.ContentSequence)
        reads.append(time.perf_counter() - start)
    build_ms, read_ms = min(builds) * 1000, min(reads) * 1000
    print(f"instances listed: {len(listed)}  manifest: {len(file) / 1024:.0f} KiB")
    print(f"build + encode: {build_ms:.1f} ms  ({len(listed) / (build_ms / 1000):,.0f} inst/s)")
    print(f"baseline dcmread: {read_ms:.1f} ms")
    print(f"ratio build/read: {build_ms / read_ms:.2f}")


if __name__ == "__main__":
    main()
