"""Billing periods (placeholder: Interval only; the rest is being written)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class IntervalUnit(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


@dataclass(frozen=True, slots=True)
class Interval:
    unit: IntervalUnit
    count: int = 1

    def __post_init__(self) -> None:
        assert self.count >= 1
