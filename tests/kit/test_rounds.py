"""``run_rounds``, the loop of the listeners that work in rounds (the DMP feed, the imaging
documents): a round every period, a failed round logged and the next one run, one process of
the installation at a time (the database's lock: a second one takes over when the first
stops), what the rounds share closed on SIGTERM. Real processes, the test's database."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support.waiting import wait_until

from enrs.kit.db import Database
from enrs.kit.listeners import run_rounds
from enrs.settings import Settings


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _rounds(settings: Settings, log: str, name: str) -> None:
    """A listener process: each round appends ``name`` to ``log``; its second round fails."""
    journal = Path(log)

    @contextmanager
    def shared() -> Iterator[None]:
        yield
        with journal.open("a") as out:
            out.write(f"{name} closed\n")

    def prepare(db: Database, stack: ExitStack) -> Callable[[], object]:
        stack.enter_context(shared())
        done = [0]

        def one_round() -> None:
            done[0] += 1
            if done[0] == 2:
                raise RuntimeError("a round that fails")
            with journal.open("a") as out:
                out.write(f"{name} round {done[0]}\n")

        return one_round

    run_rounds(settings, "test-rounds", 0.05, prepare)


def test_rounds_run_in_one_process_at_a_time_and_stop_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "rounds.log"
    ctx = multiprocessing.get_context("spawn")
    first = ctx.Process(target=_rounds, args=(settings, str(log), "first"))
    first.start()
    try:
        assert wait_until(lambda: "first round 3" in _lines(log), timeout=30)
        second = ctx.Process(target=_rounds, args=(settings, str(log), "second"))
        second.start()
        try:
            # The failed second round was logged, not fatal: rounds 1, 3, 4… were done.
            assert "first round 2" not in _lines(log)
            assert not wait_until(
                lambda: any(line.startswith("second round") for line in _lines(log)), timeout=1.5
            )
            assert first.pid is not None
            os.kill(first.pid, signal.SIGTERM)
            first.join(15)
            assert first.exitcode == 0
            assert "first closed" in _lines(log)
            # The second process had waited for the lock: it takes over.
            assert wait_until(lambda: "second round 1" in _lines(log), timeout=15)
            assert second.pid is not None
            os.kill(second.pid, signal.SIGTERM)
            second.join(15)
            assert second.exitcode == 0 and "second closed" in _lines(log)
        finally:
            if second.is_alive():
                second.kill()
    finally:
        if first.is_alive():
            first.kill()
