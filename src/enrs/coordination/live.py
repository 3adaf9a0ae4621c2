"""The chat's live feed in one HTTP worker: the chat events of the outbox read once for every
open stream of the process, then handed to each stream that may receive them.

Without it each open stream would read the outbox on every wake-up (a thousand streams, a
thousand queries per message). :class:`ChatFeed` reads the new events once (one reader at a
time; a stream that wakes after a read began when it was already woken takes that read's
result) and keeps the last :data:`KEEP` of them, rendered; a stream then walks them from its
cursor. A stream whose cursor is older than what is kept (a client reconnecting after a long
absence) reads the outbox itself (:func:`enrs.coordination.chat.live_page`).

Who may receive is asked of the database, once per stream and circle, and again after each
change of the circle's members (:data:`enrs.coordination.service.MEMBERSHIP` events, in commit
order with the messages): a member removed from the circle receives nothing that was
committed after the removal.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from enrs.coordination import chat, service
from enrs.coordination.models import CareTeam
from enrs.documents.access import Reader
from enrs.kit.db import Database
from enrs.kit.events import read_events
from enrs.kit.live import EventWaker

KEEP = 5000
NAMES = (*chat.EVENTS, service.MEMBERSHIP)


@dataclass(frozen=True)
class Item:
    id: int
    team: str
    kind: str  # message, read, membership
    frame: str  # the Server-Sent Event, made once for every stream ("" for membership)


def frame(event_id: int, kind: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event: ``id`` the cursor, ``event`` the kind, ``data`` JSON."""
    text = json.dumps(data, ensure_ascii=False)
    return f"id: {event_id}\nevent: {kind}\ndata: {text}\n\n"


KEEPALIVE = ": keepalive\n\n"


def _read(db: Database, after: int) -> tuple[list[Item], int]:
    with db.transaction(write=False) as session:
        events = read_events(session, after=after, names=NAMES, limit=1000)
        items = []
        for event in events:
            team = event.payload["team"]
            if event.name == service.MEMBERSHIP:
                items.append(Item(event.id, team, "membership", ""))
                continue
            data = chat.rendered(session, event.payload, event.name)
            if data is not None:
                kind = "message" if event.name == chat.POSTED else "read"
                items.append(Item(event.id, team, kind, frame(event.id, kind, data)))
        return items, events[-1].id if events else after


def _latest(db: Database) -> int:
    with db.transaction(write=False) as session:
        return chat.latest_event(session)


def _is_member(db: Database, team_id: str, reader: Reader) -> bool:
    with db.transaction(write=False) as session:
        team = session.scalar(select(CareTeam).where(CareTeam.resource_id == team_id))
        return team is not None and service.is_member(session, team, reader)


class ChatFeed:
    """The chat events of this process's streams (see the module)."""

    def __init__(self, db: Database, waker: EventWaker) -> None:
        self.db, self.waker = db, waker
        self.items: deque[Item] = deque()
        self.floor: int | None = None  # every event above it is in ``items`` (or was not chat)
        self.cursor = 0  # the last event read
        self._covered: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._covered = asyncio.Lock(), loop, None
        return self._lock

    async def refresh(self, token: asyncio.Event) -> None:
        """Read what was committed before ``token`` was replaced, unless a read that began
        after that already did."""
        async with self._guard():
            if self._covered is token and self.floor is not None:
                return
            self._covered = self.waker.token()
            if self.floor is None:
                self.floor = self.cursor = await run_in_threadpool(_latest, self.db)
                return
            while True:
                items, self.cursor = await run_in_threadpool(_read, self.db, self.cursor)
                self.items.extend(items)
                while len(self.items) > KEEP:
                    self.floor = self.items.popleft().id
                if len(items) < 1000:
                    return

    def since(self, after: int) -> list[Item] | None:
        """The kept items after ``after``; ``None`` when some may be missing (too old)."""
        if self.floor is None or after < self.floor:
            return None
        start = bisect.bisect_right(self.items, after, key=lambda item: item.id)
        return [self.items[i] for i in range(start, len(self.items))]

    async def stream(
        self, reader: Reader, after: int, connected: Callable[[], Any], keepalive: float
    ) -> AsyncIterator[str]:
        """The Server-Sent Events the reader may receive after ``after``, live, a batch at a
        time; a comment every ``keepalive`` seconds without any. Ends when ``connected()``
        says the client left."""
        members: dict[str, bool] = {}
        while await connected():
            token = self.waker.token()
            await self.refresh(token)
            items = self.since(after)
            if items is None:  # too far behind what is kept: read the outbox for this stream
                events, after = await run_in_threadpool(_page, self.db, reader, after)
                if events:
                    yield "".join(frame(e.id, e.kind, e.data) for e in events)
                    continue
                items = []
            batch = []
            for item in items:
                after = item.id
                if item.kind == "membership":
                    members.pop(item.team, None)
                    continue
                if item.team not in members:
                    members[item.team] = await run_in_threadpool(
                        _is_member, self.db, item.team, reader
                    )
                if members[item.team]:
                    batch.append(item.frame)
            if batch:
                yield "".join(batch)
            if items:
                continue
            if not await self.waker.wait(token, keepalive):
                yield KEEPALIVE


def _page(db: Database, reader: Reader, after: int) -> tuple[list[chat.LiveEvent], int]:
    with db.transaction(write=False) as session:
        return chat.live_page(session, reader, after)
