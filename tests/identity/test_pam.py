"""IHE PAM link and unlink (ITI-30 ADT^A24, ADT^A37) over real MLLP connections, with the
``hl7`` package's client: a facility's manual decision that two of its identities are one
person, or two."""

from __future__ import annotations

from sqlalchemy import select
from tests.identity.test_hl7 import CHU, CLINIC, Feed, code, err, feed, msh, pid

from enrs.identity.models import IdentityLink, IdentityTask, RegionalPatient, SourceIdentity
from enrs.kit.audit import verify_chain
from enrs.kit.audit.models import AuditRecord
from enrs.kit.events import read_events

__all__ = ["feed"]  # the fixture

OTHER = {"name": "DUCLOS", "given": "Paul", "dob": "19900130", "sex": "M"}


def a24(control: str, first: str, second: str, *, authority: str = CHU, event: str = "A24") -> str:
    return (
        msh(event, control).replace("ADT_A01", "ADT_A24")
        + f"EVN|{event}|20240306\r"
        + pid(first)
        + pid(second, authority=authority, **OTHER)
    )


def two_persons(feed: Feed) -> tuple[SourceIdentity, SourceIdentity]:
    assert code(feed.send(msh("A28", "c1") + pid("1"))) == "AA"
    assert code(feed.send(msh("A28", "c2") + pid("2", **OTHER))) == "AA"
    first, second = feed.source(CHU, "1"), feed.source(CHU, "2")
    assert first is not None and second is not None and first.patient_id != second.patient_id
    return first, second


def links(feed: Feed, source_id: int) -> list[tuple[str, int, bool, str | None]]:
    with feed.db.transaction() as session:
        rows = session.scalars(
            select(IdentityLink)
            .where(IdentityLink.source_id == source_id)
            .order_by(IdentityLink.id)
        )
        return [(r.method, r.patient_id, r.ended_at is None, r.reason) for r in rows]


def patient(feed: Feed, patient_id: int) -> RegionalPatient:
    with feed.db.transaction() as session:
        found = session.get(RegionalPatient, patient_id)
        assert found is not None
        return found


def test_a24_links_the_second_identity_to_the_first_ones_patient(feed: Feed) -> None:
    first, second = two_persons(feed)
    answer = feed.send(a24("L1", "1", "2"))
    assert code(answer) == "AA"
    moved = feed.source(CHU, "2")
    assert moved is not None and moved.patient_id == first.patient_id
    history = links(feed, second.id)
    assert [(m, p, current) for m, p, current, _ in history] == [
        ("NEW", second.patient_id, False),
        ("MANUAL", first.patient_id, True),
    ]
    assert "ADT^A24" in (history[1][3] or "")
    former = patient(feed, second.patient_id)
    assert not former.active and former.merged_into_id == first.patient_id
    with feed.db.transaction(write=False) as session:
        names = [name for _, name, _ in read_events(session)]
        assert names[-2:] == ["identity.linked", "identity.merged"]
        records = list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))
        rri = patient(feed, first.patient_id).rri
        assert [(r.interaction, r.action, r.outcome, r.entity_ref, r.patient_ref) for r in records][
            -2:
        ] == [
            ("ADT^A24", "U", "0", f"{CHU}|1", f"Patient/{rri}"),
            ("ADT^A24", "U", "0", f"{CHU}|2", f"Patient/{rri}"),
        ]
    assert code(feed.send(a24("L2", "1", "2"))) == "AA"  # already linked: nothing changes
    assert len(links(feed, second.id)) == 2
    assert verify_chain(feed.db).ok


def test_a37_undoes_the_link(feed: Feed) -> None:
    first, second = two_persons(feed)
    assert code(feed.send(a24("L1", "1", "2"))) == "AA"
    assert code(feed.send(a24("U1", "1", "2", event="A37"))) == "AA"
    back = feed.source(CHU, "2")
    assert back is not None and back.patient_id == second.patient_id  # its former patient
    revived = patient(feed, second.patient_id)
    assert revived.active and revived.merged_into_id is None
    assert [(m, p, current) for m, p, current, _ in links(feed, second.id)] == [
        ("NEW", second.patient_id, False),
        ("MANUAL", first.patient_id, False),
        ("MANUAL", second.patient_id, True),
    ]
    with feed.db.transaction() as session:
        events = [(name, payload) for _, name, payload in read_events(session)]
    # Each event says who caused it (the CHU: not notified back) and, as the A37's
    # transaction left them, the patients it concerns.
    unmerged = [p for name, p in events if name == "identity.unmerged"]
    assert [(p["patient_id"], p["origin"]) for p in unmerged] == [(second.patient_id, CHU)]
    name, unlinked = events[-1]
    assert name == "identity.unlinked"
    assert {k: unlinked[k] for k in ("source_id", "from_patient_id", "to_patient_id")} == {
        "source_id": second.id,
        "from_patient_id": first.patient_id,
        "to_patient_id": second.patient_id,
    }
    state = unlinked["state"]
    assert [k[2] for k in state[str(first.patient_id)]["sources"]] == ["1"]
    assert [k[2] for k in state[str(second.patient_id)]["sources"]] == ["2"]
    assert code(feed.send(a24("U2", "1", "2", event="A37"))) == "AA"  # already apart
    assert len(links(feed, second.id)) == 3
    stays = feed.source(CHU, "1")
    assert stays is not None and stays.patient_id == first.patient_id


def test_a37_of_identities_linked_by_the_facility_gives_the_second_a_new_patient(
    feed: Feed,
) -> None:
    assert code(feed.send(msh("A28", "c1") + pid("1"))) == "AA"
    # the same traits, another IPP of the same facility: never linked by matching
    assert code(feed.send(msh("A28", "c2") + pid("2"))) == "AA"
    first, second = feed.source(CHU, "1"), feed.source(CHU, "2")
    assert first is not None and second is not None and first.patient_id != second.patient_id
    assert code(feed.send(a24("L1", "1", "2"))) == "AA"  # the facility links them itself
    second = feed.source(CHU, "2")
    assert second is not None and second.patient_id == first.patient_id
    assert code(feed.send(a24("U1", "1", "2", event="A37"))) == "AA"
    apart = feed.source(CHU, "2")
    assert apart is not None and apart.patient_id not in (first.patient_id, None)
    assert patient(feed, apart.patient_id).active
    assert links(feed, second.id)[-1][:3] == ("MANUAL", apart.patient_id, True)
    # The facility's A37 binds matching: the same traits sent again do not link them back.
    assert code(feed.send(msh("A31", "c3") + pid("2", status="VALI"))) == "AA"
    still = feed.source(CHU, "2")
    assert still is not None and still.patient_id == apart.patient_id
    assert links(feed, second.id)[-1][:3] == ("MANUAL", apart.patient_id, True)
    with feed.db.transaction() as session:  # in the cell's history, as a decided collision
        task = session.scalars(select(IdentityTask).where(IdentityTask.kind == "COLLISION")).one()
        assert (task.kind, task.status, task.decision, task.other_patient_id) == (
            "COLLISION",
            "DONE",
            "UNLINK",
            first.patient_id,
        )
        assert task.source_id == second.id and task.other_source_id == first.id


def test_an_intra_facility_duplicate_is_told_in_the_ack(feed: Feed) -> None:
    """The second IPP of the CHU with the same traits: not linked, a task for the cell, and an
    ERR of severity W at PID-3 naming the first IPP (the CHU merges them itself, A40)."""
    assert code(feed.send(msh("A28", "d1") + pid("1"))) == "AA"
    answer = feed.send(msh("A28", "d2") + pid("2"))
    assert code(answer) == "AA"
    [warning] = [seg for seg in answer if str(seg[0]) == "ERR" and "IPP 1 " in str(seg[8])]
    assert (str(warning[2]), str(warning[4])) == ("PID^1^3", "W")
    assert "intra-facility duplicate" in str(warning[8]) and "(A40)" in str(warning[8])
    first, second = feed.source(CHU, "1"), feed.source(CHU, "2")
    assert first is not None and second is not None and first.patient_id != second.patient_id
    with feed.db.transaction() as session:
        task = session.scalars(
            select(IdentityTask).where(IdentityTask.source_id == second.id)
        ).one()
        assert (task.kind, task.other_patient_id) == ("DUPLICATE", first.patient_id)
        assert f"task {task.id} " in str(warning[8])
    # The clinic's identity of the same person is no intra-facility duplicate.
    clinic = feed.send(
        msh("A28", "d3", facility=f"CLINIC^{CLINIC}^ISO") + pid("C1", authority=CLINIC)
    )
    assert code(clinic) == "AA"
    assert not [seg for seg in clinic if str(seg[0]) == "ERR" and "IPP" in str(seg[8])]


def test_a24_refusals(feed: Feed) -> None:
    assert (
        code(feed.send(msh("A28", "c1") + pid("1", ins="261049720912388", status="QUAL"))) == "AA"
    )
    other = pid("2", ins="190019720900548", status="QUAL", **OTHER)
    assert code(feed.send(msh("A28", "c2") + other)) == "AA"
    before = feed.source(CHU, "2")
    assert before is not None
    different = feed.send(msh("A24", "L1") + pid("1", ins="261049720912388", status="QUAL") + other)
    assert code(different) == "AE" and err(different)[0] == "102"
    assert "different INS" in err(different)[1]
    after = feed.source(CHU, "2")
    assert after is not None and after.patient_id == before.patient_id
    unknown = feed.send(a24("L2", "1", "nobody"))
    assert code(unknown) == "AE" and err(unknown)[0] == "204"
    itself = feed.send(a24("L3", "1", "1"))
    assert code(itself) == "AE" and err(itself)[0] == "102"
    elsewhere = feed.send(a24("L4", "1", "2", authority=CLINIC))
    assert code(elsewhere) == "AE" and "same assigning authority" in err(elsewhere)[1]
    single = feed.send(msh("A24", "L5") + pid("1"))
    assert code(single) == "AR" and err(single)[0] == "100"
    with feed.db.transaction() as session:
        outcomes = [r.outcome for r in session.scalars(select(AuditRecord))][-5:]
    assert outcomes == ["4", "4", "4", "4", "8"]  # every refusal audited


def test_a01_and_a03_feed_the_identity_and_announce_the_stay(feed: Feed) -> None:
    """An admission (A01) and a discharge (A03, accepted as the other feed events) update the
    identity, then announce the stay for the care circles: the patient, the facility's
    authority (and its FINESS when registered with one), the sender as origin; ids only."""
    assert code(feed.send(msh("A01", "adm") + pid("7"))) == "AA"
    assert code(feed.send(msh("A08", "upd") + pid("7"))) == "AA"  # an update: not a stay
    assert code(feed.send(msh("A03", "dis") + pid("7", given="Marie^Marie Rose"))) == "AA"
    source = feed.source(CHU, "7")
    assert source is not None and source.given_names == "Marie Rose"  # A03 updated it
    with feed.db.transaction() as session:
        stays = [(n, p) for _, n, p in read_events(session) if n.startswith("encounter.")]
    assert stays == [
        (
            name,
            {"patient_id": source.patient_id, "facility": None, "authority": CHU, "origin": CHU},
        )
        for name in ("encounter.admitted", "encounter.discharged")
    ]
