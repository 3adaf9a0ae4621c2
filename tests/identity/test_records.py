"""``identity.service.records_of``: the records many patients are part of at once, merges
followed up to the patient each ends in, then down to every patient merged into it."""

from __future__ import annotations

from enrs.identity import service
from enrs.identity.models import RegionalPatient
from enrs.kit.db import Database


def test_records_follow_merges_up_and_down(db: Database) -> None:
    with db.transaction() as session:
        patients = {name: RegionalPatient(rri=f"R-{name}") for name in "ABCDEFG"}
        session.add_all(patients.values())
        session.flush()
        ids = {name: patient.id for name, patient in patients.items()}
        # A into B into C (active); E into C; F inactive, merged into none; G into F
        for child, parent in (("A", "B"), ("B", "C"), ("E", "C"), ("G", "F")):
            patients[child].active = False
            patients[child].merged_into_id = ids[parent]
        patients["F"].active = False
    with db.transaction(write=False) as session:
        asked = [ids[name] for name in "ADGC"]
        records = service.records_of(session, asked)
    assert sorted(records) == sorted([ids["C"], ids["D"], ids["F"]])
    assert records[ids["C"]][0] == ids["C"]  # the patient the record ends in, first
    assert sorted(records[ids["C"]]) == sorted(ids[name] for name in "ABCE")
    assert records[ids["D"]] == [ids["D"]]
    assert records[ids["F"]] == [ids["F"], ids["G"]]
    with db.transaction(write=False) as session:  # one patient alone: as the single-patient path
        current = service.current_patient(session, ids["A"])
        assert current is not None and current.id == ids["C"]
        assert sorted(service.merged_patient_ids(session, current.id)) == sorted(records[ids["C"]])
