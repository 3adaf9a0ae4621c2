"""An MLLP handler served on a free port of 127.0.0.1 from a thread of the test process (its
own event loop), for hl7's MLLPClient to talk to."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from enrs.kit.mllp import Limits, MLLPServer


@contextmanager
def serving(handler: Callable[[bytes, str], bytes], idle_timeout: float = 10) -> Iterator[int]:
    """Serve ``handler`` until the block ends; yields the port."""
    server = MLLPServer(handler, host="127.0.0.1", port=0, limits=Limits(idle_timeout=idle_timeout))
    loop, started, stop = asyncio.new_event_loop(), threading.Event(), asyncio.Event()

    async def main() -> None:
        await server.start()
        started.set()
        await stop.wait()
        await server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield server.port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
