"""Candidates scored ahead of the transaction (``service.prescore``, what the MLLP listener
does out of the SQLite writers' turn): the decision is the one the transaction alone would
take, whatever changed in between. On SQLite the transaction reads again only the identities
the change log says changed since (``repository.candidates_since``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import func, select, text
from tests.identity.test_service import CHU, CLINIC, CONFIG, MATCHER, feed, person

from enrs.identity import repository, service
from enrs.identity.models import IdentityChange
from enrs.identity.schemas import FeedResult, SourceIdentityIn
from enrs.kit.db import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def read_ahead(db: Database, data: SourceIdentityIn) -> service.Prepared:
    """``data`` prepared, its candidates read and scored ahead in a transaction of their own."""
    prepared = service.prepare(data, CONFIG)
    with db.transaction() as session:
        service.prescore(session, MATCHER, prepared)
    return prepared


def prescored_feed(db: Database, prepared: service.Prepared) -> FeedResult:
    with db.transaction() as session:
        return service.feed_prepared(session, MATCHER, prepared, None, actor="test")


def test_prescored_candidates_give_the_same_decision(db: Database) -> None:
    known = feed(db, person(CHU, "1"))
    data = person(CLINIC, "A9", given_names=["MARIE LINE"], birth_date=date(1961, 9, 4))
    prepared = service.prepare(data, CONFIG)
    with db.transaction() as session:
        service.prescore(session, MATCHER, prepared)
        alone = service.prepare(data, CONFIG)  # decided in the transaction alone
        expected = service.decide(
            session,
            MATCHER,
            alone.traits,
            alone.attributes,
            own_patient=None,
            own_source=None,
            authority=CLINIC,
        )
    assert len(prepared.ahead.scores) == 1
    result = prescored_feed(db, prepared)
    assert (result.link_method, result.score) == (expected.method, expected.score)
    assert result.link_method == "AUTO" and result.rri == known.rri


def test_a_candidate_changed_since_is_scored_again(db: Database) -> None:
    feed(db, person(CHU, "1"))
    prepared = read_ahead(db, person(CLINIC, "A9"))
    (scored,) = prepared.ahead.scores.values()
    assert scored.weight >= MATCHER.model.auto_link
    # meanwhile the facility corrects its identity: another person, same birth date
    feed(db, person(CHU, "1", birth_name="DUCLOS", given_names=["Paul"], sex="M"))
    result = prescored_feed(db, prepared)
    assert result.link_method == "NEW" and (result.score or 0) < MATCHER.model.auto_link


def test_a_candidate_appeared_since_is_scored(db: Database) -> None:
    prepared = read_ahead(db, person(CLINIC, "A9"))
    assert prepared.ahead.scores == {}
    known = feed(db, person(CHU, "1"))
    result = prescored_feed(db, prepared)
    assert result.link_method == "AUTO" and result.rri == known.rri


def test_a_candidate_changed_out_of_the_blocking_keys_is_dropped(db: Database) -> None:
    feed(db, person(CHU, "1"))
    prepared = read_ahead(db, person(CLINIC, "A9"))
    assert len(prepared.ahead.candidates) == 1
    # corrected into someone who shares no blocking key any more
    feed(
        db,
        person(CHU, "1", birth_name="DUCLOS", given_names=["Paul"], birth_date=date(1990, 5, 17)),
    )
    result = prescored_feed(db, prepared)
    assert (result.link_method, result.score) == ("NEW", None)


def test_a_candidate_deactivated_since_is_dropped(db: Database) -> None:
    feed(db, person(CHU, "1"))
    prepared = read_ahead(db, person(CLINIC, "A9"))
    with db.transaction() as session:  # e.g. merged by the cell (A40): no longer active
        session.execute(text("UPDATE identity_source SET active = false"))
    result = prescored_feed(db, prepared)
    assert (result.link_method, result.score) == ("NEW", None)


def test_the_change_log_follows_every_write_and_keeps_its_last_entries(db: Database) -> None:
    def logged() -> tuple[int, int]:
        with db.transaction() as session:
            row = session.execute(select(func.count(), func.max(IdentityChange.seq))).one()
            return int(row[0]), int(row[1] or 0)

    for i in range(5):
        feed(db, person(CHU, str(i), birth_date=date(1950 + i, 1, 2)))
    with db.transaction() as session:
        session.execute(text("UPDATE identity_source SET city = 'Le Lamentin'"))
        seen = repository.last_change(session)
    if not db.is_sqlite:  # concurrent writers: no ordered log, full reads
        assert seen is None and logged() == (0, 0)
        return
    count, last = logged()
    assert count >= 10 and seen == last  # 5 inserts, 5 updates at least
    with db.transaction() as session:  # as if 10 000 more writes had been logged
        rows = [{"s": 1} for _ in range(10_000)]
        session.execute(text("INSERT INTO identity_change (source_id) VALUES (:s)"), rows)
    feed(db, person(CHU, "9", birth_date=date(1970, 3, 4)))
    count, newest = logged()
    assert (count, newest) == (10_000, last + 10_001)  # the triggers keep the last 10 000
    prepared = service.prepare(person(CLINIC, "A9", birth_date=date(1950, 1, 2)), CONFIG)
    prepared.ahead.seen = last  # read before what the log still holds: everything is read again
    result = prescored_feed(db, prepared)
    assert result.link_method == "AUTO"


def test_candidates_since_reads_what_a_full_read_gives(db: Database) -> None:
    for i in range(4):
        feed(db, person(CHU, str(i), given_names=[f"Marie{'x' * i}"]))
    probe = service.prepare(person(CLINIC, "A9"), CONFIG).traits
    with db.transaction() as session:
        seen, earlier = repository.last_change(session), repository.candidates(session, probe)
    feed(db, person(CHU, "1", birth_date=date(1990, 5, 17), birth_name="DUCLOS"))  # leaves
    feed(db, person(CHU, "9"))  # arrives
    feed(db, person(CHU, "2", given_names=["Marie-Line"]))  # changes
    with db.transaction() as session:
        now = sorted(repository.candidates(session, probe))
        if seen is None:
            return  # PostgreSQL: no change log
        since = repository.candidates_since(session, probe, seen, earlier)
        assert since is not None and sorted(since) == now
        assert len(now) == 4 and sorted(earlier) != now
