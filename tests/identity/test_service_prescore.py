"""Candidates scored ahead of the transaction (``service.prescore``, what the MLLP listener
does out of the SQLite writers' turn): the decision is the one the transaction alone would
take, whatever changed in between: the transaction reads the candidates again and scores only
those that appeared or changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import text
from tests.identity.test_service import CHU, CLINIC, CONFIG, MATCHER, feed, person

from enrs.identity import service
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
            session, MATCHER, alone.traits, alone.attributes, own_patient=None, own_source=None
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
    assert len(prepared.ahead.scores) == 1
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
