"""Admission of an HTTP worker's requests to its database connections.

**The rule.** A worker lets at most :attr:`Admission.capacity` requests hold a unit of work at
once: the connections of the pool its requests draw from, and the threads they run on, each
less :data:`RESERVE` kept for the worker's own threads. The others wait their turn in the
event loop, holding nothing, in order of arrival; one that waited :data:`QUEUE_TIMEOUT_S`
seconds is answered ``503`` with ``Retry-After`` (:class:`Busy`), having done nothing.

**Why.** A request of a :class:`~enrs.kit.http.TransactionalRoute` holds its connection from
its first query until its unit of work is finished, across several hops between the event loop
and AnyIO's 40 worker threads (a sync dependency, the endpoint, the commit), and waits for a
free thread at each hop. Let in more requests than there are connections and a burst locks up:
the requests holding every connection wait for a thread, while every thread runs a newer
request's first query and waits for a connection, until the pool gives up after 30 s
(``QueuePool limit … reached``) and those requests fail with 503, or are still waiting minutes
later. The same goes for the threads: a request may wait in a thread for a lock another
admitted request holds across its hops (SQLite's write turn, a PostgreSQL row), so admitted
requests never fill every thread. Admitted requests, fewer than the connections, always find
one, and every thread step they wait for completes.

**What is counted.** A request is admitted before its dependencies run and leaves once its
unit of work is finished (committed or rolled back, its session closed), before its audit
entries are written after and its response sent. A Server-Sent Events stream (the chat's
``/api/coordination/stream``) thus leaves when its endpoint returns the stream and holds no
slot while it stays open: each of its later reads takes and returns its connection within one
thread hop (out of the cap, in the reserve: they cannot hold a connection while waiting).
A route that never asks for its session (``/healthz``, ``/readyz``) takes no turn at all.

The reserve covers what else of the worker draws from the same pools: the audit writer's
group commit, the SQLite checkpointer and outbox poller, the chat feed's reads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool

from enrs.kit.db import Database
from enrs.kit.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# Connections of a pool left to the worker's threads that work outside any request.
RESERVE = 4
# Seconds a request may wait for its turn (as long as SQLAlchemy's own pool timeout).
QUEUE_TIMEOUT_S = 30.0
RETRY_AFTER_S = 5
# The threads sync endpoints and dependencies run on: AnyIO's default limiter, kept as is.
THREADS = 40


class Busy(ServiceUnavailable):
    """Every database connection of the worker was taken for :data:`QUEUE_TIMEOUT_S`."""


def pool_capacity(engine: Engine) -> int | None:
    """The connections ``engine``'s pool opens at most (``None``: no bound)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return None
    overflow: int = pool._max_overflow  # no public accessor; stable since SQLAlchemy 1.x
    return None if overflow < 0 else pool.size() + overflow


def request_capacity(db: Database) -> int:
    """How many requests of a worker may hold a unit of work at once on ``db``: the smallest
    of the pools its units of work use (read-only ones have their own on SQLite) and of the
    :data:`THREADS`, less the :data:`RESERVE` (SQLite: 36 of 40 threads, 58 connections;
    PostgreSQL: 28 of 32 connections)."""
    bounds = [pool_capacity(engine) for engine in db.engines()]
    return max(1, min([THREADS, *(b for b in bounds if b is not None)]) - RESERVE)


class Admission:
    """The turns of a worker's requests at its database (see the module)."""

    def __init__(self, capacity: int, *, timeout: float = QUEUE_TIMEOUT_S) -> None:
        if capacity < 1:
            raise ValueError("an admission needs a capacity of at least one request")
        self.capacity, self.timeout = capacity, timeout
        self._limiter = anyio.CapacityLimiter(capacity)

    @classmethod
    def for_database(cls, db: Database, *, timeout: float = QUEUE_TIMEOUT_S) -> Admission:
        return cls(request_capacity(db), timeout=timeout)

    @property
    def admitted(self) -> int:
        """The requests holding a turn now."""
        return int(self._limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        """The requests waiting for one."""
        return self._limiter.statistics().tasks_waiting

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a turn for the ``async with`` block; raises :class:`Busy` (503, Retry-After)
        when none is free within :attr:`timeout` seconds."""
        holder = object()  # the turn's own, not the task's: a task may take two
        try:
            # A free turn, with nobody waiting before: taken at once (about a microsecond;
            # the timed wait below costs a hundred times that, on every request).
            self._limiter.acquire_on_behalf_of_nowait(holder)
        except anyio.WouldBlock:
            await self._wait(holder)
        try:
            yield
        finally:
            self._limiter.release_on_behalf_of(holder)

    async def _wait(self, holder: object) -> None:
        try:
            with anyio.fail_after(self.timeout):
                await self._limiter.acquire_on_behalf_of(holder)
        except TimeoutError:
            log.warning(
                "no database turn within %.0f s (%d requests admitted, %d waiting)",
                self.timeout,
                self.admitted,
                self.waiting,
            )
            raise Busy(
                "the server is busy; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
