"""How a message reaches its destination.

A transport's :meth:`Transport.send` returns ``None`` when the receiver took the message, a
reason when the receiver answered that it refuses it (an HL7 AE/AR ACK, an HTTP 4xx: sending
the same bytes again would not help), and raises :class:`TransportError` when it could not
tell (connection refused, timeout, no or garbled answer, HTTP 5xx): the queue tries again.
"""

from __future__ import annotations

import socket
from typing import Protocol

import httpx

from enrs.kit.hl7v2 import parse_message
from enrs.kit.mllp import FrameDecoder, FrameTooLarge, frame

ACCEPTED_ACKS = ("AA", "CA")
MAX_ACK = 1 << 20


class TransportError(Exception):
    """The message may not have arrived: try again later."""


class Transport(Protocol):
    def send(self, body: str, control_id: str, content_type: str) -> str | None: ...

    def close(self) -> None: ...


def _endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"an MLLP endpoint is HOST:PORT, not {endpoint!r}")
    return host.strip("[]"), int(port)


class MllpTransport:
    """HL7 v2 over MLLP on one kept-open connection (reopened after an error): the message is
    framed, the ACK read and checked (MSA-2 is the message's control id)."""

    def __init__(self, endpoint: str, *, timeout: float = 30.0) -> None:
        self.address = _endpoint(endpoint)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(MAX_ACK)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection(self.address, timeout=self.timeout)
            except OSError as exc:
                raise TransportError(f"cannot connect to {self._where}: {exc}") from exc
            self._decoder = FrameDecoder(MAX_ACK)
        return self._sock

    @property
    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def send(self, body: str, control_id: str, content_type: str) -> str | None:
        try:
            ack = self._exchange(body.encode("utf-8"))
        except TransportError:
            self.close()
            raise
        return self._judge(ack, control_id)

    def _exchange(self, payload: bytes) -> bytes:
        sock = self._connect()
        try:
            sock.sendall(frame(payload))
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise TransportError(f"{self._where} closed the connection without an ACK")
                frames = self._decoder.feed(chunk)
                if frames:
                    return frames[0]
        except OSError as exc:
            raise TransportError(f"{self._where}: {exc}") from exc
        except FrameTooLarge as exc:
            raise TransportError(f"{self._where}: unreadable answer ({exc})") from exc

    def _judge(self, ack: bytes, control_id: str) -> str | None:
        try:
            msg = parse_message(ack)
        except Exception as exc:
            self.close()
            raise TransportError(f"{self._where}: unreadable ACK ({exc})") from exc
        msa = msg.segment("MSA")
        if msa is None:
            self.close()
            raise TransportError(f"{self._where}: the answer has no MSA segment")
        if msa.get(2) != control_id:
            self.close()
            raise TransportError(
                f"{self._where}: ACK for message {msa.get(2)!r}, not {control_id!r}"
            )
        code = msa.get(1).upper()
        if code in ACCEPTED_ACKS:
            return None
        err = msg.segment("ERR")
        text = (err.get(8) if err is not None else "") or msa.get(3) or "no reason given"
        return f"ACK {code}: {text}"

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


_RETRY_STATUSES = {408, 425, 429}


class HttpTransport:
    """An HTTP POST of the body (a FHIR rest-hook): 2xx taken, 4xx refused (but 408, 425,
    429), anything else tried again."""

    def __init__(
        self, url: str, headers: dict[str, str] | None = None, *, timeout: float = 30.0
    ) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout, headers=headers or {})

    def send(self, body: str, control_id: str, content_type: str) -> str | None:
        try:
            response = self._client.post(
                self.url, content=body.encode("utf-8"), headers={"Content-Type": content_type}
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{self.url}: {exc.__class__.__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return None
        detail = f"HTTP {status}: {response.text[:300]}"
        if 400 <= status < 500 and status not in _RETRY_STATUSES:
            return detail
        raise TransportError(f"{self.url}: {detail}")

    def close(self) -> None:
        self._client.close()


def transport_for(transport: str, endpoint: str, headers: dict[str, str] | None) -> Transport:
    if transport == "mllp":
        return MllpTransport(endpoint)
    if transport == "http":
        return HttpTransport(endpoint, headers)
    raise ValueError(f"unknown transport {transport!r}")
