"""What the databases alone cost per event: the floor under any ingestion design on this machine.

    python -m benchmarks.floors [events] [sqlite|postgresql|both]   # `make bench`: 300,000

Only the store's own work is timed, with no HTTP, no validation and no Python per event beyond
handing over rows built in advance: the benchmark stream's events (random ids, every tenth a
repeat), as `event_store` writes them, into the real schema (migrated, with all its indexes),
20,000 events a transaction, as a busy group commit makes them.

- SQLite: the dedup lookup through the id hash, one ``executemany``, the dedup keys (the
  recent tier and one slice moved to the large one), and the commit (WAL,
  ``synchronous=FULL``), with a ``PASSIVE`` checkpoint every 100,000 events. CPU of this process.
- PostgreSQL: ``COPY`` into the staging table, the ``INSERT ... ON CONFLICT DO NOTHING
  RETURNING`` merge, the commit. CPU of the server process, read from /proc.

No rollups: the figures are the events table's cost alone. A throughput target needs the CPU of
everything else (the load client, HTTP, validation, admission, rollups, answers) to fit in what
the machine's cores have left after these.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice, pairwise
from typing import Any

from benchmarks.ingest import _event_stream, _prepare, postgres_schema
from ratecard.adapters.db import event_ids, event_store
from ratecard.adapters.db.scope import TenantScope
from ratecard.core.events import parse_event

ROUND = 20_000
Row = tuple[Any, ...]


def _rows(
    total: int, scope: TenantScope, customers: dict[str, str], now: Any
) -> list[list[tuple[str, Row]]]:
    """The stream's events as `event_store` stores them, in rounds; repeats within a round
    dropped (ingestion reports them before the store sees them)."""
    rounds = []
    stream = _event_stream(total, seed=7)
    while chunk := list(islice(stream, ROUND)):
        distinct: dict[str, Row] = {}
        for raw in chunk:
            event = parse_event(raw, now)
            stored = event_store.encode(event.occurred_at, event.properties)
            ref = event.customer_ref or ""
            distinct[event.event_id] = (
                event.event_id,
                event.meter_code,
                ref,
                customers[ref],
                stored.occurred_text,
                stored.occurred_hour,
                stored.properties_json,
            )
        rounds.append(sorted(distinct.items()))
    return rounds


def _report(name: str, total: int, seconds: float, cpu: float, parts: dict[str, float]) -> float:
    per = ", ".join(f"{k} {v / total * 1e6:.1f}" for k, v in parts.items())
    print(
        f"{name} floor: {total:,} events in rounds of {ROUND:,}: {total / seconds:,.0f} events/s; "
        f"database CPU {cpu / total * 1e6:.1f} µs an event (wall µs: {per})"
    )
    return cpu / total * 1e6


def bench_sqlite(total: int) -> float:
    import sqlite3

    with tempfile.TemporaryDirectory(dir=os.environ.get("RATECARD_BENCH_DIR")) as tmp:
        path = f"{tmp}/floor.db"
        sessions, scope, clock, _ids = _prepare(f"sqlite:///{path}")
        sessions.kw["bind"].dispose()
        connection = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "cache_size = -65536"):
            connection.execute(f"PRAGMA {pragma}")
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        customers = dict(connection.execute("SELECT external_id, id FROM customers"))
        rounds = _rows(total, scope, customers, clock.now())
        prefix = event_ids.scope_prefix(scope.tenant_id, scope.mode.value)
        insert = event_store.sqlite_insert(scope, event_store.sqlite_instant_text(clock.now()))
        cursor = connection.cursor()
        parts = dict.fromkeys(("lookup", "insert", "commit", "checkpoint"), 0.0)
        seq = 0
        cpu, started = time.process_time(), time.perf_counter()
        for n, rows in enumerate(rounds):
            marks = [time.perf_counter()]
            cursor.execute("BEGIN IMMEDIATE")
            hashes = event_ids.id_hashes(prefix, [event_id for event_id, _ in rows])
            existing = event_ids.existing_sqlite(cursor, scope, hashes)
            marks.append(time.perf_counter())
            fresh = []
            for (event_id, row), hashed in zip(rows, hashes, strict=True):
                if event_id not in existing:
                    seq += 1
                    fresh.append((seq, row[0], hashed, *row[1:]))
            cursor.executemany(insert, fresh)
            event_ids.add_id_keys(cursor, [(row[2], row[0]) for row in fresh])
            marks.append(time.perf_counter())
            cursor.execute("COMMIT")
            marks.append(time.perf_counter())
            if n % 5 == 4:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            marks.append(time.perf_counter())
            for key, (a, b) in zip(parts, pairwise(marks), strict=True):
                parts[key] += b - a
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        connection.close()
    return _report("SQLite", total, seconds, cpu, parts)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_postgres(total: int) -> float | None:
    import psycopg
    from sqlalchemy.engine import make_url

    with postgres_schema() as url:
        if url is None:
            return None
        sessions, scope, clock, _ids = _prepare(url)
        sessions.kw["bind"].dispose()
        parsed = make_url(url)
        connection = psycopg.connect(
            host=parsed.host,
            port=parsed.port,
            dbname=parsed.database,
            user=parsed.username,
            password=parsed.password,
            options=str(parsed.query["options"]),
        )
        with connection.cursor() as cursor:
            customers = dict(cursor.execute("SELECT external_id, id FROM customers").fetchall())
            rounds = _rows(total, scope, customers, clock.now())
            pid = int(cursor.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            connection.commit()
            parts = dict.fromkeys(("copy", "merge", "commit"), 0.0)
            cpu, started = _cpu_of(pid), time.perf_counter()
            received = event_store.sqlite_instant_text(clock.now())
            for rows in rounds:
                marks = [time.perf_counter()]
                cursor.execute(event_store._STAGING)
                with cursor.copy(event_store._COPY) as copy:
                    for _, row in rows:
                        copy.write_row(row)
                marks.append(time.perf_counter())
                cursor.execute(event_store._MERGE, (scope.tenant_id, scope.mode.value, received))
                cursor.fetchall()
                marks.append(time.perf_counter())
                connection.commit()
                marks.append(time.perf_counter())
                for key, (a, b) in zip(parts, pairwise(marks), strict=True):
                    parts[key] += b - a
            seconds, cpu = time.perf_counter() - started, _cpu_of(pid) - cpu
        connection.close()
    return _report("PostgreSQL", total, seconds, cpu, parts)


def bench_floors(total: int = 300_000, which: str = "both") -> None:
    runs: list[Callable[[int], object]] = []
    if which in ("sqlite", "both"):
        runs.append(bench_sqlite)
    if which in ("postgresql", "both"):
        runs.append(bench_postgres)
    for run in runs:
        run(total)


if __name__ == "__main__":
    bench_floors(
        int(sys.argv[1]) if len(sys.argv) > 1 else 300_000,
        sys.argv[2] if len(sys.argv) > 2 else "both",
    )
