"""MLLP server (HL7 v2 Minimal Lower Layer Protocol, HL7 v2.5 appendix C; IHE ITI TF-2 C.2).

A frame is ``0x0B`` payload ``0x1C 0x0D``. The server is lenient with what arrives and strict
with what it sends (house habit 11):

- bytes outside a frame are discarded (and logged); a frame cut by the start of another one, or
  by the end of the connection, is dropped (and logged);
- a frame over ``max_frame`` bytes, a peer silent for ``idle_timeout`` seconds, a frame not
  finished within ``frame_timeout`` seconds: the connection is closed cleanly, after logging;
- each frame goes to the handler ``(payload, peer) -> reply`` in a worker thread (database
  work is synchronous SQLAlchemy), or in the event loop's thread (``Limits.workers`` 0); the
  reply is framed and written back on the same connection;
- an exception in the handler never reaches the listener: the ``fallback`` turns it into an
  ``AR`` acknowledgement when the message header can be read (:func:`enrs.kit.hl7v2.error_ack`),
  else the connection is closed.

Accepted sockets get ``TCP_NODELAY``: a small ACK otherwise waits for Nagle and the peer's
delayed ACK, capping one connection near a few dozen messages per second.

The HL7 v2 message model the handlers use is :mod:`enrs.kit.hl7v2`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable, MutableSequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from enrs.kit.hl7v2 import error_ack

log = logging.getLogger(__name__)

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
Handler = Callable[[bytes, str], bytes]
Fallback = Callable[[bytes, BaseException], bytes | None]


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP block."""
    return SB + payload + EB + CR


# --------------------------------------------------------------------------- framing server


class FrameTooLarge(Exception):
    pass


class FrameDecoder:
    """Sans-IO MLLP deframer: ``feed(bytes)`` returns the complete payloads; counts what it
    throws away (bytes outside a frame, frames cut by a new start block)."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.in_frame = False
        self.discarded = 0
        self.truncated = 0
        self._buf = bytearray()

    def _append(self, chunk: bytes) -> None:
        self._buf += chunk
        if len(self._buf) > self.max_frame:
            raise FrameTooLarge(f"frame over {self.max_frame} bytes")

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        pos = 0
        while pos < len(data):
            if not self.in_frame:
                start = data.find(SB, pos)
                outside = data[pos:] if start < 0 else data[pos:start]
                self.discarded += len(outside.strip(b"\r\n\t "))
                if start < 0:
                    break
                self.in_frame, pos = True, start + 1
                self._buf.clear()
                continue
            end, restart = data.find(EB, pos), data.find(SB, pos)
            if restart >= 0 and (end < 0 or restart < end):
                self.truncated += 1
                self._buf.clear()
                pos = restart + 1
                continue
            if end < 0:
                self._append(data[pos:])
                break
            self._append(data[pos:end])
            frames.append(bytes(self._buf))
            self._buf.clear()
            self.in_frame, pos = False, end + 1
        return frames


@dataclass(frozen=True)
class Limits:
    """``workers``: threads calling the handler; 0 calls it in the event loop's thread, one
    message at a time (for a handler whose work is serialised anyway: no thread handoffs)."""

    max_frame: int = 10 * 1024 * 1024
    idle_timeout: float = 60.0
    frame_timeout: float = 300.0
    write_timeout: float = 60.0
    max_connections: int = 256
    workers: int = 8


def bind(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``SO_REUSEADDR``), non-blocking: what
    :class:`MLLPServer` accepts on, and what listener processes share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return sock


class Balancer:
    """The connection counts of the processes sharing one listening socket (shared memory, one
    slot per process). The kernel would hand a new connection to whichever process wakes up
    first; HL7 connections are few and last hours, so a process accepts only while it has no
    more connections than the least busy one."""

    def __init__(self, counts: MutableSequence[int], slot: int) -> None:
        self.counts, self.slot = counts, slot

    @staticmethod
    def shared(processes: int) -> Any:
        """Zeroed counts for ``processes`` processes, to pass to them at their start."""
        return multiprocessing.get_context("spawn").RawArray("i", processes)

    def may_accept(self) -> bool:
        return bool(self.counts[self.slot] <= min(self.counts))

    def opened(self) -> None:
        self.counts[self.slot] += 1

    def closed(self) -> None:
        self.counts[self.slot] -= 1


class MLLPServer:
    """An asyncio MLLP listener calling ``handler(payload, peer)`` in a thread pool (or in its
    event loop's thread, ``Limits.workers`` 0).

    It listens on ``host:port``, or accepts on ``sock`` (see :func:`bind`) shared with other
    processes, with a ``balancer`` spreading the connections among them."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        fallback: Fallback = error_ack,
        sock: socket.socket | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self.handler, self.fallback = handler, fallback
        self.host, self._port = host, port
        self.limits = limits or Limits()
        self.balancer = balancer
        workers = self.limits.workers
        self._executor = ThreadPoolExecutor(workers, "mllp") if workers > 0 else None
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = self._closing = False
        self._tick: asyncio.TimerHandle | None = None
        self._busy: dict[asyncio.Task[None], bool] = {}

    @property
    def port(self) -> int:
        """The bound port (useful when constructed with port 0)."""
        return self._port

    async def start(self) -> None:
        if self._sock is None:
            self._sock = bind(self.host, self._port)
        self._sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._port = self._sock.getsockname()[1]
        self._closing = False
        self._rearm()
        log.info("MLLP listening on %s:%s", self.host, self._port)

    # Accepting: the listening socket is watched only while this process may take a new
    # connection; with a balancer, that is re-checked every 50 ms (other processes' counts).

    def _rearm(self) -> None:
        assert self._loop is not None and self._sock is not None
        want = not self._closing and (self.balancer is None or self.balancer.may_accept())
        if want and not self._accepting:
            self._loop.add_reader(self._sock.fileno(), self._accept)
        elif self._accepting and not want:
            self._loop.remove_reader(self._sock.fileno())
        self._accepting = want
        if self.balancer is not None and not self._closing and self._tick is None:
            self._tick = self._loop.call_later(0.05, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self._rearm()

    def _accept(self) -> None:
        assert self._loop is not None and self._sock is not None
        try:
            conn, _addr = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another process took it
        except OSError as exc:  # out of descriptors, or the peer gave up: try again soon
            log.warning("MLLP accept failed: %s", exc)
            self._loop.remove_reader(self._sock.fileno())
            self._accepting = False
            self._loop.call_later(0.5, self._rearm)
            return
        conn.setblocking(False)
        if self.balancer is not None:
            self.balancer.opened()
        self._loop.create_task(self._accepted(conn))
        self._rearm()

    async def _accepted(self, conn: socket.socket) -> None:
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=conn)
            except OSError:
                conn.close()
                return
            await self._connection(reader, writer)
        finally:
            if self.balancer is not None:
                self.balancer.closed()
                if not self._closing:
                    self._rearm()

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then close gracefully."""
        await self.start()
        await stop.wait()
        await self.close()

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting; close idle connections; let messages in progress finish."""
        self._closing = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._loop is not None and self._sock is not None:
            if self._accepting:
                self._loop.remove_reader(self._sock.fileno())
                self._accepting = False
            self._sock.close()
        for task, busy in list(self._busy.items()):
            if not busy:
                task.cancel()
        pending = list(self._busy)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else "?"
        task = asyncio.current_task()
        if task is None or self._closing or len(self._busy) >= self.limits.max_connections:
            log.warning("%s: refused, %d connections open", peer, len(self._busy))
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._busy[task] = False
        try:
            await self._session(reader, writer, peer, task)
        except (ConnectionError, TimeoutError) as exc:
            log.info("%s: connection ended (%s)", peer, type(exc).__name__)
        except asyncio.CancelledError:
            log.info("%s: connection closed at shutdown", peer)
        except Exception:
            log.exception("%s: connection failed", peer)
        finally:
            self._busy.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        task: asyncio.Task[None],
    ) -> None:
        limits = self.limits
        decoder = FrameDecoder(limits.max_frame)
        frame_started: float | None = None
        while True:
            timeout = limits.idle_timeout
            if frame_started is not None:
                timeout = min(timeout, frame_started + limits.frame_timeout - time.monotonic())
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    data = await reader.read(65536)
            except TimeoutError:
                state = "in the middle of a frame" if decoder.in_frame else "idle"
                log.warning("%s: closed, %s for too long", peer, state)
                return
            if not data:
                if decoder.in_frame:
                    log.warning("%s: connection ended inside a frame (dropped)", peer)
                return
            seen = (decoder.discarded, decoder.truncated)
            try:
                frames = decoder.feed(data)
            except FrameTooLarge as exc:
                log.warning("%s: closed, %s", peer, exc)
                return
            if decoder.discarded > seen[0]:
                log.warning("%s: %d byte(s) outside any frame discarded", peer, decoder.discarded)
            if decoder.truncated > seen[1]:
                log.warning("%s: a frame cut by a new start block was dropped", peer)
            if decoder.in_frame and (frames or frame_started is None):
                frame_started = time.monotonic()
            elif not decoder.in_frame:
                frame_started = None
            for payload in frames:
                self._busy[task] = True
                reply = await self._dispatch(payload, peer)
                if reply is None:
                    log.warning("%s: unanswerable frame; closing the connection", peer)
                    return
                writer.write(frame(reply))
                async with asyncio.timeout(limits.write_timeout):
                    await writer.drain()
                self._busy[task] = False

    async def _dispatch(self, payload: bytes, peer: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            if self._executor is None:
                return self.handler(payload, peer)
            return await loop.run_in_executor(self._executor, self.handler, payload, peer)
        except Exception as exc:
            log.exception("%s: handler failed", peer)
            try:
                return self.fallback(payload, exc)
            except Exception:
                log.exception("%s: fallback failed", peer)
                return None
