"""Notifications of links, merges and identifier changes to the facilities and services that
subscribed (IHE ITI-30/ITI-10 ADT over MLLP, PMIR-style FHIR rest-hook), through the durable
outbound queue, to receivers nobody here wrote: the ``hl7`` package's MLLP server and the
standard library's HTTP server, one of them down and then back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import hl7
import pytest
from sqlalchemy import select
from tests.identity.feeders import CHU, CLINIC, GP, register_domains
from tests.identity.test_hl7 import Feed, code, feed, mrg, msh, pid
from tests.identity.test_service import CONFIG
from tests.support.live_server import free_port
from tests.support.receivers import HttpReceiver, MllpReceiver
from tests.support.waiting import wait_until

from enrs.identity import service, subscriptions, updates, workbench
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.identity.notify import IdentityRenderer
from enrs.identity.schemas import OfferedIdentifier, SourceIdentityIn
from enrs.kit.audit import verify_chain
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.kit.errors import BadRequest, Conflict
from enrs.kit.outbound.dispatcher import Dispatcher, Pace
from enrs.kit.outbound.queue import Backoff, DestinationStatus, statuses

__all__ = ["feed"]  # the fixture

MATCHER = EmbeddedMatcher(MatchModel.load())
FAST = Pace(poll=0.05, batch=20, backoff=Backoff(first=0.1, most=0.5))
RRI_OID = CONFIG.rri_authority


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    register_domains(database, [CHU, CLINIC])
    yield database
    database.dispose()


@contextmanager
def dispatching(db: Database) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(db, IdentityRenderer(CONFIG, "http://testserver"), FAST)
    thread = threading.Thread(target=dispatcher.run)
    thread.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        thread.join(30)


def subscribe(db: Database, name: str, **options: object) -> None:
    with db.transaction() as session:
        subscriptions.subscribe(session, CONFIG, name=name, **options)  # type: ignore[arg-type]


def status(db: Database, name: str) -> DestinationStatus:
    with db.transaction(write=False) as session:
        return next(s for s in statuses(session) if s.name == name)


def feed_identity(db: Database, authority: str, ipp: str, **traits: object) -> SourceIdentity:
    values: dict[str, object] = {
        "birth_name": "NARCISSE",
        "given_names": ["Line"],
        "sex": "F",
        "birth_date": date(1950, 3, 3),
    }
    values.update(traits)
    with db.transaction() as session:
        data = SourceIdentityIn(authority=authority, ipp=ipp, **values)  # type: ignore[arg-type]
        service.feed(session, MATCHER, data, actor="test", config=CONFIG)
        found = session.scalar(
            select(SourceIdentity).where(
                SourceIdentity.authority == authority, SourceIdentity.ipp == ipp
            )
        )
        assert found is not None
        return found


def rri_of(db: Database, patient_id: int) -> str:
    with db.transaction(write=False) as session:
        patient = session.get(RegionalPatient, patient_id)
        assert patient is not None
        return patient.rri


def field(message: hl7.Message, segment: str, n: int) -> str:
    return str(message.segment(segment)[n])


def cx_list(message: hl7.Message, segment: str, field: int) -> list[tuple[str, str]]:
    """(value, CX-4.2 OID) of each repetition of ``segment``-``field``."""
    reps = message.segment(segment)[field]
    found = []
    for rep in reps:
        found.append((str(rep[0]), str(rep[3][1]) if len(rep) > 3 else ""))
    return found


def doubtful_pair(db: Database) -> int:
    """The CHU's identity 10 and the clinic's 20, douteuse: a potential duplicate task."""
    common = {"birth_name": "LOUIS-JEAN", "given_names": ["Mireille"], "sex": "F"}
    common |= {"birth_date": date(1948, 12, 2), "birth_place": "97105", "postal_code": "97100"}
    feed_identity(db, CHU, "10", **common)
    with db.transaction() as session:
        data = SourceIdentityIn(
            authority=CLINIC, ipp="20", attributes=frozenset({"DOUT"}), **common
        )
        result = service.feed(session, MATCHER, data, actor="test", config=CONFIG)
    assert result.task == "DUPLICATE" and result.task_id is not None
    return result.task_id


# --------------------------------------------------------------------------- what is sent


def test_the_cells_merge_is_told_to_each_holder_in_its_own_identifiers(db: Database) -> None:
    task_id = doubtful_pair(db)
    clinic, chu, store = MllpReceiver().start(), MllpReceiver().start(), HttpReceiver().start()
    try:
        subscribe(
            db,
            "clinique",
            transport="mllp",
            endpoint=f"127.0.0.1:{clinic.port}",
            authority=CLINIC,
            application="DPI",
            facility="CLINIQUE",
        )
        subscribe(db, "chu", transport="mllp", endpoint=f"127.0.0.1:{chu.port}", authority=CHU)
        subscribe(
            db,
            "entrepot",
            transport="http",
            endpoint=f"http://127.0.0.1:{store.port}/hook",
            headers={"Authorization": "Bearer s3cret"},
        )
        chu_10 = feed_identity(
            db,
            CHU,
            "10",
            birth_name="LOUIS-JEAN",
            given_names=["Mireille"],
            birth_date=date(1948, 12, 2),
            birth_place="97105",
            postal_code="97100",
        )  # the same again: an update, no change
        with db.transaction(write=False) as session:
            clinic_20 = session.scalar(select(SourceIdentity).where(SourceIdentity.ipp == "20"))
            assert clinic_20 is not None
        survivor, retired = rri_of(db, chu_10.patient_id), rri_of(db, clinic_20.patient_id)
        with dispatching(db):
            with db.transaction() as session:
                workbench.decide(session, task_id, "MERGE", reason="même personne", actor="cell")
            assert wait_until(lambda: clinic.messages() and chu.messages() and store.posts())
            assert wait_until(lambda: status(db, "entrepot").sent == 1)
        # The clinic held the retired patient: A40, in its identifiers and the RRI.
        [a40] = clinic.messages()
        assert field(a40, "MSH", 9) == "ADT^A40^ADT_A39"
        assert field(a40, "MSH", 5) == "DPI" and field(a40, "MSH", 6) == "CLINIQUE"
        assert cx_list(a40, "PID", 3) == [("20", CLINIC), (survivor, RRI_OID)]
        assert cx_list(a40, "MRG", 1) == [(retired, RRI_OID)]
        assert str(a40["PID.F5.R1.C1"]) == "LOUIS-JEAN"  # its own traits
        # The CHU holds the survivor: its cross-references changed (A31, ITI-10).
        [a31] = chu.messages()
        assert field(a31, "MSH", 9) == "ADT^A31^ADT_A05"
        assert cx_list(a31, "PID", 3) == [("10", CHU), (survivor, RRI_OID)]
        # The service (no authority): a PMIR-style message, the retired patient replaced.
        [post] = store.posts()
        assert post["path"] == "/hook" and post["headers"]["Authorization"] == "Bearer s3cret"
        assert post["headers"]["Content-Type"] == "application/fhir+json"
        bundle = post["body"]
        assert bundle["type"] == "message"
        header, history = (e["resource"] for e in bundle["entry"])
        assert header["eventUri"] == "urn:ihe:iti:pmir:2019:patient-feed"
        assert header["focus"] == [{"reference": bundle["entry"][1]["fullUrl"]}]
        patients = {e["resource"]["id"]: e["resource"] for e in history["entry"]}
        assert patients[retired]["active"] is False
        assert patients[retired]["link"][0] == {
            "other": {"reference": f"Patient/{survivor}"},
            "type": "replaced-by",
        }
        ids = {i["value"] for i in patients[survivor]["identifier"]}
        assert {"10", "20", survivor} <= ids
    finally:
        clinic.stop(), chu.stop(), store.stop()
    # Every delivery audited, on the chain.
    with db.transaction(write=False) as session:
        audited = session.scalars(
            select(AuditRecord).where(AuditRecord.category == "notification")
        ).all()
    assert sorted((a.agent_id, a.interaction, a.outcome) for a in audited) == [
        ("chu", "ADT^A31", "0"),
        ("clinique", "ADT^A40", "0"),
        ("entrepot", "pmir-feed", "0"),
    ]
    assert {a.patient_ref for a in audited} == {f"Patient/{survivor}"}
    assert verify_chain(db).ok


def test_two_identities_of_one_facility_linked_by_the_cell_are_told_to_it(
    db: Database,
) -> None:
    first = feed_identity(db, CHU, "30")
    with db.transaction() as session:
        again = SourceIdentityIn(
            authority=CHU,
            ipp="31",
            birth_name="NARCISSE",
            given_names=["Line"],
            sex="F",
            birth_date=date(1950, 3, 3),
        )
        result = service.feed(session, MATCHER, again, actor="test", config=CONFIG)
    assert result.task == "DUPLICATE" and result.task_id is not None  # never linked silently
    chu, clinic = MllpReceiver().start(), MllpReceiver().start()
    try:
        subscribe(db, "chu", transport="mllp", endpoint=f"127.0.0.1:{chu.port}", authority=CHU)
        subscribe(
            db, "clinique", transport="mllp", endpoint=f"127.0.0.1:{clinic.port}", authority=CLINIC
        )
        with dispatching(db):
            with db.transaction() as session:
                workbench.decide(session, result.task_id, "LINK", reason="doublon", actor="cell")
            assert wait_until(lambda: chu.messages())
            assert wait_until(lambda: status(db, "chu").sent == 1)
        rri = rri_of(db, first.patient_id)
        [a24] = chu.messages()
        assert field(a24, "MSH", 9) == "ADT^A24^ADT_A24"
        pids = [seg for seg in a24 if str(seg[0]) == "PID"]
        assert [cx_list(hl7.parse(str(a24)), "PID", 3)] and len(pids) == 2
        assert str(pids[0][3][0][0]) == "30" and str(pids[1][3][0][0]) == "31"
        assert str(pids[1][3][1][0]) == rri  # both now one regional patient
        assert clinic.messages() == [] and status(db, "clinique").sent == 0  # holds neither
    finally:
        chu.stop(), clinic.stop()


def test_a_facilitys_own_a40_is_told_to_the_others_not_back_to_it(feed: Feed) -> None:
    """Through the real MLLP feed: the CHU merges its identity 2 into 1 (ADT^A40)."""
    store, chu = MllpReceiver().start(), MllpReceiver().start()
    try:
        subscribe(feed.db, "entrepot", transport="mllp", endpoint=f"127.0.0.1:{store.port}")
        subscribe(feed.db, "chu", transport="mllp", endpoint=f"127.0.0.1:{chu.port}", authority=CHU)
        assert code(feed.send(msh("A28", "1") + pid("1"))) == "AA"
        other = {"name": "DUCLOS", "given": "Paul", "dob": "19900130", "sex": "M"}
        assert code(feed.send(msh("A28", "2") + pid("2", **other))) == "AA"
        kept, gone = feed.source(CHU, "1"), feed.source(CHU, "2")
        assert kept is not None and gone is not None
        survivor, retired = rri_of(feed.db, kept.patient_id), rri_of(feed.db, gone.patient_id)
        merge = msh("A40", "3") + "EVN|A40|20240306\r" + pid("1") + mrg("2")
        with dispatching(feed.db):
            assert code(feed.send(merge)) == "AA"
            assert wait_until(lambda: store.messages())
            assert wait_until(lambda: status(feed.db, "entrepot").sent == 1)
        [a40] = store.messages()
        assert field(a40, "MSH", 9) == "ADT^A40^ADT_A39"
        assert cx_list(a40, "PID", 3) == [("1", CHU), (survivor, RRI_OID)]
        assert cx_list(a40, "MRG", 1) == [("2", CHU), (retired, RRI_OID)]
        assert chu.messages() == [] and status(feed.db, "chu").sent == 0  # its own change
    finally:
        store.stop(), chu.stop()


def test_unlink_and_identifier_change(db: Database) -> None:
    one = feed_identity(db, CHU, "1")
    feed_identity(
        db,
        CHU,
        "2",
        birth_name="DUCLOS",
        given_names=["Paul"],
        sex="M",
        birth_date=date(1990, 1, 30),
    )
    store = MllpReceiver().start()
    try:
        subscribe(
            db, "entrepot", transport="mllp", endpoint=f"127.0.0.1:{store.port}", wanted=[CHU]
        )
        with dispatching(db):
            with db.transaction() as session:
                updates.link_identities(
                    session, authority=CHU, first_ipp="1", second_ipp="2", actor="test"
                )
            with db.transaction() as session:
                updates.unlink_identities(
                    session, authority=CHU, first_ipp="1", second_ipp="2", actor="test"
                )
            with db.transaction() as session:
                updates.change_identifier(
                    session, authority=CHU, old_ipp="2", new_ipp="2B", actor="test"
                )
            assert wait_until(lambda: status(db, "entrepot").sent == 3)
        a31, a37, a47 = store.messages()
        # Nothing disappeared in the domains it receives (not the RRI's): an A31, not an A40.
        assert field(a31, "MSH", 9) == "ADT^A31^ADT_A05"
        assert cx_list(a31, "PID", 3) == [("1", CHU), ("2", CHU)]
        assert field(a37, "MSH", 9) == "ADT^A37^ADT_A37"
        pids = [seg for seg in a37 if str(seg[0]) == "PID"]
        assert [str(p[3][0][0]) for p in pids] == ["1", "2"]
        assert field(a47, "MSH", 9) == "ADT^A47^ADT_A30"
        assert cx_list(a47, "PID", 3) == [("2B", CHU)]
        assert cx_list(a47, "MRG", 1) == [("2", CHU)]
        assert rri_of(db, one.patient_id)
    finally:
        store.stop()


# --------------------------------------------------------------------------- the queue


def identifier_changes(db: Database, count: int) -> None:
    """``count`` identities of the CHU, then an ADT^A47 for each (``P{n}`` → ``N{n}``)."""
    for n in range(count):
        feed_identity(db, CHU, f"P{n}", birth_name=f"NOM{n}", birth_date=date(1960, 1, 1 + n))
    for n in range(count):
        with db.transaction() as session:
            updates.change_identifier(
                session, authority=CHU, old_ipp=f"P{n}", new_ipp=f"N{n}", actor="test"
            )


def old_identifiers(messages: list[hl7.Message]) -> list[str]:
    return [cx_list(m, "MRG", 1)[0][0] for m in messages]


def test_a_destination_down_holds_back_no_other_and_gets_everything_in_order_when_back(
    db: Database,
) -> None:
    down_mllp, down_http = free_port(), free_port()
    up = MllpReceiver().start()
    subscribe(db, "up", transport="mllp", endpoint=f"127.0.0.1:{up.port}", wanted=[CHU])
    subscribe(db, "down", transport="mllp", endpoint=f"127.0.0.1:{down_mllp}", wanted=[CHU])
    subscribe(db, "hook", transport="http", endpoint=f"http://127.0.0.1:{down_http}/")
    subscribe(db, "chu", transport="mllp", endpoint=f"127.0.0.1:{up.port}", authority=CHU)
    later: list[MllpReceiver | HttpReceiver] = []
    try:
        with dispatching(db):
            identifier_changes(db, 5)
            assert wait_until(lambda: len(up.messages()) == 5)
            assert old_identifiers(up.messages()) == [f"P{n}" for n in range(5)]
            assert wait_until(lambda: status(db, "down").head_attempts >= 2)
            down = status(db, "down")
            assert (down.pending, down.sent) == (5, 0)
            assert down.head_error is not None and "cannot connect" in down.head_error
            assert down.next_attempt_at is not None
            hook = status(db, "hook")
            assert hook.pending == 5 and hook.head_error is not None
        # Stopped while two destinations are down: the queue is in the database.
        assert status(db, "down").pending == 5
        later = [MllpReceiver(port=down_mllp).start(), HttpReceiver(port=down_http).start()]
        with dispatching(db):
            assert wait_until(lambda: status(db, "down").sent == 5)
            assert wait_until(lambda: status(db, "hook").sent == 5)
        back, http_back = later
        assert isinstance(back, MllpReceiver) and isinstance(http_back, HttpReceiver)
        assert old_identifiers(back.messages()) == [f"P{n}" for n in range(5)]
        ids = [
            [
                i["value"]
                for i in p["body"]["entry"][1]["resource"]["entry"][0]["resource"]["identifier"]
                if i["system"] == f"urn:oid:{CHU}"
            ]
            for p in http_back.posts()
        ]
        assert ids == [[f"N{n}"] for n in range(5)]  # each with the identifier of its time
        # The CHU made the changes itself: nothing is sent back to it.
        assert status(db, "chu").sent + status(db, "chu").pending == 0
        assert len(up.messages()) == 5
    finally:
        up.stop()
        for receiver in later:
            receiver.stop()


def test_a_refused_message_is_kept_as_refused_and_the_queue_goes_on(db: Database) -> None:
    def answer(message: hl7.Message) -> str:
        return "AE" if cx_list(message, "MRG", 1)[0][0] == "P1" else "AA"

    picky, fussy_port = MllpReceiver(answer=answer).start(), free_port()
    fussy = HttpReceiver(port=fussy_port, status=422).start()
    subscribe(db, "picky", transport="mllp", endpoint=f"127.0.0.1:{picky.port}", wanted=[CHU])
    subscribe(db, "fussy", transport="http", endpoint=f"http://127.0.0.1:{fussy_port}/")
    try:
        with dispatching(db):
            identifier_changes(db, 3)
            assert wait_until(lambda: status(db, "picky").sent == 2)
            assert wait_until(lambda: status(db, "fussy").rejected == 3)
        picky_status = status(db, "picky")
        assert (picky_status.rejected, picky_status.pending) == (1, 0)
        assert picky_status.last_rejection is not None
        assert picky_status.last_rejection.startswith("ACK AE")
        assert old_identifiers(picky.messages()) == ["P0", "P1", "P2"]
        fussy_status = status(db, "fussy")
        assert fussy_status.last_rejection is not None
        assert fussy_status.last_rejection.startswith("HTTP 422")
    finally:
        picky.stop(), fussy.stop()
    with db.transaction(write=False) as session:
        refused = session.scalars(
            select(AuditRecord).where(
                AuditRecord.category == "notification", AuditRecord.outcome == "8"
            )
        ).all()
    assert sorted(r.agent_id for r in refused) == ["fussy", "fussy", "fussy", "picky"]
    assert verify_chain(db).ok


def test_a_server_error_is_tried_again(db: Database) -> None:
    flaky = HttpReceiver(status=503).start()
    subscribe(db, "flaky", transport="http", endpoint=f"http://127.0.0.1:{flaky.port}/")
    try:
        with dispatching(db):
            identifier_changes(db, 2)
            assert wait_until(lambda: status(db, "flaky").head_attempts >= 2)
            assert status(db, "flaky").sent == 0
            flaky.status = 200
            assert wait_until(lambda: status(db, "flaky").sent == 2)
        assert len(flaky.posts()) >= 4  # the 503s, then both
    finally:
        flaky.stop()


def test_subscriptions_are_checked(db: Database) -> None:
    with pytest.raises(BadRequest, match="not a registered domain"):
        subscribe(db, "x", transport="mllp", endpoint="127.0.0.1:2576", authority="1.2.3.4")
    with pytest.raises(BadRequest, match="HOST:PORT"):
        subscribe(db, "x", transport="mllp", endpoint="localhost")
    with pytest.raises(BadRequest, match="URL"):
        subscribe(db, "x", transport="http", endpoint="ftp://example.org/")
    with pytest.raises(BadRequest, match="not a domain of this server"):
        subscribe(db, "x", transport="mllp", endpoint="127.0.0.1:2576", wanted=["1.2.3.9"])
    subscribe(db, "x", transport="mllp", endpoint="127.0.0.1:2576", authority=CLINIC)
    with pytest.raises(Conflict):
        subscribe(db, "x", transport="http", endpoint="http://127.0.0.1:8/")
    assert status(db, "x").selector["domains"] == [CLINIC, RRI_OID]


def test_one_sender_per_database_the_other_stands_in(db: Database) -> None:
    store = MllpReceiver().start()
    subscribe(db, "entrepot", transport="mllp", endpoint=f"127.0.0.1:{store.port}", wanted=[CHU])
    other_db = Database(db.url)
    pair = [
        Dispatcher(d, IdentityRenderer(CONFIG, "http://testserver"), FAST) for d in (db, other_db)
    ]
    threads = [threading.Thread(target=d.run) for d in pair]
    for thread in threads:
        thread.start()
    try:
        identifier_changes(db, 3)
        assert wait_until(lambda: status(db, "entrepot").sent == 3)
        [holder] = [d for d in pair if d._couriers]  # the other waited: nothing sent twice
        assert old_identifiers(store.messages()) == ["P0", "P1", "P2"]
        holder.stop()
        threads[pair.index(holder)].join(30)
        # The holder gone, the stand-in sends.
        with db.transaction() as session:
            updates.change_identifier(
                session, authority=CHU, old_ipp="N0", new_ipp="M0", actor="test"
            )
        assert wait_until(lambda: status(db, "entrepot").sent == 4)
        assert old_identifiers(store.messages()) == ["P0", "P1", "P2", "N0"]
    finally:
        for dispatcher in pair:
            dispatcher.stop()
        for thread in threads:
            thread.join(30)
        other_db.dispose()
        store.stop()


def test_the_other_identifiers_kept_are_carried(db: Database) -> None:
    register_domains(db, [GP])
    other = OfferedIdentifier(system=GP, value="G1", type="PI")
    feed_identity(db, CHU, "7", other_identifiers=[other])
    store = MllpReceiver().start()
    subscribe(db, "cabinet", transport="mllp", endpoint=f"127.0.0.1:{store.port}", wanted=[CHU, GP])
    try:
        with dispatching(db):
            with db.transaction() as session:
                updates.change_identifier(
                    session, authority=CHU, old_ipp="7", new_ipp="7B", actor="test"
                )
            assert wait_until(lambda: status(db, "cabinet").sent == 1)
        [a47] = store.messages()
        assert cx_list(a47, "PID", 3) == [("7B", CHU), ("G1", GP)]
    finally:
        store.stop()
