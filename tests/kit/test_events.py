"""The event outbox (``kit/events.py``): a consumer reading page after page from the position it
keeps never skips a committed event, even when transactions commit in another order than the
one they wrote their events in. Real concurrent transactions on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
import time

import pytest
from tests.conftest import BACKEND

from enrs.kit.db import Database
from enrs.kit.events import Event, emit, read_events


@pytest.fixture
def events_db(database_url: str) -> Database:
    return Database(database_url)


def _consume(db: Database, position: int) -> tuple[list[Event], int]:
    with db.transaction(write=False) as session:
        page = read_events(session, after=position, names=("test.event",))
    return page, page[-1].id if page else position


@pytest.mark.skipif(BACKEND != "postgresql", reason="SQLite commits writers in write order")
def test_an_event_announced_first_and_committed_last_is_not_skipped(events_db: Database) -> None:
    first = events_db.session(write=True)
    emit(first, "test.event", {"n": "first"})
    first.flush()  # it announces first, and commits last
    with events_db.transaction() as second:
        emit(second, "test.event", {"n": "second"})
    page, position = _consume(events_db, 0)
    seen = [e.payload["n"] for e in page]
    first.commit()
    first.close()
    page, position = _consume(events_db, position)
    seen += [e.payload["n"] for e in page]
    assert sorted(seen) == ["first", "second"]
    assert _consume(events_db, position)[0] == []


def test_a_consumer_sees_every_event_of_concurrent_writers_once(events_db: Database) -> None:
    writers, per_writer = 4, 25
    done = threading.Event()
    rng = random.Random(7)
    delays = [[rng.random() * 0.004 for _ in range(per_writer)] for _ in range(writers)]

    def write(w: int) -> None:
        for i in range(per_writer):
            with events_db.transaction() as session:
                emit(session, "test.event", {"n": f"{w}.{i}"})
                session.flush()
                time.sleep(delays[w][i])  # commit a little later, in another order than ids
                emit(session, "other.event", {"n": f"{w}.{i}"})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    watcher = threading.Thread(target=lambda: ([t.join() for t in threads], done.set()))
    watcher.start()
    seen: list[str] = []
    position = 0
    while True:
        finished = done.is_set()
        page, position = _consume(events_db, position)
        seen += [e.payload["n"] for e in page]
        if finished and not page:
            break
        time.sleep(0.001)
    watcher.join()
    expected = sorted(f"{w}.{i}" for w in range(writers) for i in range(per_writer))
    assert sorted(seen) == expected  # every one, and each once
