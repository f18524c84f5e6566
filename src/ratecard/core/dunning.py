"""Dunning policy: when to retry a failed payment, when to escalate, when to stop.

Worked example — Kill Bill's `retry.days = 1,8,4,7`, gaps measured from the previous attempt,
after a payment failed on 2021-08-06::

    >>> sched = RetrySchedule((timedelta(days=1), timedelta(days=8), timedelta(days=4),
    ...     timedelta(days=7)), RetryBasis.FROM_PREVIOUS)
    >>> [t.date().isoformat() for t in sched.retry_times(datetime(2021, 8, 6, tzinfo=UTC))]
    ['2021-08-07', '2021-08-15', '2021-08-19', '2021-08-26']

Most other engines (Yuno, Recurly static retries) give offsets from the FIRST try instead
(`RetryBasis.FROM_FIRST`). Overdue states (WARNING, BLOCKED, ...) are entered once the days since
the earliest unpaid invoice reach their threshold (Kill Bill's
`timeSinceEarliestUnpaidInvoiceEqualsOrExceeds`). Retrying stops at the first stop condition met
(Recurly: 7 declines, 20 attempts or 60 days since the invoice), on a hard decline, or when the
schedule runs out. Stripe Smart Retries choose their own times; only their limits live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from ratecard.core.errors import invalid

__all__ = [
    "STRIPE_SMART_RETRIES_RECOMMENDED_TRIES",
    "STRIPE_SMART_RETRIES_RECOMMENDED_WINDOW",
    "STRIPE_SMART_RETRIES_WINDOWS",
    "ActionKind",
    "Attempt",
    "DunningAction",
    "DunningHistory",
    "DunningPolicy",
    "OverdueState",
    "RetryBasis",
    "RetrySchedule",
    "SmartRetryWindow",
    "StopConditions",
    "next_action",
    "overdue_state",
    "state_entry_dates",
    "stop_reason",
]


class SmartRetryWindow(StrEnum):
    """The windows Stripe Smart Retries may spread retries over."""

    ONE_WEEK = "1 week"
    TWO_WEEKS = "2 weeks"
    THREE_WEEKS = "3 weeks"
    ONE_MONTH = "1 month"
    TWO_MONTHS = "2 months"

    def end_at(self, start_at: datetime) -> datetime:
        """The end of the window; months are calendar months, clamped to the month's end."""
        weeks = {"1 week": 1, "2 weeks": 2, "3 weeks": 3}
        if self.value in weeks:
            return start_at + timedelta(weeks=weeks[self.value])
        months = 1 if self is SmartRetryWindow.ONE_MONTH else 2
        y, m = divmod(start_at.month - 1 + months, 12)
        year, month = start_at.year + y, m + 1
        nxt = date(year + (month == 12), month % 12 + 1, 1)
        day = min(start_at.day, (nxt - timedelta(days=1)).day)
        return start_at.replace(year=year, month=month, day=day)


#: Stripe's recommended default: 8 tries within 2 weeks.
STRIPE_SMART_RETRIES_RECOMMENDED_TRIES = 8
STRIPE_SMART_RETRIES_RECOMMENDED_WINDOW = SmartRetryWindow.TWO_WEEKS
STRIPE_SMART_RETRIES_WINDOWS: tuple[SmartRetryWindow, ...] = tuple(SmartRetryWindow)


class RetryBasis(StrEnum):
    FROM_PREVIOUS = "from_previous"  # Kill Bill: each gap counts from the previous attempt
    FROM_FIRST = "from_first"  # offsets from the first try


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    delays: tuple[timedelta, ...]  # gaps (FROM_PREVIOUS) or offsets (FROM_FIRST)
    basis: RetryBasis

    def __post_init__(self) -> None:
        if any(d <= timedelta(0) for d in self.delays):
            raise invalid("retry delays must be positive", "delays")
        if self.basis is RetryBasis.FROM_FIRST and list(self.delays) != sorted(set(self.delays)):
            raise invalid("offsets from the first try must increase", "delays")

    def retry_times(self, first_failed_at: datetime) -> tuple[datetime, ...]:
        """Every retry instant if each retry fails on time."""
        times: list[datetime] = []
        for delay in self.delays:
            base = (
                times[-1] if times and self.basis is RetryBasis.FROM_PREVIOUS else first_failed_at
            )
            times.append(base + delay)
        return tuple(times)

    def next_retry_at(self, attempts: tuple[datetime, ...]) -> datetime | None:
        """The next retry after these attempts (the first is the original charge)."""
        assert attempts
        index = len(attempts) - 1
        if index >= len(self.delays):
            return None
        base = attempts[-1] if self.basis is RetryBasis.FROM_PREVIOUS else attempts[0]
        return base + self.delays[index]


@dataclass(frozen=True, slots=True)
class OverdueState:
    name: str
    days: int  # entered when days since the earliest unpaid invoice >= days


def state_entry_dates(states: tuple[OverdueState, ...], unpaid_since_on: date) -> dict[str, date]:
    return {s.name: unpaid_since_on + timedelta(days=s.days) for s in states}


def overdue_state(
    states: tuple[OverdueState, ...], unpaid_since_on: date, today_on: date
) -> OverdueState | None:
    """The most severe state reached (the highest threshold met), or None."""
    elapsed = (today_on - unpaid_since_on).days
    reached = [s for s in states if elapsed >= s.days]
    return max(reached, key=lambda s: s.days) if reached else None


@dataclass(frozen=True, slots=True)
class StopConditions:
    max_declines: int | None = None
    max_attempts: int | None = None
    max_days_since_invoice: int | None = None


def stop_reason(
    stop: StopConditions, *, declines: int, attempts: int, days_since_invoice: int
) -> str | None:
    """Why retrying must stop (the first limit reached, each inclusive), or None."""
    if stop.max_declines is not None and declines >= stop.max_declines:
        return f"{declines} declines (limit {stop.max_declines})"
    if stop.max_attempts is not None and attempts >= stop.max_attempts:
        return f"{attempts} attempts (limit {stop.max_attempts})"
    limit = stop.max_days_since_invoice
    if limit is not None and days_since_invoice >= limit:
        return f"{days_since_invoice} days since the invoice (limit {limit})"
    return None


@dataclass(frozen=True, slots=True)
class DunningPolicy:
    schedule: RetrySchedule
    stop: StopConditions
    overdue_states: tuple[OverdueState, ...] = ()

    def __post_init__(self) -> None:
        days = [s.days for s in self.overdue_states]
        if days != sorted(set(days)) or any(d < 0 for d in days):
            raise invalid("overdue thresholds must be distinct, increasing days", "overdue_states")


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    succeeded: bool
    hard_decline: bool = False  # e.g. stolen card: retrying cannot help


@dataclass(frozen=True, slots=True)
class DunningHistory:
    invoice_issued_at: datetime
    unpaid_since_on: date  # due date of the earliest unpaid invoice
    attempts: tuple[Attempt, ...]

    def __post_init__(self) -> None:
        times = [a.at for a in self.attempts]
        assert times == sorted(times), "attempts must be in time order"


class ActionKind(StrEnum):
    NONE = "none"  # paid
    RETRY_NOW = "retry_now"
    WAIT = "wait"  # until `at`
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class DunningAction:
    kind: ActionKind
    at: datetime | None
    reason: str
    overdue_state: OverdueState | None


def next_action(policy: DunningPolicy, history: DunningHistory, now: datetime) -> DunningAction:
    """What to do about an unpaid invoice at instant `now` (an injected clock's reading)."""
    assert now.tzinfo is not None
    state = overdue_state(
        policy.overdue_states, history.unpaid_since_on, now.astimezone(UTC).date()
    )
    attempts = history.attempts
    if any(a.succeeded for a in attempts):
        return DunningAction(ActionKind.NONE, None, "paid", None)
    if not attempts:
        return DunningAction(ActionKind.RETRY_NOW, now, "no attempt yet", state)
    if attempts[-1].hard_decline:
        return DunningAction(ActionKind.STOP, None, "hard decline", state)
    reason = stop_reason(
        policy.stop,
        declines=len(attempts),
        attempts=len(attempts),
        days_since_invoice=(now - history.invoice_issued_at).days,
    )
    if reason is not None:
        return DunningAction(ActionKind.STOP, None, reason, state)
    retry_at = policy.schedule.next_retry_at(tuple(a.at for a in attempts))
    if retry_at is None:
        return DunningAction(ActionKind.STOP, None, "retry schedule exhausted", state)
    if retry_at <= now:
        return DunningAction(
            ActionKind.RETRY_NOW, now, f"retry due since {retry_at.isoformat()}", state
        )
    return DunningAction(ActionKind.WAIT, retry_at, "next retry scheduled", state)
