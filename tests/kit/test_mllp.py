"""The generic MLLP server (HL7 v2 appendix C framing), with the ``hl7`` package's blocking
MLLP client and raw sockets for what a polite client never sends."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import hl7
import pytest
from hl7.client import MLLPClient

from enrs.kit.hl7v2 import V2Error, build_response, parse_message
from enrs.kit.mllp import EB, SB, FrameDecoder, FrameTooLarge, Limits, MLLPServer, frame

MSG = (
    "MSH|^~\\&|APP|FAC|ENRS|REGION|20240101120000||ADT^A28^ADT_A05|{ctl}|P|2.5\r"
    "PID|1||42^^^&1.2.3&ISO^PI||DOE^JOHN\r"
)


def ack_handler(payload: bytes, peer: str) -> bytes:
    """Acknowledge with AA; a payload containing BOOM raises."""
    if b"BOOM" in payload:
        raise RuntimeError("handler failure")
    try:
        request = parse_message(payload)
    except V2Error as err:
        return build_response(None, "AR", errors=[err])
    return build_response(request, "AA")


@contextmanager
def running(
    handler: Callable[[bytes, str], bytes] = ack_handler, **limits: float
) -> Iterator[MLLPServer]:
    """An MLLPServer on a free port, its event loop in a thread."""
    loop = asyncio.new_event_loop()
    server = MLLPServer(handler, host="127.0.0.1", port=0, limits=Limits(**limits))  # type: ignore[arg-type]
    started, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        await server.start()
        started.set()
        await stop.wait()
        await server.close(grace=5)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def parsed(raw: bytes, encoding: str = "utf-8") -> hl7.Message:
    assert raw.startswith(SB) and raw.endswith(EB + b"\r"), raw
    return hl7.parse(raw[1:-2].decode(encoding))


def send(port: int, message: str | bytes) -> hl7.Message:
    with MLLPClient("127.0.0.1", port) as client:
        return parsed(client.send_message(message))


def recv_frame(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(EB + b"\r"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# ----------------------------------------------------------------------------- deframing


def test_decoder_splits_joins_and_drops() -> None:
    decoder = FrameDecoder(max_frame=100)
    assert decoder.feed(b"junk" + SB + b"AB") == []
    assert decoder.in_frame and decoder.discarded == 4
    assert decoder.feed(b"C" + EB + b"\r" + SB + b"D" + EB + b"\r") == [b"ABC", b"D"]
    assert decoder.feed(SB + b"cut" + SB + b"whole" + EB) == [b"whole"]
    assert decoder.truncated == 1 and not decoder.in_frame
    with pytest.raises(FrameTooLarge):
        decoder.feed(SB + b"x" * 101)


# ----------------------------------------------------------------------------- the server


def test_serves_the_hl7_client_and_survives_garbage() -> None:
    with running() as server:
        assert str(send(server.port, MSG.format(ctl="1")).segment("MSA")[1]) == "AA"
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"\x00\xffGET / HTTP/1.0\r\n\r\n")  # bytes outside any frame
            sock.sendall(SB + b"MSH|^~\\&|A|B|C|D|2024||ADT^A28|cut")  # truncated by the next
            sock.sendall(frame(b"\x01\x02 not hl7"))  # a frame without MSH
            assert b"MSA|AR|" in recv_frame(sock)
            sock.sendall(frame(MSG.format(ctl="2").encode()))
            assert b"MSA|AA|2" in recv_frame(sock)
        assert str(send(server.port, MSG.format(ctl="3")).segment("MSA")[1]) == "AA"


def test_handler_exception_becomes_ar_or_closes() -> None:
    with running() as server:
        answer = send(server.port, MSG.format(ctl="X") + "NTE|1||BOOM\r")
        assert (
            str(answer.segment("MSA")[1]) == "AR" and str(answer.segment("ERR")[3][0][0]) == "207"
        )
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(frame(b"BOOM without header"))
            assert sock.recv(100) == b""  # closed: nothing to acknowledge
        assert str(send(server.port, MSG.format(ctl="Y")).segment("MSA")[1]) == "AA"


def test_oversized_frame_closes_only_that_connection() -> None:
    with running(max_frame=1000) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            try:
                sock.sendall(SB + b"x" * 5000)
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
        assert str(send(server.port, MSG.format(ctl="1")).segment("MSA")[1]) == "AA"


def test_silent_and_slow_peers_are_cut() -> None:
    with running(idle_timeout=0.5, frame_timeout=1.5) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # idle
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(5)
            started = time.monotonic()
            closed = False
            for byte in SB + b"MSH|" * 50:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)  # never idle for 0.5 s, yet the frame takes too long
                if time.monotonic() - started > 4:
                    break
            closed = closed or sock.recv(100) == b""
            assert closed and time.monotonic() - started < 4


def test_byte_by_byte_client_gets_its_ack() -> None:
    with (
        running(idle_timeout=5) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in frame(MSG.format(ctl="slow").encode()):
            sock.sendall(bytes([byte]))
            time.sleep(0.002)
        assert b"MSA|AA|slow" in recv_frame(sock)


def clients(port: int, n: int, each: int) -> list[str]:
    """``n`` concurrent hl7 clients sending ``each`` messages: their MSA-1 codes, in order."""

    def one(i: int) -> str:
        with MLLPClient("127.0.0.1", port) as client:
            acks = [parsed(client.send_message(MSG.format(ctl=f"{i}-{j}"))) for j in range(each)]
        return ",".join(str(a.segment("MSA")[1]) for a in acks)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_pipelined_and_concurrent_clients() -> None:
    with running() as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"".join(frame(MSG.format(ctl=f"p{i}").encode()) for i in range(5)))
            seen = b""
            while seen.count(EB) < 5:
                seen += sock.recv(65536)
            assert [f"MSA|AA|p{i}".encode() in seen for i in range(5)] == [True] * 5

        assert clients(server.port, 50, 10) == [",".join(["AA"] * 10)] * 50


def test_close_with_idle_connections_open() -> None:
    with running() as server:
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        time.sleep(0.1)
    for sock in socks:  # the server closed them on shutdown
        sock.settimeout(5)
        assert sock.recv(10) == b""
        sock.close()


def test_handler_in_the_event_loop_thread_serves_connections_in_turn() -> None:
    threads: set[str] = set()

    def handler(payload: bytes, peer: str) -> bytes:
        threads.add(threading.current_thread().name)
        return ack_handler(payload, peer)

    with running(handler, workers=0) as server:
        assert clients(server.port, 10, 5) == [",".join(["AA"] * 5)] * 10
        answer = send(server.port, MSG.format(ctl="X") + "NTE|1||BOOM\r")
        assert str(answer.segment("MSA")[1]) == "AR"  # a failing handler still answers
    assert len(threads) == 1 and not threads.pop().startswith("mllp")
