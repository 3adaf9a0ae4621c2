"""Receivers of the platform's notifications, written by others: the ``hl7`` package's asyncio
MLLP server (it parses each message and answers the ACK the package builds) and the standard
library's HTTP server. Each records what it received; either can be stopped and started
again on the same port (a destination that is down, then back)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import hl7
from hl7.mllp import start_hl7_server

from tests.support.live_server import free_port


class MllpReceiver:
    """An HL7 v2 listener on ``port`` (a free one by default). ``answer(message)`` gives the
    ACK code for each message (default AA); ``encoding`` the one its messages are read in
    (ASCII by default, as the ``hl7`` package does)."""

    def __init__(
        self,
        port: int | None = None,
        answer: Callable[[hl7.Message], str] | None = None,
        encoding: str | None = None,
    ):
        self.port = port or free_port()
        self.encoding = encoding
        self.answer = answer or (lambda _msg: "AA")
        self.received: list[hl7.Message] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    async def _session(self, reader: Any, writer: Any) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                with self._lock:
                    self.received.append(message)
                writer.writemessage(message.create_ack(self.answer(message)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def start(self) -> MllpReceiver:
        started = threading.Event()
        self._loop = loop = asyncio.new_event_loop()

        async def main() -> None:
            self._stop = asyncio.Event()
            server = await start_hl7_server(
                self._session, "127.0.0.1", self.port, encoding=self.encoding
            )
            started.set()
            async with server:
                await self._stop.wait()
                server.close()
                await server.wait_closed()

        self._thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
        self._thread.start()
        assert started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        if self._loop is not None:
            self._loop.close()
        self._loop = self._thread = self._stop = None

    def messages(self) -> list[hl7.Message]:
        with self._lock:
            return list(self.received)


class HttpReceiver:
    """An HTTP server on ``port`` recording each POST (path, headers, JSON body, when) and
    answering ``status`` (default 200)."""

    def __init__(self, port: int | None = None, status: int = 200) -> None:
        self.port = port or free_port()
        self.status = status
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers.items()),
                            "body": json.loads(body),
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)
