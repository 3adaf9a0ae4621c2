"""Protocol listeners that ``enrs serve`` starts, each in its own process of one process tree.

HTTP is the first; the MLLP, DICOM and SMTP listeners register the same way: a name and a
blocking ``run(settings)`` function. The supervisor stops every listener when one dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

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
