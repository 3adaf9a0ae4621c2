"""Shared load-generation helpers for the benches: a closed-loop HTTP/1.1 load generator that runs
in its own process(es), a /proc sampler of a process tree (RSS, CPU) and percentile maths.

Two clients are available. ``raw`` speaks HTTP/1.1 keep-alive over asyncio streams (on uvloop when
installed): a pre-built request, a parsed status line and ``Content-Length`` (or chunked) body; it
costs a few tens of µs of CPU per request. ``httpx`` uses ``httpx.AsyncClient`` with a pool of C
connections; it is several times more expensive per request, so on a small machine it competes
with the server for CPU and measures itself as much as the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from subprocess import PIPE
from types import TracebackType

GRACE_SECONDS = 10.0  # in-flight requests still open this long after the end count as timeouts
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SPEC_ENV = "ENRS_BENCH_LOAD_SPEC"


@dataclass(frozen=True)
class LoadSpec:
    """One closed-loop run: ``concurrency`` connections each sending ``path`` back to back."""

    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    concurrency: int = 32
    duration: float = 10.0
    warmup: float = 2.0
    max_requests: int = 1_000_000
    client: str = "raw"  # "raw" or "httpx"
    start_at: float = 0.0  # time.time() at which every load process starts its warm-up


@dataclass
class LoadResult:
    """What one or several load processes measured (warm-up excluded)."""

    requests: int = 0
    errors: int = 0  # non-2xx responses + transport errors + timeouts
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    timeouts: int = 0
    elapsed: float = 0.0  # seconds from the end of the warm-up to the last recorded response
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    cpu_seconds: float = 0.0  # CPU of the load process(es) during the measured window
    peak_rss_kb: int = 0  # sum over the load processes of their peak RSS


class _State:
    def __init__(self, spec: LoadSpec, now: float) -> None:
        self.measure_from = now + spec.warmup
        self.end = self.measure_from + spec.duration
        self.remaining = spec.max_requests
        self.result = LoadResult()
        self.statuses: Counter[int] = Counter()
        self.last_done = self.measure_from
        self.active = 0

    def running(self) -> bool:
        return time.perf_counter() < self.end and self.remaining > 0

    def record(self, start: float, stop: float, status: int) -> None:
        if start < self.measure_from:
            return
        self.remaining -= 1
        self.result.latencies_ns.append(int((stop - start) * 1e9))
        self.statuses[status] += 1
        self.last_done = max(self.last_done, stop)

    def failed(self, start: float) -> None:
        if start >= self.measure_from:
            self.result.transport_errors += 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    pos = lower.find(b"\r\ncontent-length:")
    if pos >= 0:
        length = int(head[pos + 17 : head.index(b"\r\n", pos + 2)])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, b"\r\nconnection: close" not in lower


async def _raw_worker(state: _State, spec: LoadSpec, request: bytes) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    state.active += 1
    try:
        while state.running():
            start = time.perf_counter()
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(spec.host, spec.port)
                writer.write(request)
                status, keep_alive = await _read_response(reader)
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError):
                state.failed(start)
                if writer is not None:
                    writer.close()
                writer = reader = None
                await asyncio.sleep(0.01)
                continue
            state.record(start, time.perf_counter(), status)
            if not keep_alive:
                writer.close()
                writer = reader = None
    finally:
        state.active -= 1
        if writer is not None:
            writer.close()


async def _httpx_worker(state: _State, client: object, url: str, headers: dict[str, str]) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    state.active += 1
    try:
        while state.running():
            start = time.perf_counter()
            try:
                response = await client.get(url, headers=headers)
            except httpx.HTTPError:
                state.failed(start)
                await asyncio.sleep(0.01)
                continue
            state.record(start, time.perf_counter(), response.status_code)
    finally:
        state.active -= 1


async def _run(spec: LoadSpec) -> tuple[_State, float]:
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    state = _State(spec, time.perf_counter())
    cpu_at_measure = 0.0

    async def cpu_mark() -> None:
        nonlocal cpu_at_measure
        await asyncio.sleep(spec.warmup)
        cpu_at_measure = time.process_time()

    async def drive() -> None:
        marker = asyncio.create_task(cpu_mark())
        if spec.client == "httpx":
            import httpx

            limits = httpx.Limits(
                max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency
            )
            headers = dict(spec.headers)
            url = f"http://{spec.host}:{spec.port}{spec.path}"
            async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
                workers = [
                    _httpx_worker(state, client, url, headers) for _ in range(spec.concurrency)
                ]
                await asyncio.gather(*workers)
        else:
            lines = [f"GET {spec.path} HTTP/1.1", f"Host: {spec.host}:{spec.port}"]
            lines += [f"{name}: {value}" for name, value in spec.headers]
            request = ("\r\n".join(lines) + "\r\n\r\n").encode()
            await asyncio.gather(
                *(_raw_worker(state, spec, request) for _ in range(spec.concurrency))
            )
        await marker

    try:
        async with asyncio.timeout(spec.warmup + spec.duration + GRACE_SECONDS):
            await drive()
    except TimeoutError:
        state.result.timeouts += state.active
    return state, cpu_at_measure


def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` in this process (the load-process entry point) and return its figures."""
    import resource

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    state, cpu_at_measure = asyncio.run(_run(spec))
    result = state.result
    result.cpu_seconds = time.process_time() - cpu_at_measure
    result.statuses = dict(state.statuses)
    result.requests = sum(state.statuses.values()) + result.transport_errors + result.timeouts
    result.errors = result.requests - sum(n for s, n in state.statuses.items() if 200 <= s < 300)
    result.elapsed = state.last_done - state.measure_from
    result.peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def _encode_result(result: LoadResult) -> bytes:
    fields = {**result.__dict__, "latencies_ns": base64.b64encode(result.latencies_ns.tobytes())}
    fields["latencies_ns"] = fields["latencies_ns"].decode()
    return json.dumps(fields).encode()


def _decode_result(data: bytes) -> LoadResult:
    fields = json.loads(data)
    latencies = array("q")
    latencies.frombytes(base64.b64decode(fields.pop("latencies_ns")))
    fields["statuses"] = {int(k): v for k, v in fields["statuses"].items()}
    return LoadResult(**fields, latencies_ns=latencies)


def run_load_processes(spec: LoadSpec, processes: int = 1) -> LoadResult:
    """Split ``spec`` over ``processes`` load subprocesses (all start together); merge."""
    processes = max(1, min(processes, spec.concurrency))
    start_at = time.time() + 1.5  # leaves time to spawn the processes and import
    specs = []
    for i in range(processes):
        share = spec.concurrency // processes + (1 if i < spec.concurrency % processes else 0)
        cap = spec.max_requests // processes + (1 if i < spec.max_requests % processes else 0)
        specs.append(replace(spec, concurrency=share, max_requests=cap, start_at=start_at))
    limit = 1.5 + spec.warmup + spec.duration + GRACE_SECONDS + 30
    command = [sys.executable, "-m", "bench._load"]
    procs = []
    try:
        for sub in specs:  # the spec (with the token) goes through the environment, not argv
            env = {**os.environ, SPEC_ENV: json.dumps(asdict(sub))}
            procs.append(subprocess.Popen(command, env=env, stdout=PIPE))
        outputs = [proc.communicate(timeout=limit)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"load process failed: {[proc.returncode for proc in procs]}")
    parts = [_decode_result(out) for out in outputs]
    merged = LoadResult()
    statuses: Counter[int] = Counter()
    for part in parts:
        for attr in ("requests", "errors", "transport_errors", "timeouts", "peak_rss_kb"):
            setattr(merged, attr, getattr(merged, attr) + getattr(part, attr))
        merged.cpu_seconds += part.cpu_seconds
        merged.elapsed = max(merged.elapsed, part.elapsed)
        merged.latencies_ns.extend(part.latencies_ns)
        statuses.update(part.statuses)
    merged.statuses = dict(statuses)
    return merged


def percentiles(values: Sequence[int] | array[int], points: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles of ``values`` (e.g. ``points=(50, 95, 99)``); NaN when empty."""
    if not values:
        return [float("nan")] * len(points)
    ordered = sorted(values)
    last = len(ordered) - 1
    return [float(ordered[min(last, max(0, round(p / 100 * len(ordered)) - 1))]) for p in points]


class ProcTreeSampler:
    """Samples, every ``interval`` s from a thread, the summed RSS and CPU of a process tree.

    ``reset_peak()`` starts a new peak window; ``snapshot()`` reads the tree right now.
    """

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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def reset_peak(self) -> None:
        self.peak_rss = 0

    def snapshot(self) -> tuple[int, float, int]:
        """(summed RSS in bytes, summed user+system CPU seconds, process count) of the tree now."""
        stats: dict[int, list[bytes]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat", "rb") as fh:
                        stats[int(name)] = fh.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
        children: dict[int, list[int]] = {}
        for pid, fields in stats.items():
            children.setdefault(int(fields[1]), []).append(pid)
        tree, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            if pid in stats:
                tree.append(pid)
                todo.extend(children.get(pid, []))
        rss = sum(int(stats[p][21]) for p in tree) * PAGE_SIZE
        cpu = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree) / CLK_TCK
        return rss, cpu, len(tree)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self.snapshot()[0]
            self.peak_rss = max(self.peak_rss, rss)
            self.overall_peak_rss = max(self.overall_peak_rss, rss)


if __name__ == "__main__":
    # Load-process entry point: a JSON LoadSpec in the environment, a JSON result on stdout.
    spec_fields = json.loads(os.environ[SPEC_ENV])
    spec_fields["headers"] = tuple(tuple(pair) for pair in spec_fields["headers"])
    sys.stdout.buffer.write(_encode_result(run_load(LoadSpec(**spec_fields))))
