"""Protocol listeners that ``enrs serve`` starts, each in its own process of one process tree.

HTTP is the first; the MLLP, DICOM and SMTP listeners register the same way: a name and a
blocking ``run(settings)`` function. The supervisor stops every listener when one dies.

A listener may serve from several processes (:func:`run_group`): it binds its socket, then
runs one process per slot, every one accepting on that socket (as uvicorn's HTTP workers do).
(On SQLite, the writers of every process take turns: :mod:`enrs.kit.sqlite`.)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from enrs.kit.db import Database
from enrs.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    name: str
    describe: Callable[[Settings], str]
    run: Callable[[Settings], None]


def supervise(listeners: list[Listener], settings: Settings) -> int:
    """Run each listener in a child process; return when all stopped (SIGTERM/SIGINT stop all)."""
    ctx = multiprocessing.get_context("spawn")
    procs: dict[str, BaseProcess] = {}
    for listener in listeners:
        proc: BaseProcess = ctx.Process(
            target=listener.run, args=(settings,), name=f"enrs-{listener.name}"
        )
        proc.start()
        procs[listener.name] = proc
        log.info(
            "started %s listener (pid %s): %s", listener.name, proc.pid, listener.describe(settings)
        )
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    while not stopping:
        dead = [name for name, p in procs.items() if not p.is_alive()]
        if dead:
            log.error("listener(s) %s stopped; stopping the platform", ", ".join(dead))
            exit_code = 1
            break
        time.sleep(0.5)
    for proc in procs.values():
        if proc.is_alive():
            proc.terminate()
    for proc in procs.values():
        proc.join(timeout=15)
        if proc.is_alive():
            proc.kill()
    return exit_code


def run_group(
    target: Callable[[int], None], processes: int, *, name: str, grace: float = 15
) -> int:
    """Run ``target(0)`` in this process and ``target(1)`` … ``target(processes - 1)`` each in a
    child process (spawned: ``target`` and what it holds, e.g. a listening socket, must
    pickle). Returns when ``target(0)`` returns, after stopping the children (SIGTERM, SIGKILL
    after ``grace`` seconds); returns 1 if a child had stopped on its own, else 0.

    A child that stops on its own stops the group: this process gets SIGTERM, so ``target(0)``
    must return on SIGTERM. A child whose parent disappeared stops itself (SIGTERM)."""
    ctx = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = []
    for slot in range(1, processes):
        child: BaseProcess = ctx.Process(
            target=_child, args=(target, slot, os.getpid()), name=f"{name}-{slot}"
        )
        child.start()
        children.append(child)
    stopping = threading.Event()
    died = threading.Event()

    def watch() -> None:
        ended = wait([c.sentinel for c in children])
        if not stopping.is_set():
            for child in children:
                if child.sentinel in ended:  # its pipe closes a moment before it can be reaped
                    child.join(5)
            gone = ", ".join(f"{c.name} ({c.exitcode})" for c in children if not c.is_alive())
            log.error("%s: process(es) %s stopped; stopping the group", name, gone)
            died.set()
            os.kill(os.getpid(), signal.SIGTERM)

    if children:
        threading.Thread(target=watch, name=f"{name}-watch", daemon=True).start()
    try:
        target(0)
    finally:
        stopping.set()
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(timeout=grace)
            if child.is_alive():
                child.kill()
                child.join()
    return 1 if died.is_set() else 0


def _child(target: Callable[[int], None], slot: int, parent: int) -> None:
    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        log.warning("parent process %s is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="orphan-watch", daemon=True).start()
    target(slot)


def run_rounds(
    settings: Settings,
    lock: str,
    every: float,
    prepare: Callable[[Database, ExitStack], Callable[[], object]],
) -> None:
    """A listener that does a round of work every ``every`` seconds until SIGTERM or SIGINT,
    in one process of the installation at a time (the database's ``lock``: another process
    waits for it). ``prepare(db, stack)`` returns the round, having entered in ``stack``
    what the rounds share (closed when the listener stops); a round that fails is logged and
    the next one runs."""
    logging.basicConfig(level=settings.log_level.upper())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    db = Database(settings.database_url)
    try:
        with ExitStack() as stack:
            one_round = prepare(db, stack)
            held = stack.enter_context(db.sole(lock, stop))
            while held and not stop.is_set():
                try:
                    one_round()
                except Exception:
                    log.exception("%s: the round failed", lock)
                stop.wait(every)
    finally:
        db.dispose()
