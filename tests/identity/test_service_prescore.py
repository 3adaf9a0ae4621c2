"""Candidates scored ahead of the transaction (``service.prescore``, what the MLLP listener
does out of the SQLite writers' turn): the decision is the one the transaction alone would
take, whatever changed in between."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from tests.identity.test_service import CHU, CLINIC, MATCHER, feed, person

from enrs.identity import service
from enrs.identity.schemas import FeedResult
from enrs.kit.db import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def prescored_feed(db: Database, prepared: service.Prepared) -> FeedResult:
    with db.transaction() as session:
        return service.feed_prepared(session, MATCHER, prepared, None, actor="test")


def test_prescored_candidates_give_the_same_decision(db: Database) -> None:
    known = feed(db, person(CHU, "1"))
    data = person(CLINIC, "A9", given_names=["MARIE LINE"], birth_date=date(1961, 9, 4))
    prepared = service.prepare(data)
    with db.transaction() as session:
        service.prescore(session, MATCHER, prepared)
        alone = service.prepare(data)  # decided in the transaction alone
        expected = service.decide(
            session, MATCHER, alone.traits, alone.attributes, own_patient=None, own_source=None
        )
    assert len(prepared.scores) == 1
    result = prescored_feed(db, prepared)
    assert (result.link_method, result.score) == (expected.method, expected.score)
    assert result.link_method == "AUTO" and result.rri == known.rri


def test_a_candidate_changed_since_is_scored_again(db: Database) -> None:
    feed(db, person(CHU, "1"))
    prepared = service.prepare(person(CLINIC, "A9"))
    with db.transaction() as session:
        service.prescore(session, MATCHER, prepared)
    (scored,) = prepared.scores.values()
    assert scored.weight >= MATCHER.model.auto_link
    # meanwhile the facility corrects its identity: another person, same birth date
    feed(db, person(CHU, "1", birth_name="DUCLOS", given_names=["Paul"], sex="M"))
    result = prescored_feed(db, prepared)
    assert result.link_method == "NEW" and (result.score or 0) < MATCHER.model.auto_link


def test_a_candidate_appeared_since_is_scored(db: Database) -> None:
    prepared = service.prepare(person(CLINIC, "A9"))
    with db.transaction() as session:
        service.prescore(session, MATCHER, prepared)
    assert prepared.scores == {}
    known = feed(db, person(CHU, "1"))
    result = prescored_feed(db, prepared)
    assert result.link_method == "AUTO" and result.rri == known.rri
