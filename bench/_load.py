"""Shared helpers for the benches: a closed-loop HTTP/1.1 load generator run in its own process
(``python -m bench._load``), /proc sampling of a process tree (RSS, CPU, connections) and
percentiles.

The client speaks HTTP/1.1 keep-alive over asyncio streams on uvloop: one pre-built request, the
status line and a ``Content-Length`` (or chunked) body parsed by hand. It costs ~25 µs of CPU per
request (/healthz at 7 300 req/s from 17 % of one core). ``httpx.AsyncClient`` (pool of 32) was
measured first and rejected: on the same 2-core machine it topped out at ~690 req/s on /healthz
with its process at 100 % of a core and the server at 25 %, i.e. it measured itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace

GRACE_SECONDS = 10.0  # in-flight requests still open this long after the end count as timeouts
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ProcStats = dict[int, tuple[bytes, list[bytes]]]  # pid -> (comm, /proc/<pid>/stat fields after it)


@dataclass(frozen=True)
class LoadSpec:
    """A closed loop: ``concurrency`` keep-alive connections each sending ``path`` back to back.

    The connections open one after the other over ``ramp`` seconds of the warm-up: opened in one
    burst they are nearly all accepted by one server worker (measured 28/4, 29/3 and 32/0).
    """

    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    concurrency: int = 32
    duration: float = 10.0
    warmup: float = 2.0
    ramp: float = 1.0
    max_requests: int = 1_000_000
    start_at: float = 0.0  # time.time() at which the load process starts (0: 1.5 s from now)
    # Several requests (method, path, body) sent in turn instead of ``GET path``; "{n}" in a path
    # or body becomes a number unique in the run (a new identifier per request, say).
    requests: tuple[tuple[str, str, str], ...] = ()


@dataclass
class LoadResult:
    """What the load process measured after the warm-up; the latencies of every response."""

    requests: int = 0
    errors: int = 0  # non-2xx responses + transport errors + timeouts
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    timeouts: int = 0
    elapsed: float = 0.0  # seconds from the end of the warm-up to the last recorded response
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    cpu_seconds: float = 0.0  # CPU of the load process while measuring
    peak_rss_kb: int = 0  # peak RSS (VmHWM) of the load process


class _State:
    def __init__(self, spec: LoadSpec, now: float) -> None:
        self.spec = spec
        self.measure_from = now + spec.warmup
        self.end = self.measure_from + spec.duration
        self.remaining = spec.max_requests
        self.result = LoadResult()
        self.statuses: Counter[int] = Counter()
        self.last_done = self.measure_from
        self.active = 0
        self.cpu_start = time.process_time()

    def mark_cpu_start(self) -> None:
        self.cpu_start = time.process_time()

    def running(self) -> bool:
        return time.perf_counter() < self.end and self.remaining > 0

    def record(self, start: float, stop: float, status: int | None) -> None:
        """One response (``status``) or transport error (``None``), if sent after the warm-up."""
        if start < self.measure_from:
            return
        self.remaining -= 1
        self.last_done = max(self.last_done, stop)
        if status is None:
            self.result.transport_errors += 1
        else:
            self.result.latencies_ns.append(int((stop - start) * 1e9))
            self.statuses[status] += 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    pos = lower.find(b"\r\ncontent-length:")
    if pos >= 0:
        await reader.readexactly(int(head[pos + 17 : head.index(b"\r\n", pos + 2)]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        size = -1
        while size:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
    return status, b"\r\nconnection: close" not in lower


class _Requests:
    """The requests of a run, in turn: pre-built bytes, or built per request when they hold
    "{n}" (replaced by a run-wide counter)."""

    def __init__(self, spec: LoadSpec) -> None:
        head = [f"Host: {spec.host}:{spec.port}"] + [f"{k}: {v}" for k, v in spec.headers]
        self.head = "\r\n".join(head)
        self.templates = spec.requests or (("GET", spec.path, ""),)
        self.fixed = [
            None if "{n}" in path + body else self._build(method, path, body)
            for method, path, body in self.templates
        ]
        self.counter = 0

    def _build(self, method: str, path: str, body: str) -> bytes:
        data = body.encode()
        length = f"\r\nContent-Length: {len(data)}" if data or method != "GET" else ""
        return f"{method} {path} HTTP/1.1\r\n{self.head}{length}\r\n\r\n".encode() + data

    def get(self, turn: int) -> bytes:
        i = turn % len(self.templates)
        fixed = self.fixed[i]
        if fixed is not None:
            return fixed
        self.counter += 1
        method, path, body = self.templates[i]
        n = str(self.counter)
        return self._build(method, path.replace("{n}", n), body.replace("{n}", n))


async def _connection(state: _State, index: int, requests: _Requests) -> None:
    """One client connection of the closed loop (reconnects after an error or a close)."""
    spec = state.spec
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    await asyncio.sleep(index * spec.ramp / spec.concurrency)
    state.active += 1
    turn = index
    try:
        while state.running():
            request = requests.get(turn)
            turn += 1
            start = time.perf_counter()
            status: int | None = None
            try:
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection(spec.host, spec.port)
                writer.write(request)
                status, keep_alive = await _read_response(reader)
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError):
                keep_alive = False
            state.record(start, time.perf_counter(), status)
            if not keep_alive and writer is not None:
                writer.close()
                reader = writer = None
            if status is None:
                await asyncio.sleep(0.01)  # no hot loop on a refused connection
    finally:
        state.active -= 1
        if writer is not None:
            writer.close()


async def _run(spec: LoadSpec) -> _State:
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    state = _State(spec, time.perf_counter())
    asyncio.get_running_loop().call_later(spec.warmup, state.mark_cpu_start)
    requests = _Requests(spec)
    try:
        async with asyncio.timeout(spec.warmup + spec.duration + GRACE_SECONDS):
            await asyncio.gather(
                *(_connection(state, i, requests) for i in range(spec.concurrency))
            )
    except TimeoutError:
        state.result.timeouts += state.active
    return state


def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` in this process (the load-process entry point) and return its figures."""
    import uvloop  # a dependency of uvicorn[standard]

    state = uvloop.run(_run(spec))
    result = state.result
    result.cpu_seconds = time.process_time() - state.cpu_start
    result.statuses = dict(state.statuses)
    result.requests = sum(state.statuses.values()) + result.transport_errors + result.timeouts
    result.errors = result.requests - sum(n for s, n in state.statuses.items() if 200 <= s < 300)
    result.elapsed = state.last_done - state.measure_from
    with open("/proc/self/status") as fh:  # not ru_maxrss: it counts the parent's RSS at fork
        result.peak_rss_kb = int(next(ln for ln in fh if ln.startswith("VmHWM:")).split()[1])
    return result


def run_load_subprocess(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` in a fresh ``python -m bench._load`` process; kill it if it overruns."""
    spec = replace(spec, start_at=spec.start_at or time.time() + 1.5)
    limit = max(0.0, spec.start_at - time.time()) + spec.warmup + spec.duration + GRACE_SECONDS
    spec_json = json.dumps(asdict(spec)).encode()  # on stdin: the token stays out of argv
    with subprocess.Popen(
        [sys.executable, "-m", "bench._load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        try:
            out = proc.communicate(spec_json, timeout=limit + 30)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
    if proc.returncode:
        raise RuntimeError(f"load process failed with exit code {proc.returncode}")
    try:
        fields = json.loads(out)
    except json.JSONDecodeError as exc:  # seen 3 times in 16 runs: say what arrived
        said = f"{len(out)} bytes, ending {out[-60:]!r}"
        raise RuntimeError(f"the load result is not JSON ({exc}): {said}") from None
    fields["statuses"] = {int(k): v for k, v in fields["statuses"].items()}
    latencies = array("q", base64.b64decode(fields.pop("latencies_ns")))
    return LoadResult(**fields, latencies_ns=latencies)


def percentiles(values: Sequence[int] | array[int], points: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles of ``values`` (e.g. ``points=(50, 95, 99)``); NaN when empty."""
    ordered, n = sorted(values), len(values)
    if not n:
        return [float("nan")] * len(points)
    return [float(ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]) for p in points]


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (every core; idle, iowait, steal out)."""
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, fh.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


def connections_per_process(pids: Sequence[int], port: int) -> dict[int, int]:
    """Established TCP connections on local ``port`` held by each of ``pids``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for row in fh.read().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    counts = dict.fromkeys(pids, 0)
    for pid in pids:
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    counts[pid] += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
    return counts


def proc_stats() -> ProcStats:
    """Every process: pid -> (command name, the /proc/<pid>/stat fields after it)."""
    stats: ProcStats = {}
    for name in os.listdir("/proc"):
        with suppress(OSError):
            if name.isdigit():
                with open(f"/proc/{name}/stat", "rb") as fh:
                    head, _, tail = fh.read().rpartition(b")")
                stats[int(name)] = (head.partition(b"(")[2], tail.split())
    return stats


def _cpu(fields: list[bytes]) -> float:
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_backends_cpu(stats: ProcStats, match: bytes) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends whose title holds ``match`` (" dbname ")."""
    found: dict[int, float] = {}
    for pid, (comm, fields) in stats.items() if match else ():
        with suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
            if comm == b"postgres" and match in fh.read():
                found[pid] = _cpu(fields)
    return found


@dataclass(frozen=True)
class CpuWindow:
    """CPU seconds during a window: per server-tree process, for the PostgreSQL backends of the
    benched database, for the whole machine; and the connections each tree process held."""

    cpu: dict[int, float]
    db_cpu: float
    machine_cpu: float
    connections: dict[int, int]


class ProcTreeSampler:
    """Samples the summed RSS of a process tree every ``interval`` s from a thread (peaks)."""

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.peak_rss = 0  # bytes, since the last reset_peak()
        self.overall_peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> ProcTreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def reset_peak(self) -> None:
        self.peak_rss = 0

    def snapshot(self, stats: ProcStats | None = None) -> dict[int, tuple[int, float]]:
        """pid -> (RSS bytes, user+system CPU seconds) for the root and all its descendants."""
        stats = stats or proc_stats()
        children: dict[int, list[int]] = {}
        for pid, (_, fields) in stats.items():
            children.setdefault(int(fields[1]), []).append(pid)
        tree: dict[int, tuple[int, float]] = {}
        todo = [self.root_pid]
        while todo:
            pid = todo.pop()
            if pid in stats:
                tree[pid] = (int(stats[pid][1][21]) * PAGE_SIZE, _cpu(stats[pid][1]))
                todo.extend(children.get(pid, []))
        return tree

    def cpu_window(self, start_at: float, duration: float, port: int, db: bytes) -> CpuWindow:
        """Wait until ``start_at`` (``time.time()``), then measure for ``duration`` s."""
        time.sleep(max(0.0, start_at - time.time()))
        machine, stats = machine_cpu_seconds(), proc_stats()
        before, db_before = self.snapshot(stats), postgres_backends_cpu(stats, db)
        conns = connections_per_process(list(before), port)
        time.sleep(duration)
        machine, stats = machine_cpu_seconds() - machine, proc_stats()
        after, db_after = self.snapshot(stats), postgres_backends_cpu(stats, db)
        cpu = {pid: after[pid][1] - before[pid][1] for pid in before if pid in after}
        db_cpu = sum(c - db_before.get(pid, 0.0) for pid, c in db_after.items())
        return CpuWindow(cpu, db_cpu, machine, conns)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            rss = sum(rss for rss, _ in self.snapshot().values())
            self.peak_rss = max(self.peak_rss, rss)
            self.overall_peak_rss = max(self.overall_peak_rss, rss)


if __name__ == "__main__":
    # Load-process entry point: a JSON LoadSpec on stdin, a JSON result on stdout.
    spec_fields = json.loads(sys.stdin.buffer.read())
    spec_fields["headers"] = tuple(tuple(pair) for pair in spec_fields["headers"])
    spec_fields["requests"] = tuple(tuple(item) for item in spec_fields["requests"])
    out = run_load(LoadSpec(**spec_fields))
    latencies = base64.b64encode(out.latencies_ns.tobytes()).decode()
    sys.stdout.write(json.dumps({**out.__dict__, "latencies_ns": latencies}))
