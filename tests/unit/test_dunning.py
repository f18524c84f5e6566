"""Dunning policy: next_action examples and schedule properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratecard.core.dunning import (
    ActionKind,
    Attempt,
    DunningHistory,
    DunningPolicy,
    OverdueState,
    RetryBasis,
    RetrySchedule,
    SmartRetryWindow,
    StopConditions,
    next_action,
    overdue_state,
)
from ratecard.core.errors import ValidationFailed

T0 = datetime(2021, 8, 6, tzinfo=UTC)
STATES = (OverdueState("WARNING", 10), OverdueState("BLOCKED", 14))
POLICY = DunningPolicy(
    RetrySchedule(tuple(timedelta(days=d) for d in (1, 8, 4, 7)), RetryBasis.FROM_PREVIOUS),
    StopConditions(max_declines=7, max_attempts=20, max_days_since_invoice=60),
    STATES,
)


def _history(*attempt_days: int, succeeded: bool = False, hard: bool = False) -> DunningHistory:
    attempts = [Attempt(T0 + timedelta(days=d), False) for d in attempt_days]
    if attempts and (succeeded or hard):
        last = attempts[-1]
        attempts[-1] = Attempt(last.at, succeeded, hard_decline=hard)
    return DunningHistory(T0, T0.date(), tuple(attempts))


def test_waits_for_the_next_gap_from_the_previous_attempt() -> None:
    action = next_action(POLICY, _history(0, 1), T0 + timedelta(days=3))
    assert action.kind is ActionKind.WAIT and action.at == T0 + timedelta(days=9)


def test_retries_when_due_and_reports_the_overdue_state() -> None:
    action = next_action(POLICY, _history(0, 1, 9), T0 + timedelta(days=13))
    assert action.kind is ActionKind.RETRY_NOW
    assert action.overdue_state == OverdueState("WARNING", 10)


def test_stops_when_the_schedule_runs_out() -> None:
    action = next_action(POLICY, _history(0, 1, 9, 13, 20), T0 + timedelta(days=21))
    assert action.kind is ActionKind.STOP and "exhausted" in action.reason


def test_stops_on_hard_decline_and_on_days_since_invoice() -> None:
    assert next_action(POLICY, _history(0, hard=True), T0).kind is ActionKind.STOP
    late = next_action(POLICY, _history(0, 1), T0 + timedelta(days=60))
    assert late.kind is ActionKind.STOP and "60 days" in late.reason


def test_paid_needs_nothing() -> None:
    assert next_action(POLICY, _history(0, 1, succeeded=True), T0).kind is ActionKind.NONE


def test_overdue_state_picks_the_highest_threshold_reached() -> None:
    assert overdue_state(STATES, date(2021, 8, 6), date(2021, 8, 15)) is None
    assert overdue_state(STATES, date(2021, 8, 6), date(2021, 8, 20)) == STATES[1]


def test_offsets_from_first_must_increase() -> None:
    with pytest.raises(ValidationFailed):
        RetrySchedule((timedelta(hours=2), timedelta(hours=1)), RetryBasis.FROM_FIRST)


def test_month_windows_are_calendar_months_clamped() -> None:
    start = datetime(2024, 1, 31, 9, tzinfo=UTC)
    assert SmartRetryWindow.ONE_MONTH.end_at(start) == datetime(2024, 2, 29, 9, tzinfo=UTC)
    assert SmartRetryWindow.TWO_MONTHS.end_at(start) == datetime(2024, 3, 31, 9, tzinfo=UTC)
    assert SmartRetryWindow.ONE_MONTH.end_at(datetime(2024, 12, 5, tzinfo=UTC)).month == 1


gaps = st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8)


@given(gaps)
def test_from_previous_and_from_first_agree_on_cumulative_offsets(days: list[int]) -> None:
    previous = RetrySchedule(tuple(timedelta(days=d) for d in days), RetryBasis.FROM_PREVIOUS)
    offsets = [sum(days[: i + 1]) for i in range(len(days))]
    first = RetrySchedule(tuple(timedelta(days=o) for o in offsets), RetryBasis.FROM_FIRST)
    assert previous.retry_times(T0) == first.retry_times(T0)
    times = previous.retry_times(T0)
    assert list(times) == sorted(times) and len(times) == len(days)
