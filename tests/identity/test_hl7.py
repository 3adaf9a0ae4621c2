"""The HL7 v2 identity feed (IHE PAM ITI-30 with PAM-FR 2.11, PIX query ITI-9) over real MLLP
connections, with the ``hl7`` package's client: through ``enrs serve``, and in process."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import hl7
import pytest
from hl7.client import MLLPClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from tests.identity.feeders import CHU, CLINIC, GP, register_sender, register_senders
from tests.support.audit_failure import refuse_audit_inserts
from tests.support.live_server import enrs_command, free_port, live_server
from tests.support.mllp import serving

from enrs.identity import domains, pam, repository
from enrs.identity.config import IdentityConfig
from enrs.identity.hl7 import IdentityFeed
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.identity.models import (
    IdentityLink,
    RegionalPatient,
    SourceIdentity,
    SourceIdentityVersion,
)
from enrs.kit.audit import verify_chain
from enrs.kit.audit.models import AuditRecord
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database
from enrs.kit.events import read_events
from enrs.kit.hl7v2 import parse_message as parse_v2
from enrs.kit.mllp import EB, SB, frame
from enrs.settings import PLACEHOLDER_OID_ROOT

CONFIG = IdentityConfig(PLACEHOLDER_OID_ROOT)  # as the test settings: not in development
RRI_AUTHORITY = CONFIG.rri_authority

# The tests' senders (MSH-4) and the authorities they write; the CHU's sender writes the
# clinic's too, so that the handlers' own refusals of mixed authorities can be tested.
SENDERS = {CHU: (CHU, CLINIC), CLINIC: (CLINIC,)}
ANS_EXAMPLE = (
    "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A01^ADT_A01|3975|D|2.5^FRA^2.11|||||FRA"
    "|UNICODE UTF-8|FR||2.11^IHE_FRANCE-2.11-PAM\r"
    "PID|1||000003^^^CHU-X&000897405&N^PI~279035121518989^^^ASIP-SANTE-INS-NIR"
    "&1.2.250.1.213.1.4.10&ISO^INS^^20101207||PAT-TROIS^DOMINIQUE^DOMINIQUE^^^^L||19790328|F|||"
    "28 Av de Breteuil^^PARIS^^75007^FRA^H^^^^^^^~^^^^^^BDL^^63220|||||S||24000006^^^CHU-X"
    "&000897405&M^AN|||||||1|||||N||VALI|20240306111153\r"
    "ZFD|||Y|N|INSI|20211201||\r"
)


def msh(event: str, control: str, *, facility: str = f"CHU^{CHU}^ISO", charset: str = "") -> str:
    kind = "QBP^Q23^QBP_Q21" if event == "Q23" else f"ADT^{event}^ADT_A01"
    tail = f"|||||FRA|{charset}" if charset else ""
    return f"MSH|^~\\&|GAM|{facility}|ENRS|REGION|20240306111154||{kind}|{control}|P|2.5{tail}\r"


def pid(
    ipp: str,
    *,
    authority: str = CHU,
    name: str = "JOSEPH",
    given: str = "Marie-Line^Marie-Line Rose",
    dob: str = "19610409",
    sex: str = "F",
    ins: str = "",
    status: str = "PROV",
    used: str = "",
) -> str:
    ids = f"{ipp}^^^&{authority}&ISO^PI"
    if ins:
        ids += f"~{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
    names = f"{name}^{given}^^^^L" + (f"~{used}^^^^^^D" if used else "")
    fields = [""] * 33
    fields[1], fields[3], fields[5], fields[7], fields[8] = "1", ids, names, dob, sex
    fields[11] = "12 rue Schoelcher^^Fort-de-France^^97200^FRA^H~^^^^^^BDL^^97209"
    fields[13], fields[32] = "^PRN^PH^^^^^^^^^0596123456", status
    return "PID|" + "|".join(fields[1:]) + "\r"


def mrg(ipp: str, authority: str = CHU) -> str:
    return f"MRG|{ipp}^^^&{authority}&ISO^PI\r"


def qbp(control: str, ipp: str, authority: str = CHU, domains: str = "") -> str:
    qpd = f"QPD|IHE PIX Query^IHE PIX Query|Q{control}|{ipp}^^^&{authority}&ISO^PI|{domains}\r"
    return msh("Q23", control) + qpd + "RCP|I\r"


def parsed(raw: bytes, encoding: str = "utf-8") -> hl7.Message:
    assert raw.startswith(SB) and raw.endswith(EB + b"\r"), raw
    return hl7.parse(raw[1:-2].decode(encoding))


def code(answer: hl7.Message) -> str:
    return str(answer["MSA.F1"])


def err(answer: hl7.Message) -> tuple[str, str]:
    return str(answer["ERR.F3.R1.C1"]), str(answer["ERR.F8"])


def where(answer: hl7.Message) -> str:
    """ERR-2 of the first ERR, whole (``PID^1^3^2^4``)."""
    return str(answer.segment("ERR")[2])


def has(answer: hl7.Message, name: str) -> bool:
    return any(str(seg[0]) == name for seg in answer)


class Feed:
    """An in-process identity feed on a free port, and a client for it."""

    def __init__(self, db: Database, port: int) -> None:
        self.db, self.port = db, port

    def send(self, message: str | bytes, encoding: str = "utf-8") -> hl7.Message:
        with MLLPClient("127.0.0.1", self.port, encoding) as client:
            return parsed(client.send_message(message), encoding)

    def source(self, authority: str, ipp: str) -> SourceIdentity | None:
        with self.db.transaction() as session:
            return session.scalar(
                select(SourceIdentity).where(
                    SourceIdentity.authority == authority, SourceIdentity.ipp == ipp
                )
            )

    def count(self, model: type[object]) -> int:
        with self.db.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@contextmanager
def feed_server(
    database_url: str,
    senders: dict[str, tuple[str, ...]] | None = None,
    sender_ttl: float = 5.0,
    config: IdentityConfig = CONFIG,
) -> Iterator[Feed]:
    """A feed on ``database_url`` with ``senders`` registered (default :data:`SENDERS`)."""
    db = Database(database_url)
    register_senders(db, SENDERS if senders is None else senders)
    audit = AuditWriter(db)
    matcher = EmbeddedMatcher(MatchModel.load())
    handler = IdentityFeed(db, matcher, audit, config=config, sender_ttl=sender_ttl)
    try:
        with serving(handler) as port:
            yield Feed(db, port)
    finally:
        audit.close()
        db.dispose()


@pytest.fixture
def feed(database_url: str) -> Iterator[Feed]:
    with feed_server(database_url) as running:
        yield running


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ----------------------------------------------------------------------------- enrs serve


def test_ans_example_through_enrs_serve(tmp_path: Path, database_url: str) -> None:
    port, region = free_port(), "1.2.250.1.71.9"  # the region's own arc (ENRS_OID_ROOT)
    # ENRS_DEV: the ANS example carries a test INS (OID 1.2.250.1.213.1.4.10).
    env = {"ENRS_MLLP_PORT": str(port), "ENRS_OID_ROOT": region, "ENRS_DEV": "true"}
    # The CHU's GAM, registered by the admin: known by its FINESS in MSH-4, writing its own
    # identities (the FINESS's OID under the region's arc). The ANS example names the sending
    # facility CHU-X alone; a sender is known by an OID or a FINESS, so MSH-4 gets its FINESS.
    facility = "CHU-X^000897405^M"
    sender = f"{region}.2.1000897405"
    run_env = {**env, "ENRS_DATA_DIR": str(tmp_path / "var"), "ENRS_DATABASE_URL": database_url,
               "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(
        enrs_command("identity", "domains", "add", "--finess", "000897405", "--namespace", "CHU-X"),
        env=run_env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    registered = subprocess.run(
        enrs_command(
            "clients", "create", "GAM CHU-X", "--mllp-sender", sender, "--finess", "000897405"
        ),
        env={**env, "ENRS_DATA_DIR": str(tmp_path / "var"), "ENRS_DATABASE_URL": database_url,
             "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(registered.stdout)["authorities"] == sender
    message = ANS_EXAMPLE.replace("|GAM|CHU-X|", f"|GAM|{facility}|", 1)
    with live_server(data_dir=tmp_path / "var", database_url=database_url, extra_env=env) as server:
        wait_for_port(port)
        with MLLPClient("127.0.0.1", port) as client:
            answer = parsed(client.send_message(message))
            assert code(answer) == "AA" and str(answer.segment("MSA")[2]) == "3975"
            assert (answer["MSH.F3"], answer["MSH.F5"], answer["MSH.F11"]) == ("DPI", "GAM", "D")
            assert answer["MSH.F18"] == "UNICODE UTF-8" and answer["MSH.F9.R1.C1"] == "ACK"
            query = (
                msh("Q23", "Q1", facility=facility)
                + "QPD|IHE PIX Query|T1|000003^^^CHU-X&000897405&N^PI\r"
            )
            pix = parsed(client.send_message(query))
    assert "Traceback" not in server.log()  # stopped cleanly by SIGTERM
    assert code(pix) == "AA" and pix["QAK.F2"] == "OK"
    assert "000003" not in str(pix.segment("PID")[3])  # the queried identifier (ITI-9)
    assert f"^^^ENRS&{region}.1&ISO^RRI" in str(pix.segment("PID")[3])
    assert "279035121518989" not in str(pix.segment("PID")[3])  # VALI: the INS is not shared
    db = Database(database_url)
    with db.transaction() as session:
        src = session.scalar(select(SourceIdentity))
        assert src is not None and src.authority == f"{region}.2.1000897405"  # finess_oid there
        assert (src.ipp, src.birth_name, src.given_names) == ("000003", "PAT-TROIS", "DOMINIQUE")
        assert (str(src.birth_date), src.sex, src.birth_place) == ("1979-03-28", "F", "63220")
        assert (src.ins, src.ins_system, src.status) == (
            "279035121518989",
            "1.2.250.1.213.1.4.10",
            "VALI",
        )
        assert (src.method_collection, src.city, src.postal_code) == ("INSI", "PARIS", "75007")
        records = list(session.scalars(select(AuditRecord).order_by(AuditRecord.seq)))
        assert [(r.category, r.interaction, r.action, r.outcome) for r in records] == [
            ("hl7", "ADT^A01", "C", "0"),
            ("hl7", "QBP^Q23", "E", "0"),
        ]
        patient = session.get(RegionalPatient, src.patient_id)
        assert patient is not None and records[0].patient_ref == f"Patient/{patient.rri}"
        assert (records[0].agent_name, records[0].agent_kind, records[0].request_id) == (
            "GAM",
            "client",
            "3975",
        )
    assert verify_chain(db).ok
    db.dispose()


# ----------------------------------------------------------------------------- ITI-30 feed


def test_a28_then_a31_updates_with_history(feed: Feed) -> None:
    assert code(feed.send(msh("A28", "1") + pid("100"))) == "AA"
    first = feed.source(CHU, "100")
    assert first is not None and first.given_names == "Marie-Line Rose" and first.used_name is None
    update = msh("A31", "2") + pid("100", used="BELLEMARE", status="VALI")
    assert code(feed.send(update)) == "AA"
    second = feed.source(CHU, "100")
    assert second is not None and second.used_name == "BELLEMARE" and second.status == "VALI"
    assert second.version == 2 and second.patient_id == first.patient_id
    assert feed.count(SourceIdentityVersion) == 1
    assert code(feed.send(msh("A31", "3") + pid("101", name="NEW"))) == "AA"  # unknown: created
    assert feed.source(CHU, "101") is not None


def test_second_facility_is_linked_and_pix_query_lists_both(feed: Feed) -> None:
    assert (
        code(feed.send(msh("A28", "1") + pid("100", ins="261049720912388", status="QUAL"))) == "AA"
    )
    other = msh("A04", "2", facility=f"CLINIC^{CLINIC}^ISO") + pid("A9", authority=CLINIC)
    assert code(feed.send(other)) == "AA"
    a, b = feed.source(CHU, "100"), feed.source(CLINIC, "A9")
    assert a is not None and b is not None and a.patient_id == b.patient_id
    answer = feed.send(qbp("3", "A9", CLINIC))
    assert code(answer) == "AA" and answer["QAK.F2"] == "OK"
    ids = {(str(r[0]), str(r[3][1]), str(r[4])) for r in answer.segment("PID")[3]}
    with feed.db.transaction() as session:
        rri = session.get(RegionalPatient, a.patient_id).rri  # type: ignore[union-attr]
    assert ids == {  # not the queried identifier CLINIC|A9 (ITI-9 3.9.4.2.2.6)
        ("100", CHU, "PI"),
        (rri, RRI_AUTHORITY, "RRI"),
        ("261049720912388", "1.2.250.1.213.1.4.8", "INS"),  # a qualified identity
    }
    only = feed.send(qbp("4", "A9", CLINIC, domains=f"^^^&{CHU}&ISO"))
    assert [str(r[0]) for r in only.segment("PID")[3]] == ["100"]
    unknown = feed.send(qbp("5", "nobody", CLINIC))
    assert code(unknown) == "AE" and unknown["QAK.F2"] == "AE"
    assert err(unknown)[0] == "204" and not has(unknown, "PID")
    domain = feed.send(qbp("6", "A9", CLINIC, domains="^^^&1.2.3.4.5&ISO"))
    assert code(domain) == "AE" and err(domain)[0] == "204"


def test_pix_not_found_in_wanted_domain(feed: Feed) -> None:
    feed.send(msh("A28", "1") + pid("100"))
    answer = feed.send(qbp("2", "100", domains="^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO"))
    assert code(answer) == "AA" and answer["QAK.F2"] == "NF" and not has(answer, "PID")


def test_a40_merge(feed: Feed) -> None:
    feed.send(msh("A28", "1") + pid("1"))
    feed.send(msh("A28", "2") + pid("2", name="DUCLOS", given="Paul", dob="19900130", sex="M"))
    kept, gone = feed.source(CHU, "1"), feed.source(CHU, "2")
    assert kept is not None and gone is not None and kept.patient_id != gone.patient_id
    merge = msh("A40", "3") + "EVN|A40|20240306\r" + pid("1") + mrg("2")
    assert code(feed.send(merge)) == "AA"
    assert code(feed.send(merge.replace("|3|", "|4|"))) == "AA"  # repeated: no-op
    after = feed.source(CHU, "2")
    assert after is not None and not after.active and after.patient_id == kept.patient_id
    with feed.db.transaction() as session:
        old = session.get(RegionalPatient, gone.patient_id)
        assert old is not None and not old.active and old.merged_into_id == kept.patient_id
        links = session.scalars(
            select(IdentityLink).where(IdentityLink.source_id == gone.id).order_by(IdentityLink.id)
        )
        assert [(lk.method, lk.ended_at is None) for lk in links] == [
            ("NEW", False),
            ("MERGE", True),
        ]
        assert "identity.merged" in [n for _, n, _ in read_events(session)]
        old_rri = old.rri
    assert feed.count(SourceIdentityVersion) == 1
    assert err(feed.send(qbp("5", "2")))[0] == "204"  # the merged IPP is gone
    by_rri = feed.send(qbp("6", old_rri, RRI_AUTHORITY))  # the old RRI leads to the survivor
    assert next(str(r[0]) for r in by_rri.segment("PID")[3]) == "1"
    refused = feed.send(msh("A31", "7") + pid("2"))
    assert code(refused) == "AE" and err(refused)[0] == "204"


def test_a47_change_identifier(feed: Feed) -> None:
    feed.send(msh("A28", "1") + pid("1"))
    feed.send(msh("A28", "2") + pid("2", name="DUCLOS", given="Paul", dob="19900130", sex="M"))
    assert code(feed.send(msh("A47", "3") + pid("10") + mrg("1"))) == "AA"
    assert feed.source(CHU, "1") is None
    assert (moved := feed.source(CHU, "10")) is not None and moved.version == 2
    taken = feed.send(msh("A47", "4") + pid("2") + mrg("10"))
    assert code(taken) == "AE" and err(taken)[0] == "205" and "already exists" in err(taken)[1]
    missing = feed.send(msh("A47", "5") + pid("11") + mrg("nobody"))
    assert code(missing) == "AE" and err(missing)[0] == "204"
    other = feed.send(msh("A47", "6") + pid("12") + mrg("10", CLINIC))
    assert code(other) == "AE" and "same assigning authority" in err(other)[1]


def test_invalid_ins_key_is_refused_and_nothing_stored(feed: Feed) -> None:
    answer = feed.send(msh("A28", "1") + pid("1", ins="261049720912389", status="QUAL"))
    assert code(answer) == "AE" and "key does not check" in err(answer)[1]
    assert feed.count(SourceIdentity) == 0 and feed.count(RegionalPatient) == 0
    with feed.db.transaction() as session:
        record = session.scalars(select(AuditRecord)).one()
        assert (record.interaction, record.outcome) == ("ADT^A28", "4")
        assert record.outcome_desc is not None and "key" in record.outcome_desc


def test_an_ins_of_other_traits_is_refused_naming_the_trait(feed: Feed) -> None:
    woman = "261049720912388"  # a woman born in April 1961
    man = feed.send(msh("A28", "1") + pid("1", ins=woman, status="QUAL", sex="M"))
    assert code(man) == "AE" and "sex F" in err(man)[1]
    assert str(man.segment("ERR")[2]) == "PID^1^8"
    later = feed.send(msh("A28", "2") + pid("1", ins=woman, status="QUAL", dob="19610509"))
    assert code(later) == "AE" and "month 04" in err(later)[1]
    assert str(later.segment("ERR")[2]) == "PID^1^7"
    assert feed.count(SourceIdentity) == 0
    assert code(feed.send(msh("A28", "3") + pid("1", ins=woman, status="QUAL"))) == "AA"


def test_refusals(database_url: str) -> None:
    with feed_server(database_url) as feed:
        unsupported = feed.send(msh("A99", "1") + pid("1"))
        assert code(unsupported) == "AR" and err(unsupported)[0] == "201"
        other_type = feed.send(msh("A28", "2").replace("ADT^A28", "ORU^R01") + pid("1"))
        assert code(other_type) == "AR" and err(other_type)[0] == "200"
        stranger = feed.send(msh("A28", "3", facility="EVIL^1.2.3.4^ISO") + pid("1"))
        assert code(stranger) == "AR" and err(stranger)[0] == "103"
        no_control = feed.send(msh("A28", "") + pid("1"))
        assert code(no_control) == "AR" and err(no_control)[0] == "101"
        no_pid = feed.send(msh("A28", "5") + "EVN|A28\r")
        assert code(no_pid) == "AR" and err(no_pid)[0] == "100"
        no_name = feed.send(msh("A28", "6") + pid("1", name=""))
        assert code(no_name) == "AR" and err(no_name)[0] == "101"
        bad_date = feed.send(msh("A28", "7") + pid("1", dob="1961041"))
        assert code(bad_date) == "AR" and err(bad_date)[0] == "102"
        assert feed.count(SourceIdentity) == 0
        assert code(feed.send(msh("A28", "8") + pid("1"))) == "AA"
        assert feed.count(AuditRecord) == 8


def test_identity_and_its_audit_records_commit_together(feed: Feed) -> None:
    refuse_audit_inserts(feed.db, True)
    answer = feed.send(msh("A28", "1") + pid("1"))
    assert code(answer) == "AR" and err(answer)[0] == "207"  # the sender will resend it
    assert feed.count(SourceIdentity) == 0 and feed.count(RegionalPatient) == 0
    refuse_audit_inserts(feed.db, False)
    assert code(feed.send(msh("A28", "1") + pid("1"))) == "AA"
    assert feed.count(SourceIdentity) == 1
    with feed.db.transaction() as session:
        records = list(session.scalars(select(AuditRecord)))
        assert [(r.interaction, r.action, r.outcome, r.request_id) for r in records] == [
            ("ADT^A28", "C", "0", "1")
        ]
    assert verify_chain(feed.db).ok


def test_identity_created_after_the_read_ahead_is_updated_on_the_retry(database_url: str) -> None:
    # SQLite reads ahead of the write turn (on PostgreSQL, nothing is read ahead). The read
    # ahead finds no identity CHU|7; before the turn, another connection creates it.
    db = Database(database_url)
    register_sender(db, CHU, [CHU])
    audit = AuditWriter(db)
    handler = IdentityFeed(db, EmbeddedMatcher(MatchModel.load()), audit, config=CONFIG)
    try:
        message = parse_v2((msh("A28", "late") + pid("7", name="MARTINE")).encode())
        work = pam.feed(CONFIG, handler.matcher, message, pam.sender_of(message, CONFIG))
        assert work.ahead is not None
        with db.transaction() as session:
            work.ahead(session)
        answer = handler((msh("A28", "first") + pid("7")).encode(), "127.0.0.1:1")
        assert b"\rMSA|AA|first\r" in answer
        with pytest.raises(IntegrityError), db.transaction() as session:
            work.apply(session)  # the first attempt inserts: the unique key refuses it
        with db.transaction() as session:
            handled = work.apply(session)  # the next attempt finds the identity and updates it
        assert [t.action for t in handled.touched] == ["U"]
        with db.transaction() as session:
            source = repository.source_by_key(session, CHU, "7")
            assert source is not None and source.version == 2
            assert source.birth_name == "MARTINE"
    finally:
        audit.close()
        db.dispose()


# ----------------------------------------------------------------------------- robustness


def test_server_keeps_serving_after_bad_input(feed: Feed) -> None:
    with socket.create_connection(("127.0.0.1", feed.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"\x16\x03\x01garbage outside frames\r\n")
        sock.sendall(SB + (msh("A28", "cut") + "PID|1||9").encode())  # cut by the next frame
        sock.sendall(frame(b"EVN|A28\rPID|1||1^^^&1.2&ISO^PI"))  # no MSH
        data = b""
        while EB not in data:
            data += sock.recv(4096)
        assert b"MSA|AR|" in data and b"ERR||MSH|100^" in data
        sock.sendall(frame((msh("A28", "ok") + pid("1")).encode()))
        data = b""
        while EB not in data:
            data += sock.recv(4096)
        assert b"MSA|AA|ok" in data
    assert feed.count(SourceIdentity) == 1


def test_latin1_messages(feed: Feed) -> None:
    undeclared = msh("A28", "1") + pid("1", name="HÉBERT", given="Éloïse^Éloïse Anaïs")
    assert code(feed.send(undeclared.encode("latin-1"))) == "AA"
    first = feed.source(CHU, "1")
    assert first is not None and (first.birth_name, first.given_names) == ("HÉBERT", "Éloïse Anaïs")
    declared = msh("A28", "2", charset="8859/1") + pid("2", name="LEFÈVRE", given="Zoé", dob="")
    with MLLPClient("127.0.0.1", feed.port, "latin-1") as client:
        raw = client.send_message(declared)
    answer = parsed(raw, "latin-1")
    assert code(answer) == "AA" and answer["MSH.F18"] == "8859/1"
    second = feed.source(CHU, "2")
    assert second is not None and second.birth_name == "LEFÈVRE"
    refused = msh("A28", "3", charset="8859/1") + pid("3", name="GRÉGOIRE", sex="X", dob="21000101")
    with MLLPClient("127.0.0.1", feed.port, "latin-1") as client:
        answer = parsed(client.send_message(refused), "latin-1")
    assert code(answer) == "AE" and "future" in err(answer)[1]


def test_lf_separators_are_repaired(feed: Feed) -> None:
    message = (msh("A28", "1") + pid("1")).replace("\r", "\n")
    answer = feed.send(message)
    assert code(answer) == "AA"
    (warned,) = [seg for seg in answer if str(seg[0]) == "ERR"]
    assert (str(warned[2]), str(warned[4]), str(warned[3][0][0])) == ("", "W", "0")
    assert "LF" in str(warned[8])
    with feed.db.transaction() as session:
        record = session.scalars(select(AuditRecord)).one()
        assert record.detail is not None and "LF" in record.detail


def test_what_was_repaired_comes_back_as_located_warnings(feed: Feed) -> None:
    untyped = pid("1").replace("Rose^^^^L|", "Rose|")
    assert untyped != pid("1")
    answer = feed.send(msh("A28", "1") + untyped.replace("|F|", "|X|"))
    assert code(answer) == "AA"
    warnings = {str(seg[2]): str(seg[8]) for seg in answer if str(seg[0]) == "ERR"}
    assert all(str(seg[4]) == "W" for seg in answer if str(seg[0]) == "ERR")
    assert "birth name" in warnings["PID^1^5"] and "read as U" in warnings["PID^1^8"]
    # Another person, nothing repaired: no ERR.
    clean = feed.send(msh("A28", "2") + pid("2", name="MARTIN", dob="19850314"))
    assert code(clean) == "AA" and not has(clean, "ERR")


def test_slow_client_byte_by_byte(feed: Feed) -> None:
    with socket.create_connection(("127.0.0.1", feed.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(10)
        for byte in frame((msh("A28", "slow") + pid("1")).encode()):
            sock.sendall(bytes([byte]))
            time.sleep(0.001)
        data = b""
        while EB not in data:
            data += sock.recv(4096)
    assert b"MSA|AA|slow" in data


def test_concurrent_clients(feed: Feed) -> None:
    def one(client_no: int) -> list[str]:
        codes = []
        with MLLPClient("127.0.0.1", feed.port) as client:
            for j in range(4):
                person = pid(
                    f"{client_no}-{j}",
                    name=f"NOM{chr(65 + client_no)}{chr(65 + j)}",
                    given=f"Prenom{chr(65 + j)}",
                    dob=f"19{50 + client_no}0{j + 1}1{j}",
                )
                answer = parsed(client.send_message(msh("A28", f"{client_no}.{j}") + person))
                codes.append(code(answer))
        return codes

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert results == [["AA"] * 4] * 8
    assert feed.count(SourceIdentity) == 32 and feed.count(AuditRecord) == 32
    assert verify_chain(feed.db).ok


def test_registered_domains_in_answers_and_refusals(feed: Feed) -> None:
    """A registered domain's namespace is written in CX-4 (``namespace&OID&ISO``); a registered
    domain without any patient yet answers "not known" at CX-1, not "unknown domain"; an
    identifier of a domain nobody registered is refused at its CX-4."""
    with feed.db.transaction() as session:
        domains.add(session, CONFIG, CHU, namespace="CHU-X", name="CHU de X")
        domains.add(session, CONFIG, GP, namespace="CABINET")
    assert code(feed.send(msh("A28", "1") + pid("100"))) == "AA"
    other = msh("A28", "2", facility=f"CLINIC^{CLINIC}^ISO") + pid("A9", authority=CLINIC)
    assert code(feed.send(other)) == "AA"
    answer = feed.send(qbp("3", "A9", CLINIC))
    assert code(answer) == "AA" and answer["QAK.F2"] == "OK"
    cx4 = {str(r[0]): (str(r[3][0]), str(r[3][1])) for r in answer.segment("PID")[3]}
    assert cx4["100"] == ("CHU-X", CHU)
    empty = feed.send(qbp("4", "1", GP))  # registered, nobody fed yet
    assert code(empty) == "AE" and (err(empty)[0], where(empty)) == ("204", "QPD^1^3^1^1")
    unregistered = "1.2.250.1.71.4.2.2.77"
    unknown = feed.send(qbp("5", "1", unregistered))
    assert code(unknown) == "AE" and (err(unknown)[0], where(unknown)) == ("204", "QPD^1^3^1^4")
    # The CHU's sender writes an identity whose second PID-3 repetition names a mistyped
    # (unregistered) authority: refused, located at that repetition's CX-4.
    typo = pid("101").replace(
        f"101^^^&{CHU}&ISO^PI", f"101^^^&{CHU}&ISO^PI~55^^^&{unregistered}&ISO^PI"
    )
    refused = feed.send(msh("A28", "6") + typo)
    assert code(refused) == "AE" and (err(refused)[0], where(refused)) == ("204", "PID^1^3^2^4")
    assert "not registered" in err(refused)[1]
    assert feed.source(CHU, "101") is None


def q22(control: str, *params: str, domains: str = "", quantity: str = "") -> str:
    """QBP^Q22 (ITI-21) with QPD-3 ``params`` (``@PID.5.1.1^DUPONT``…), QPD-8 ``domains``."""
    msh_q22 = msh("Q23", control).replace("QBP^Q23^QBP_Q21", "QBP^Q22^QBP_Q21")
    fields = ["IHE PDQ Query", f"Q{control}", "~".join(params), "", "", "", "", domains]
    rcp = f"RCP|I|{quantity}^RD" if quantity else "RCP|I"
    return msh_q22 + "QPD|" + "|".join(fields) + "\r" + rcp + "\r"


def test_pdq_query_finds_by_demographics_with_wildcards_and_partial_dates(feed: Feed) -> None:
    with feed.db.transaction() as session:
        domains.add(session, CONFIG, CHU, namespace="CHU-X")
    people = (("JOSEPH", "19610409", "261049720912388"), ("JOSEPHINE", "19610412", ""),
              ("JOSEPH", "19700101", ""))  # fmt: skip
    for n, (name, dob, ins) in enumerate(people, start=1):
        status = "QUAL" if ins else "PROV"
        sent = msh("A28", f"f{n}") + pid(str(n), name=name, dob=dob, ins=ins, status=status)
        assert code(feed.send(sent)) == "AA"

    def found(answer: hl7.Message) -> list[str]:
        return [str(seg[3][0][0]) for seg in answer if str(seg[0]) == "PID"]

    exact = feed.send(q22("1", "@PID.5.1.1^joseph"))
    assert code(exact) == "AA" and str(exact.segment("MSH")[9]) == "RSP^K22^RSP_K21"
    assert str(exact["QAK.F2"]) == "OK" and sorted(found(exact)) == ["1", "3"]
    assert str(exact["QAK.F4"]) == "2"  # hits in total
    prefix = feed.send(q22("2", "@PID.5.1.1^JOS*"))
    assert sorted(found(prefix)) == ["1", "2", "3"]
    month = feed.send(q22("3", "@PID.5.1.1^JOS*", "@PID.7.1^196104"))
    assert sorted(found(month)) == ["1", "2"]
    day = feed.send(q22("4", "@PID.5.1.1^JOS*", "@PID.7.1^19610412", "@PID.8^F"))
    assert found(day) == ["2"]
    pid_seg = day.segment("PID")
    assert str(pid_seg[5][0][0]) == "JOSEPHINE" and str(pid_seg[7]) == "19610412"
    cx = pid_seg[3][0]
    assert (str(cx[3][0]), str(cx[3][1]), str(cx[4])) == ("CHU-X", CHU, "PI")
    by_ins = feed.send(q22("5", "@PID.3.1^261049720912388", "@PID.3.4.1^ASIP-SANTE-INS-NIR"))
    assert found(by_ins) == ["1"]
    only_rri = feed.send(q22("6", "@PID.5.1.1^JOSEPH", domains=f"^^^&{RRI_AUTHORITY}&ISO"))
    assert {str(r[4]) for seg in only_rri if str(seg[0]) == "PID" for r in seg[3]} == {"RRI"}
    capped = feed.send(q22("7", "@PID.5.1.1^JOS*", quantity="1"))
    assert len(found(capped)) == 1
    assert (str(capped["QAK.F4"]), str(capped["QAK.F5"]), str(capped["QAK.F6"])) == ("3", "1", "2")
    nobody = feed.send(q22("8", "@PID.5.1.1^NOBODY"))
    assert code(nobody) == "AA" and str(nobody["QAK.F2"]) == "NF" and not has(nobody, "PID")


def test_pdq_query_errors_locate_their_field(feed: Feed) -> None:
    unknown_domain = feed.send(q22("1", "@PID.5.1.1^X", domains="^^^&1.2.3.4.5&ISO"))
    assert code(unknown_domain) == "AE" and str(unknown_domain["QAK.F2"]) == "AE"
    assert (err(unknown_domain)[0], where(unknown_domain)) == ("204", "QPD^1^8^1^4")
    unknown_id_domain = feed.send(q22("2", "@PID.3.1^1", "@PID.3.4.2^1.2.3.4.5"))
    assert (err(unknown_id_domain)[0], where(unknown_id_domain)) == ("204", "QPD^1^3^1^2")
    bad_date = feed.send(q22("3", "@PID.7.1^12/04/1961"))
    assert (err(bad_date)[0], where(bad_date)) == ("102", "QPD^1^3^1^2")
    unsupported = feed.send(q22("4", "@PID.6.1^X"))
    assert (err(unsupported)[0], where(unsupported)) == ("103", "QPD^1^3^1^1")
    empty = feed.send(q22("5"))
    assert code(empty) == "AE" and err(empty)[0] == "101"
    # The server kept serving and stored nothing.
    assert code(feed.send(msh("A28", "9") + pid("9"))) == "AA"


def test_other_identifiers_kept_or_said_ignored_in_the_ack(feed: Feed) -> None:
    """PID-3 besides the IPP and the INS: another facility's number in a registered domain is
    kept and cross-referenced; a number with no authority, a second number of the facility's
    own domain are ignored, and the ACK says why (ERR severity W at PID-3)."""
    extra = pid("300").replace(
        f"300^^^&{CHU}&ISO^PI",
        f"300^^^&{CHU}&ISO^PI~1850597209123^^^^SS~77^^^&{CHU}&ISO~C555^^^&{CLINIC}&ISO^PI",
    )
    answer = feed.send(msh("A28", "1") + extra)
    assert code(answer) == "AA"
    notes = [(str(seg[4]), str(seg[2]), str(seg[8])) for seg in answer if str(seg[0]) == "ERR"]
    ignored = [n for n in notes if "ignored" in n[2]]
    assert [(sev, where) for sev, where, _ in ignored] == [("W", "PID^1^3"), ("W", "PID^1^3")]
    assert "'1850597209123' (SS, no assigning authority) ignored" in ignored[0][2]
    assert "'77' (untyped" in ignored[1][2] and "facility's own domain" in ignored[1][2]
    assert feed.source(CHU, "300") is not None and feed.source(CHU, "77") is None
    # The clinic's number: a PIX query by it finds the CHU's identity (no clinic identity).
    found = feed.send(qbp("2", "C555", CLINIC))
    assert code(found) == "AA" and str(found["QAK.F2"]) == "OK", found
    assert "300" in str(found.segment("PID")[3])
    by_ipp = feed.send(qbp("3", "300"))
    assert "C555" in str(by_ipp.segment("PID")[3])


def test_the_whole_demographic_record_comes_back_in_pdq(feed: Feed) -> None:
    """PID-5 (every name, prefix), PID-11 (every address), PID-13, PID-15, PID-16, PID-24,
    PID-25 as fed are given back in the PDQ answer."""
    fields = pid("400").rstrip("\r").split("|")
    fields[5] = "JOSEPH^Marie-Line^Marie-Line Rose^^MME^^L~ANDRE^Marie-Line^^^^^D"
    fields[11] = (
        "12 rue Schoelcher^^Fort-de-France^^97200^FRA^H~^^^^^^BDL^^97209"
        "~1 rue du Port^^Le Robert^^97231^FRA^O"
    )
    fields[13] = "^PRN^PH^^^^^^^^^0596123456~^NET^Internet^ml@example.org"
    while len(fields) < 26:
        fields.append("")
    fields[15], fields[16], fields[24], fields[25] = "fr^French^ISO639", "M", "Y", "2"
    message = msh("A28", "1") + "|".join(fields) + "\r" + "NK1|1|JOSEPH^Paul|SPO\r"
    assert code(feed.send(message)) == "AA"
    answer = feed.send(q22("2", "@PID.5.1.1^JOSEPH", "@PID.7.1^19610409"))
    [found] = [seg for seg in answer if str(seg[0]) == "PID"]
    for n in (5, 11, 13, 15, 16, 24, 25):
        assert str(found[n]) == fields[n], n
