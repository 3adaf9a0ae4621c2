"""The identity service's rules on a real database: INS, automatic links, the cell's tasks,
collisions, history, events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import func, select
from tests.support.identities import person

from enrs.identity import service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.identity.models import IdentityTask, RegionalPatient, SourceIdentityVersion
from enrs.identity.schemas import FeedResult, SourceIdentityIn
from enrs.kit.db import Database
from enrs.kit.errors import Unprocessable
from enrs.kit.events import read_events
from enrs.settings import PLACEHOLDER_OID_ROOT

CHU, CLINIC, GP = "1.2.250.1.71.4.2.2.1", "1.2.250.1.71.4.2.2.2", "1.2.250.1.71.4.2.2.3"
MATCHER = EmbeddedMatcher(MatchModel.load())
CONFIG = IdentityConfig(PLACEHOLDER_OID_ROOT)  # as the test settings: not in development


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def feed(db: Database, data: SourceIdentityIn) -> FeedResult:
    with db.transaction() as session:
        return service.feed(session, MATCHER, data, actor="test", config=CONFIG)


def test_same_person_from_two_facilities_is_linked(db: Database) -> None:
    first = feed(db, person(CHU, "1"))
    assert first.created and first.link_method == "NEW"
    second = feed(
        db,
        person(
            CLINIC,
            "A9",
            birth_name="JOSEPH",
            given_names=["MARIE LINE"],
            birth_date=date(1961, 9, 4),
        ),
    )  # day/month swapped, no accents
    assert second.link_method == "AUTO" and second.rri == first.rri


def test_exact_ins_links_and_a_bad_key_is_refused(db: Database) -> None:
    nir = "261049720912345"[:13]
    key = 97 - int(nir) % 97
    ins = f"{nir}{key:02d}"
    a = feed(db, person(CHU, "1", ins=ins, status="QUAL"))
    b = feed(
        db, person(GP, "77", birth_name="JOSEPHE", given_names=["Line"], ins=ins, status="RECUP")
    )
    assert b.link_method == "INS" and b.rri == a.rri
    with pytest.raises(Unprocessable, match="key"):
        feed(db, person(GP, "78", ins=ins[:-2] + f"{(key + 1) % 97:02d}", status="RECUP"))


def test_twins_are_not_linked_automatically(db: Database) -> None:
    a = feed(db, person(CHU, "1"))
    b = feed(db, person(CHU, "2", given_names=["Rose-Aimée"]))
    assert b.rri != a.rri and b.link_method == "NEW"


def test_one_letter_off_in_a_short_birth_name_links_but_not_in_a_twins_first_name(
    db: Database,
) -> None:
    """``PERON`` / ``PEXON`` (Jaro-Winkler 0.88) is a typo of the birth name, which twins
    share; ``LOUIS`` / ``LOUISE`` born the same day in the same family are two persons."""
    a = feed(db, person(CHU, "1", birth_name="PERON", given_names=["Louis"], sex="M"))
    typo = feed(db, person(CLINIC, "1", birth_name="PEXON", given_names=["Louis"], sex="M"))
    assert typo.link_method == "AUTO" and typo.rri == a.rri
    twin = feed(db, person(CLINIC, "2", birth_name="PERON", given_names=["Louise"], sex="M"))
    assert twin.link_method == "NEW" and twin.rri != a.rri and twin.task is not None


def test_a_year_with_two_digits_swapped_links_but_a_parent_of_the_same_name_does_not(
    db: Database,
) -> None:
    """1987 typed 1978 is a typo; a father Louis born 9 April 1958 and his son Louis born on
    9 April 1985 (the year's digits swapped) or 1988 (one digit) are two persons."""

    def louis(authority: str, ipp: str, name: str, born: date) -> SourceIdentityIn:
        return person(
            authority, ipp, birth_name=name, given_names=["Louis"], sex="M", birth_date=born
        )

    a = feed(db, louis(CHU, "1", "MARTIN", date(1987, 4, 9)))
    typo = feed(db, louis(CLINIC, "1", "MARTIN", date(1978, 4, 9)))
    assert typo.link_method == "AUTO" and typo.rri == a.rri
    for name, born in (("PERON", date(1985, 4, 9)), ("DURAND", date(1988, 4, 9))):
        father = feed(db, louis(CHU, name, name, date(1958, 4, 9)))
        son = feed(db, louis(CLINIC, name, name, born))
        assert son.link_method == "NEW" and son.rri != father.rri


def test_different_valid_ins_are_never_linked(db: Database) -> None:
    # two valid INS of women born in April 1961 in Fort-de-France (order numbers 1 and 2)
    a = feed(db, person(CHU, "1", ins="261049720900116", status="QUAL"))
    b = feed(db, person(CLINIC, "2", ins="261049720900215", status="QUAL"))
    assert a.rri != b.rri and b.task is None


def test_two_ipps_of_one_facility_are_never_linked_silently(db: Database) -> None:
    first = feed(db, person(CHU, "1"))
    again = feed(db, person(CHU, "2"))  # the same person, a second IPP at the same hospital
    assert again.link_method == "NEW" and again.rri != first.rri
    assert again.task == "DUPLICATE"
    with db.transaction() as session:
        task = session.get(IdentityTask, again.task_id)
        assert task is not None and task.other_source_id == first.source_id
    elsewhere = feed(db, person(CLINIC, "9"))  # another facility still links
    assert elsewhere.link_method == "AUTO" and elsewhere.rri == first.rri


def test_two_ipps_of_one_facility_with_one_ins_are_not_linked(db: Database) -> None:
    ins = "261049720900116"  # a woman born in April 1961 in Fort-de-France
    first = feed(db, person(CHU, "1", ins=ins, status="QUAL"))
    again = feed(db, person(CHU, "2", ins=ins, status="QUAL"))
    assert (again.link_method, again.task) == ("NEW", "DUPLICATE") and again.rri != first.rri
    assert feed(db, person(CLINIC, "9", ins=ins, status="QUAL")).link_method == "INS"


def test_an_update_does_not_link_two_ipps_of_one_facility(db: Database) -> None:
    first = feed(db, person(CHU, "1"))
    other = feed(db, person(CHU, "2", birth_name="DUCLOS", given_names=["Paul"], sex="M"))
    assert other.rri != first.rri
    corrected = feed(db, person(CHU, "2"))  # corrected into the same person as CHU|1
    assert corrected.rri != first.rri and corrected.task == "DUPLICATE"


def test_doubtful_identity_goes_to_the_cell(db: Database) -> None:
    a = feed(db, person(CHU, "1"))
    b = feed(db, person(CLINIC, "2", attributes=frozenset({"DOUT"})))
    assert b.rri != a.rri and b.task == "DUPLICATE"
    with db.transaction() as session:
        task = session.get(IdentityTask, b.task_id)
        assert task is not None and task.status == "OPEN" and task.score is not None


def test_update_that_no_longer_fits_raises_a_collision(db: Database) -> None:
    feed(db, person(CHU, "1"))
    b = feed(db, person(CLINIC, "2"))
    changed = feed(
        db,
        person(
            CLINIC,
            "2",
            birth_name="DUCLOS",
            given_names=["Paul"],
            sex="M",
            birth_date=date(1990, 1, 30),
            birth_place="75056",
        ),
    )
    assert changed.task == "COLLISION" and changed.rri == b.rri  # stays linked until decided
    with db.transaction() as session:
        versions = session.scalar(select(func.count()).select_from(SourceIdentityVersion))
        assert versions == 1


def test_lone_identity_corrected_then_joins_and_the_old_patient_follows(db: Database) -> None:
    a = feed(db, person(CHU, "1"))
    b = feed(
        db,
        person(
            CLINIC,
            "2",
            birth_name="DUCLOS",
            given_names=["Paul"],
            sex="M",
            birth_date=date(1990, 1, 30),
        ),
    )
    assert b.rri != a.rri
    fixed = feed(db, person(CLINIC, "2"))
    assert fixed.link_method == "AUTO" and fixed.rri == a.rri
    with db.transaction() as session:
        old = session.scalar(select(RegionalPatient).where(RegionalPatient.rri == b.rri))
        assert old is not None and not old.active and old.merged_into_id is not None
        names = [name for _, name, _ in read_events(session)]
    assert names.count("identity.merged") == 1 and "identity.linked" in names
