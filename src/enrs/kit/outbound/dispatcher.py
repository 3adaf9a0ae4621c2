"""The notification loop: fan-out in one thread, delivery in one thread per destination."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from enrs.kit.audit.trail import append_entries
from enrs.kit.db import Database
from enrs.kit.outbound.consumer import Consumer, consume, is_behind
from enrs.kit.outbound.queue import (
    Backoff,
    Destination,
    Recorder,
    Renderer,
    Work,
    deliver,
    destinations,
    fan_out,
    fan_out_position,
    last_event_id,
)
from enrs.kit.outbound.transports import Transport, transport_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pace:
    """``poll``: seconds between looks at the outbox and at an idle queue; ``batch``:
    messages sent per delivery transaction."""

    poll: float = 0.2
    batch: int = 100
    backoff: Backoff = field(default_factory=Backoff)


class _GroupRecorder:
    """Commits the outcomes that every courier hands in meanwhile in one transaction (one
    write, one fsync, one turn of the audit chain, for all destinations): couriers that keep
    up each send a message or two per round, and a transaction each would take the single
    SQLite writer from the identity feed. Each courier waits until its outcomes are
    committed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.queue: queue.SimpleQueue[tuple[Work, Future[None]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="outbound-recorder", daemon=True)
        self.thread.start()

    def __call__(self, work: Work) -> None:
        done: Future[None] = Future()
        self.queue.put((work, done))
        done.result(timeout=120)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            try:
                with self.db.transaction(write=True) as session:
                    entries = [e for work, _ in batch for e in work(session)]
                    append_entries(session.connection(), entries)
            except Exception as exc:
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)


class _Courier:
    """Delivers one destination's queue until stopped or the destination changes."""

    def __init__(
        self,
        db: Database,
        dest: Destination,
        pace: Pace,
        stop: threading.Event,
        record: Recorder,
    ):
        self.dest, self.db, self.pace, self.stop, self.record = dest, db, pace, stop, record
        self.wake = threading.Event()
        self.retired = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"outbound-{dest.name}", daemon=True)

    def _run(self) -> None:
        transport = transport_for(self.dest.transport, self.dest.endpoint, self.dest.headers)
        try:
            while not (self.stop.is_set() or self.retired.is_set()):
                wait = self._once(transport)
                if wait > 0:
                    self.wake.wait(wait)
                    self.wake.clear()
        finally:
            transport.close()

    def _once(self, transport: Transport) -> float:
        try:
            done = deliver(
                self.db,
                self.dest,
                transport,
                batch=self.pace.batch,
                backoff=self.pace.backoff,
                record=self.record,
            )
        except Exception:
            log.exception("notifications to %s: delivery failed", self.dest.name)
            return self.pace.poll * 4
        if done.failed:
            log.warning("notifications to %s: %s", self.dest.name, done.failed)
        if done.more:
            return 0
        if done.retry_in is not None:
            return min(done.retry_in, self.pace.poll * 20)
        return self.pace.poll * 4


class Dispatcher:
    """Runs until :meth:`stop`: renders new events into the queues (:func:`fan_out`) and
    keeps one courier thread per active destination (started, restarted when the destination
    changes, stopped when it is removed); and runs the ``consumers`` of the outbox
    (:mod:`.consumer`) after each fan-out, then the ``jobs`` (each called with the database
    after every round, keeping its own pace: the care circles' notifications by mail)."""

    def __init__(
        self,
        db: Database,
        renderer: Renderer,
        pace: Pace = Pace(),
        consumers: Sequence[Consumer] = (),
        jobs: Sequence[Callable[[Database], None]] = (),
    ) -> None:
        self.db, self.renderer, self.pace = db, renderer, pace
        self.consumers = tuple(consumers)
        self.jobs = tuple(jobs)
        self._stop = threading.Event()
        self._couriers: dict[int, _Courier] = {}
        self._recorder: _GroupRecorder | None = None

    def _record(self, work: Work) -> None:
        assert self._recorder is not None
        self._recorder(work)

    def stop(self) -> None:
        self._stop.set()
        for courier in self._couriers.values():
            courier.wake.set()

    def run(self) -> None:
        """Send until :meth:`stop`; while another process sends for this database, wait as
        its stand-in (one sender per database: two would each send every queue)."""
        with self.db.sole("outbound-dispatcher", self._stop) as mine:
            if not mine:
                return
            self._recorder = _GroupRecorder(self.db)
            try:
                while not self._stop.is_set():
                    try:
                        self.step()
                    except Exception:
                        log.exception("notifications: fan-out failed")
                    self._stop.wait(self.pace.poll)
                for courier in self._couriers.values():
                    courier.thread.join(timeout=30)
            finally:
                self._recorder.close()

    def step(self) -> None:
        """One round: sync the couriers with the destinations, fan out what is new, wake the
        couriers that got messages; then let each consumer catch up; then the jobs."""
        with self.db.transaction(write=False) as session:
            current = {d.id: d for d in destinations(session)}
            behind = last_event_id(session) > fan_out_position(session)
        self._sync(current)
        while behind and not self._stop.is_set():
            queued = fan_out(self.db, self.renderer)
            with self.db.transaction(write=False) as session:
                behind = last_event_id(session) > fan_out_position(session)
            for dest_id in queued:
                courier = self._couriers.get(dest_id)
                if courier is not None:
                    courier.wake.set()
        for consumer in self.consumers:
            with self.db.transaction(write=False) as session:
                late = is_behind(session, consumer)
            while late and not self._stop.is_set():
                late = consume(self.db, consumer)
        for job in self.jobs:
            if not self._stop.is_set():
                job(self.db)

    def _sync(self, current: dict[int, Destination]) -> None:
        for dest_id, courier in list(self._couriers.items()):
            if current.get(dest_id) != courier.dest:
                courier.retired.set()
                courier.wake.set()
                courier.thread.join(timeout=60)  # one sender per destination at a time
                del self._couriers[dest_id]
        for dest_id, dest in current.items():
            if dest_id not in self._couriers:
                courier = _Courier(self.db, dest, self.pace, self._stop, self._record)
                self._couriers[dest_id] = courier
                courier.thread.start()
