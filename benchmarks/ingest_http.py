"""Ingestion through HTTP: a uvicorn server and a load client on loopback, both engines.

    python -m benchmarks.ingest_http [events] [concurrency] [sqlite|postgresql|both] [writers]
    python -m benchmarks.ingest_http 5000000 8 sqlite process   # a sustained run

The server is a separate process (one uvicorn worker, the app on the engine's database with a
fixed clock); the client posts pre-encoded 1,000-event batches of `POST /v1/events` from
`concurrency` connections: random event ids, every tenth a repeat of an earlier id, 100
customers, two meters (a count, and a sum grouped by model), timestamps as live traffic has
them. Prints events/s answered (wall clock over the whole run; of them 90 % accepted, 10 %
duplicates), the rate in each fifth of the run (sustained, or fading as the store grows), and
the p50/p99 latency of one batch, and the CPU time each process spent per event (the server,
its writer process with ``process``, PostgreSQL's processes, the load client; from /proc),
which shows where the time goes whatever the machine's speed that day. Each engine runs twice:
with the group commit in the API process (``RATECARD_INGEST_WRITER=thread``) and in a writer
process of its own (``process``). ``floor`` as the writer serves `floor_app` instead, which
stores nothing: what HTTP and JSON alone cost (`make bench` runs it once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from itertools import islice
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from benchmarks.ingest import NOW, _event_stream, _pct, _prepare, postgres_schema
from ratecard.adapters.db.scope import Mode, Role
from ratecard.services.tenancy import TenancyService

BATCH = 1_000


def app() -> Any:
    """The app of one server process, with a fixed clock (the events are stamped around NOW)."""
    from ratecard.adapters.clock import FixedClock
    from ratecard.adapters.db.engine import make_engine
    from ratecard.runtime import tune_gc
    from ratecard.web.app import create_app
    from ratecard.web.deps import RateLimit

    made = create_app(
        make_engine(os.environ["RATECARD_BENCH_URL"]),
        FixedClock(NOW),
        rate_limit=RateLimit(10_000, 10_000),
    )
    tune_gc()
    return made


def floor_app() -> Any:
    """The floor under any server: uvicorn and FastAPI take the batch, its body is read as JSON
    (numbers as Decimal, as the real route reads them), and the answer of the same shape and
    size as the real one (a result per event) is written; no validation, no store."""
    from ratecard.runtime import tune_gc

    made = FastAPI()
    outcome = '{"index":%d,"id":%s,"status":"accepted","code":null,"reason":null,"field":null,'
    outcome += '"problems":null}'
    quote = json.encoder.encode_basestring  # type: ignore[attr-defined]

    @made.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @made.post("/v1/events")
    async def events(request: Request) -> Response:
        items = json.loads(await request.body(), parse_float=Decimal)
        parts = ",".join(outcome % (n, quote(item["id"])) for n, item in enumerate(items))
        body = f'{{"accepted":{len(items)},"duplicates":0,"rejected":0,"results":[{parts}]}}'
        return Response(body.encode(), media_type="application/json")

    tune_gc()
    return made


def serve(url: str, port: int, factory: str = "app") -> None:
    """The server: `app` (or `floor_app`) in as many processes as RATECARD_BENCH_WORKERS says
    (default 1)."""
    import uvicorn

    os.environ["RATECARD_BENCH_URL"] = url
    uvicorn.run(
        f"benchmarks.ingest_http:{factory}",
        factory=True,
        workers=int(os.environ.get("RATECARD_BENCH_WORKERS", "1")),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def _cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) so far of the benchmark's server processes (the server and its
    uvicorn workers) and of PostgreSQL's, read from /proc; empty where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = {"server": 0.0, "writer": 0.0, "postgresql": 0.0}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmd:
                head, tail = stat.read().rsplit(")", 1)
                fields, name = tail.split(), head.partition("(")[2]
                command = cmd.read()
        except OSError:
            continue  # gone meanwhile
        cpu = (int(fields[11]) + int(fields[12])) / tick
        if name == "ratecard-writer":  # RATECARD_INGEST_WRITER=process: the writer's process
            totals["writer"] += cpu
        elif b"ingest_http\x00--serve" in command or b"multiprocessing-fork" in command:
            totals["server"] += cpu
        elif command.startswith(b"postgres"):
            totals["postgresql"] += cpu
    return totals


@contextmanager
def _server(url: str, writer: str) -> Iterator[str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "RATECARD_INGEST_WRITER": writer,
    }
    factory = "floor_app" if writer == "floor" else "app"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ingest_http", "--serve", url, str(port), factory],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(10)


def bench_engine(
    name: str, url: str, total: int, concurrency: int, writer: str = "thread"
) -> dict[str, float]:
    """One run; `writer` is the server's ``RATECARD_INGEST_WRITER`` (thread or process), or
    ``floor``: `floor_app`, which stores nothing (every event answered accepted)."""
    sessions, scope, clock, _ids = _prepare(url)
    key = TenancyService(sessions, clock).create_api_key(
        scope.tenant_id, Mode.LIVE, Role.INGEST, actor="bench"
    )
    stream = _event_stream(total, seed=7)
    bodies = [json.dumps(list(islice(stream, BATCH))).encode() for _ in range(0, total, BATCH)]
    latencies: list[float] = []
    finished: list[float] = []
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
    lock = threading.Lock()
    queue = iter(range(len(bodies)))

    def client(base: str) -> None:
        headers = {"Authorization": f"Bearer {key.secret}", "Content-Type": "application/json"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            while True:
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                t0 = time.perf_counter()
                response = http.post("/v1/events", content=bodies[index])
                elapsed = time.perf_counter() - t0
                assert response.status_code == 200, response.text
                result: dict[str, Any] = response.json()
                with lock:
                    latencies.append(elapsed)
                    finished.append(time.perf_counter())
                    for name_ in counts:
                        counts[name_] += int(result[name_])

    with _server(url, writer) as base:
        cpu_before, client_before = _cpu_seconds(), time.process_time()
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu_after, client_cpu = _cpu_seconds(), time.process_time() - client_before
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    cpu["client"] = client_cpu
    rate = total / elapsed
    finished.sort()
    fifth = len(finished) // 5
    marks = [started] + [finished[(k + 1) * fifth - 1] for k in range(5)]
    fifths = " / ".join(
        f"{fifth * BATCH / (marks[k + 1] - marks[k]) / 1000:.0f}k" for k in range(5)
    )
    print(
        f"{'HTTP floor (nothing stored)' if writer == 'floor' else f'{name} over HTTP'}, "
        f"writer {writer}: {total:,} events in {len(bodies):,} batches of "
        f"{BATCH:,}, {concurrency} connections: {rate:,.0f} events/s "
        f"({counts['accepted']:,} accepted, {counts['duplicates']:,} duplicates, "
        f"{counts['rejected']:,} rejected); batch p50 "
        f"{_pct(latencies, 50) * 1000:.0f} ms, p99 {_pct(latencies, 99) * 1000:.0f} ms; "
        f"events/s by fifth of the run: {fifths}"
    )
    print(
        "  CPU per event (user + system): "
        + ", ".join(
            f"{name} {seconds / total * 1e6:.0f} µs"
            for name, seconds in cpu.items()
            if seconds / total >= 5e-7
        )
        + f"; the machine's {os.cpu_count()} cores were "
        f"{sum(cpu.values()) / elapsed / (os.cpu_count() or 1):.0%} busy with them"
    )
    return {"events_per_s": rate, "p99_ms": _pct(latencies, 99) * 1000}


def bench_ingest_http(
    total: int = 500_000,
    concurrency: int = 8,
    which: str = "both",
    writers: tuple[str, ...] = ("thread", "process"),
) -> None:
    """Each engine with the group commit in the API process and in a writer process."""
    for writer in writers:
        if which in ("sqlite", "both"):
            with tempfile.TemporaryDirectory(dir=os.environ.get("RATECARD_BENCH_DIR")) as tmp:
                bench_engine("SQLite", f"sqlite:///{tmp}/bench.db", total, concurrency, writer)
        if which in ("postgresql", "both"):
            with postgres_schema() as url:
                if url is not None:
                    bench_engine("PostgreSQL", url, total, concurrency, writer)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
    else:
        args = sys.argv[1:]
        bench_ingest_http(
            int(args[0]) if args else 500_000,
            int(args[1]) if len(args) > 1 else 8,
            args[2] if len(args) > 2 else "both",
            tuple(args[3].split(",")) if len(args) > 3 else ("thread", "process"),
        )
