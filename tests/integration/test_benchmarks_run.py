"""The benchmarks still run, small: a benchmark broken by a change is found here, not on the day
its figures are wanted. Each checks its own results (the usage benchmark compares a query with
the raw events' aggregation)."""

from __future__ import annotations

from benchmarks.usage import bench_usage


def test_the_usage_benchmark_seeds_and_queries_exactly(fresh_database, capsys):
    bench_usage("store", fresh_database.url, total=3_000, customers=10, rounds=3)
    printed = capsys.readouterr().out
    assert "store: " in printed and "current-period usage of one customer" in printed
