"""Several MLLP listener processes on one port (``run_group`` with a pre-bound socket and a
``Balancer``): long-lived connections spread evenly, the group stops as a whole, and children
whose parent died stop by themselves. Real processes, real sockets, the ``hl7`` client."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterator, MutableSequence
from contextlib import ExitStack, contextmanager
from functools import partial
from multiprocessing.process import BaseProcess
from typing import Any

import hl7
from hl7.client import MLLPClient
from tests.support.waiting import wait_until

from enrs.kit.hl7v2 import build_response, parse_message
from enrs.kit.listeners import run_group
from enrs.kit.mllp import Balancer, Limits, MLLPServer, bind

MSG = "MSH|^~\\&|APP|FAC|ENRS|REGION|20240101120000||ADT^A28^ADT_A05|{ctl}|P|2.5\r"


def pid_handler(payload: bytes, peer: str) -> bytes:
    """AA, with the pid of the process that handled the message in an NTE segment."""
    return build_response(parse_message(payload), "AA", body=[f"NTE|1||{os.getpid()}"])


def _serve(sock: socket.socket, counts: MutableSequence[int], slot: int) -> None:
    async def main() -> None:
        server = MLLPServer(
            pid_handler, sock=sock, balancer=Balancer(counts, slot), limits=Limits(workers=0)
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await server.serve(stop)

    asyncio.run(main())


def _leader(ports: Any, processes: int) -> None:
    sock = bind("127.0.0.1", 0)
    ports.put(sock.getsockname()[1])
    counts = Balancer.shared(processes)
    raise SystemExit(run_group(partial(_serve, sock, counts), processes, name="test-mllp"))


@contextmanager
def group(processes: int = 2) -> Iterator[tuple[BaseProcess, int]]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    leader = ctx.Process(target=_leader, args=(ports, processes))
    leader.start()
    try:
        yield leader, ports.get(timeout=60)
    finally:
        if leader.is_alive():
            leader.terminate()
        leader.join(30)


def handled_by(client: MLLPClient, control: str) -> int:
    answer = hl7.parse(client.send_message(MSG.format(ctl=control)))
    assert str(answer.segment("MSA")[1]) == "AA"
    return int(str(answer.segment("NTE")[3]))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_connections_spread_evenly_and_the_group_stops_together() -> None:
    with group(2) as (leader, port), ExitStack() as stack:
        clients = [stack.enter_context(MLLPClient("127.0.0.1", port)) for _ in range(4)]
        pids = [handled_by(client, f"c{i}") for i, client in enumerate(clients)]
        assert sorted(Counter(pids).values()) == [2, 2]
        assert leader.pid in pids
        # a connection stays with its process
        assert [handled_by(client, f"again{i}") for i, client in enumerate(clients)] == pids
        child = next(p for p in pids if p != leader.pid)
        leader.terminate()
        leader.join(30)
        assert leader.exitcode == 0
        assert wait_until(lambda: not alive(child))


def test_a_child_that_dies_stops_the_group() -> None:
    with group(2) as (leader, port), ExitStack() as stack:
        clients = [stack.enter_context(MLLPClient("127.0.0.1", port)) for _ in range(2)]
        child = next(p for p in (handled_by(c, "x") for c in clients) if p != leader.pid)
        os.kill(child, signal.SIGKILL)
        leader.join(30)
        assert leader.exitcode == 1


def test_children_stop_when_their_parent_is_killed() -> None:
    with group(3) as (leader, port), ExitStack() as stack:
        clients = [stack.enter_context(MLLPClient("127.0.0.1", port)) for _ in range(3)]
        pids = {handled_by(client, f"c{i}") for i, client in enumerate(clients)}
        assert len(pids) == 3
        assert leader.pid is not None
        os.kill(leader.pid, signal.SIGKILL)
        leader.join(30)
        assert wait_until(lambda: not any(alive(p) for p in pids - {leader.pid}))
