"""The benchmarks still run, small: a benchmark broken by a change is found here, not on the day
its figures are wanted. Each checks its own results (the usage benchmark compares a query with
the raw events' aggregation)."""

from __future__ import annotations

import pytest
from benchmarks.ab import Run, orders, parse
from benchmarks.usage import bench_usage


def test_the_usage_benchmark_seeds_and_queries_exactly(fresh_database, capsys):
    bench_usage("store", fresh_database.url, total=3_000, customers=10, rounds=3)
    printed = capsys.readouterr().out
    assert "store: " in printed and "current-period usage of one customer" in printed


def test_the_ab_benchmark_reads_a_run_and_alternates_the_order():
    """`benchmarks.ab` reads what `ingest_http` prints, and alternates which side goes first."""
    printed = (
        "SQLite over HTTP, writer process: 1,000,000 events in 1,000 batches of 1,000, 8 "
        "connections: 31,352 events/s (900,000 accepted, 100,000 duplicates, 0 rejected); ...\n"
        "  CPU per event (user + system): server 14 µs, writer 29 µs, client 4 µs; the "
        "machine's 2 cores were 74% busy with them\n"
    )
    assert parse(printed) == Run(31_352.0, {"server": 14, "writer": 29, "client": 4})
    assert orders(3) == [("base", "change"), ("change", "base"), ("base", "change")]
    with pytest.raises(ValueError, match="no rate"):
        parse("Traceback ...")
