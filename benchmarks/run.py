"""`make bench`: measure the core, print the figures (the README quotes them).

- graduated 5-tier pricing of one million quantities (target: >= 200,000 evaluations/s);
- a simulation of 10,000 subscriptions over a month with usage;
- event ingestion at the service layer and through HTTP, into SQLite and PostgreSQL;
- what the databases alone cost per stored event (`benchmarks.floors`), and HTTP and JSON alone
  (`benchmarks.ingest_http` with the `floor` app).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from decimal import Decimal

from ratecard.core.catalog import ChargeModel, PriceSpec, Tier
from ratecard.core.pricing import Usage, rate

TIERS = PriceSpec(
    tiers=(
        Tier(Decimal(1000), Decimal("0.010")),
        Tier(Decimal(10_000), Decimal("0.008")),
        Tier(Decimal(100_000), Decimal("0.006")),
        Tier(Decimal(1_000_000), Decimal("0.004")),
        Tier(None, Decimal("0.002"), Decimal("50")),
    )
)


def _timed(label: str, count: int, unit: str, fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    per_second = count / elapsed
    print(f"{label}: {count:,} {unit} in {elapsed:.2f} s = {per_second:,.0f} {unit}/s")
    return per_second


def bench_graduated(n: int = 1_000_000) -> float:
    rng = random.Random(42)
    usages = [Usage(Decimal(rng.randrange(0, 2_000_000))) for _ in range(n)]

    def run() -> None:
        for usage in usages:
            rate(ChargeModel.GRADUATED, TIERS, usage)

    return _timed("graduated 5-tier pricing", n, "evaluations", run)


def bench_simulation(subscriptions: int = 10_000) -> float:
    from benchmarks.simulation import run_simulation

    return _timed(
        "simulation, one month with usage",
        subscriptions,
        "subscriptions",
        lambda: run_simulation(subscriptions),
    )


def main() -> None:
    from benchmarks.floors import bench_floors
    from benchmarks.ingest import bench_ingest
    from benchmarks.ingest_http import bench_ingest_http

    bench_graduated()
    bench_simulation()
    bench_ingest()
    bench_ingest_http()
    bench_floors()
    bench_ingest_http(which="sqlite", writers=("floor",))  # HTTP and JSON alone, no store


if __name__ == "__main__":
    main()
