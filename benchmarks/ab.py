"""Two versions of the code through HTTP, run in alternating pairs: is a change faster?

    python -m benchmarks.ab BASE [events] [sqlite|postgresql] [pairs]
    python -m benchmarks.ab HEAD~1 1000000 sqlite 3

On this shared 2-core machine the same code runs up to 15 % faster or slower from one run to
the next, and the machine's speed drifts over minutes, so two runs one after the other say
little about a change. This runs `benchmarks.ingest_http` (writer process, 8 connections) on
`BASE` (any commit: checked out in a temporary worktree) and on this checkout, in pairs whose
order alternates (base first, then the change first), and prints each run, the change's gain in
each pair, and the median gain: a drift within a pair then counts against each side in turn.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
_RATE = re.compile(r": ([\d,]+) events/s")
_CPU = re.compile(r"(server|writer|postgresql|client) (\d+) µs")


class Run(NamedTuple):
    events_per_s: float
    cpu: dict[str, int]  # µs an event, by process


def parse(output: str) -> Run:
    """The rate and the CPU per event that `ingest_http` printed for one run."""
    rate = _RATE.search(output)
    if rate is None:
        raise ValueError(f"no rate in the benchmark's output: {output!r}")
    return Run(float(rate.group(1).replace(",", "")), {k: int(v) for k, v in _CPU.findall(output)})


def orders(pairs: int) -> list[tuple[str, str]]:
    """Which side runs first in each pair: base first, then the change, and so on."""
    return [("base", "change") if n % 2 == 0 else ("change", "base") for n in range(pairs)]


def _run(tree: Path, events: int, engine: str) -> Run:
    command = [sys.executable, "-m", "benchmarks.ingest_http", str(events), "8", engine, "process"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tree / "src"), str(tree)))}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return parse(done.stdout)


def compare(base: str, events: int, engine: str, pairs: int) -> float:
    """Run the pairs; return the median gain of the change in events/s (a fraction)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), base], cwd=ROOT, check=True
        )
        try:
            gains = []
            for n, order in enumerate(orders(pairs), 1):
                runs = {
                    side: _run(tree if side == "base" else ROOT, events, engine) for side in order
                }
                gain = runs["change"].events_per_s / runs["base"].events_per_s - 1
                gains.append(gain)
                for side in order:
                    cpu = ", ".join(f"{k} {v} µs" for k, v in runs[side].cpu.items())
                    print(f"pair {n} {side:6}: {runs[side].events_per_s:>9,.0f} events/s ({cpu})")
                print(f"pair {n}: the change {gain:+.1%}")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )
    median = statistics.median(gains)
    print(f"{engine}, {events:,} events, {pairs} pairs against {base}: median {median:+.1%}")
    return median


if __name__ == "__main__":
    args = sys.argv[1:]
    compare(
        args[0],
        int(args[1]) if len(args) > 1 else 500_000,
        args[2] if len(args) > 2 else "sqlite",
        int(args[3]) if len(args) > 3 else 2,
    )
