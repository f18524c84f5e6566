"""Worked dunning cases (tests/data/cases/dunning.json) through ratecard.core.dunning."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ratecard.core.dunning import (
    STRIPE_SMART_RETRIES_RECOMMENDED_TRIES,
    STRIPE_SMART_RETRIES_RECOMMENDED_WINDOW,
    STRIPE_SMART_RETRIES_WINDOWS,
    OverdueState,
    RetryBasis,
    RetrySchedule,
    StopConditions,
    state_entry_dates,
    stop_reason,
)
from tests.cases import params


def _midnight(text: str) -> datetime:
    return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)


def _kill_bill_retries(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    gaps = tuple(timedelta(days=d) for d in inp["retry_gaps_days"])
    times = RetrySchedule(gaps, RetryBasis.FROM_PREVIOUS).retry_times(
        _midnight(inp["failed_payment_date"])
    )
    assert [t.date().isoformat() for t in times] == exp["retry_dates"]


def _overdue(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    states = tuple(OverdueState(s["name"], s["days"]) for s in inp["states"])
    got = state_entry_dates(states, date.fromisoformat(inp["earliest_unpaid_invoice_date"]))
    assert {k: v.isoformat() for k, v in got.items()} == exp["state_entry_dates"]


def _stripe_defaults(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    assert exp["recommended_max_tries"] == STRIPE_SMART_RETRIES_RECOMMENDED_TRIES
    start = datetime(2024, 1, 1, tzinfo=UTC)
    window = STRIPE_SMART_RETRIES_RECOMMENDED_WINDOW.end_at(start) - start
    assert window == timedelta(days=exp["recommended_window_days"])
    assert [w.value for w in STRIPE_SMART_RETRIES_WINDOWS] == exp["allowed_windows"]


def _recurly_stop(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    limits = StopConditions(max_declines=7, max_attempts=20, max_days_since_invoice=60)
    got = [
        stop_reason(
            limits,
            declines=s["declines"],
            attempts=s["attempts"],
            days_since_invoice=s["days_since_invoice"],
        )
        is not None
        for s in inp["scenarios"]
    ]
    assert got == exp["stop"]


def _offsets_from_first(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    offsets = tuple(timedelta(minutes=m) for m in inp["offsets_minutes"])
    first = datetime.fromisoformat(inp["first_try_at"])
    times = RetrySchedule(offsets, RetryBasis.FROM_FIRST).retry_times(first)
    assert list(times) == [datetime.fromisoformat(t) for t in exp["retry_times"]]


ADAPTERS = {
    "DN-KB-RETRY-1-8-4-7": _kill_bill_retries,
    "DN-KB-OVERDUE-STATES": _overdue,
    "DN-STRIPE-SMART-RETRIES-DEFAULT": _stripe_defaults,
    "DN-RECURLY-STATIC-RETRY-LIMITS": _recurly_stop,
    "DN-YUNO-SMART-RETRY-SCHEDULE": _offsets_from_first,
}


@pytest.mark.parametrize("case", params("dunning"))
def test_dunning_case(case: dict[str, Any]) -> None:
    ADAPTERS[case["id"]](case["input"], case["expected"])
