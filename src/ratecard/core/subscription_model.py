"""The subscription state machine's vocabulary (`core.subscriptions` runs it): statuses, the
state (`Subscription`), the commands it takes, and what invoice assembly reads from a timeline
(`Moment`, `Segment`).

    >>> PlanRef("pro", 2).plan_code
    'pro'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from ratecard.core.periods import (
    Interval,
    Period,
)


class Status(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELED = "canceled"  # canceled now: service stopped at `ended_at`
    ENDED = "ended"  # ran out at a boundary: a scheduled cancel or a term that does not renew


IN_EFFECT = frozenset({Status.TRIALING, Status.ACTIVE, Status.PAST_DUE, Status.PAUSED})
# The statuses whose current period accrues usage (a paused subscription's does not), in the
# order the store has always listed them.
ACCRUING = (Status.ACTIVE, Status.TRIALING, Status.PAST_DUE)


class Effective(StrEnum):
    NOW = "now"
    PERIOD_END = "period_end"


class EndReason(StrEnum):
    CANCELED = "canceled"
    TERM_ENDED = "term_ended"


@dataclass(frozen=True, slots=True)
class PlanRef:
    plan_code: str
    plan_version: int

    def __post_init__(self) -> None:
        assert self.plan_code and self.plan_version >= 1, self


@dataclass(frozen=True, slots=True)
class Terms:
    """A contract: no cancel-now before `minimum_term_end_at`; what happens at the term end."""

    minimum_term_end_at: datetime
    auto_renew: bool = True
    renewal_interval: Interval | None = None  # None: evergreen after the first term


@dataclass(frozen=True, slots=True)
class Subscription:
    plan: PlanRef
    quantity: int
    status: Status
    interval: Interval
    timezone: str
    calendar: bool
    anchor_at: datetime
    started_at: datetime
    current_period: Period
    trial_ends_at: datetime | None = None
    term_ends_at: datetime | None = None
    auto_renew: bool = True
    renewal_interval: Interval | None = None
    pending_plan: PlanRef | None = None
    pending_interval: Interval | None = None
    pending_quantity: int | None = None
    cancel_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: EndReason | None = None

    def __post_init__(self) -> None:
        assert self.quantity >= 0 and (self.pending_quantity or 0) >= 0, self.quantity
        assert (self.status in IN_EFFECT) == (self.ended_at is None), self.status
        assert (self.ended_at is None) == (self.end_reason is None)
        assert self.status is not Status.TRIALING or self.trial_ends_at is not None
        assert self.started_at <= self.current_period.start_at

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Start:
    at: datetime
    plan: PlanRef
    quantity: int
    interval: Interval
    timezone: str
    calendar: bool = False
    trial_ends_at: datetime | None = None
    anchor_at: datetime | None = None  # default: the trial end, else `at`
    terms: Terms | None = None


@dataclass(frozen=True, slots=True)
class ChangePlan:
    at: datetime
    plan: PlanRef
    interval: Interval | None = None  # the new plan's interval when it differs
    effective: Effective = Effective.NOW
    prorate: bool = True


@dataclass(frozen=True, slots=True)
class ChangeQuantity:
    at: datetime
    quantity: int
    effective: Effective = Effective.NOW
    prorate: bool = True


@dataclass(frozen=True, slots=True)
class Pause:
    at: datetime


@dataclass(frozen=True, slots=True)
class Resume:
    at: datetime


@dataclass(frozen=True, slots=True)
class Cancel:
    at: datetime
    effective: Effective = Effective.PERIOD_END


@dataclass(frozen=True, slots=True)
class Reactivate:
    """Withdraw a cancel scheduled for the period end, before it takes effect."""

    at: datetime


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    at: datetime


@dataclass(frozen=True, slots=True)
class PaymentRecovered:
    at: datetime


Command = (
    ChangePlan
    | ChangeQuantity
    | Pause
    | Resume
    | Cancel
    | Reactivate
    | PaymentFailed
    | PaymentRecovered
)


class MomentKind(StrEnum):
    PERIOD_START = "period_start"
    PERIOD_END = "period_end"
    CHANGE = "change"
    END = "end"


@dataclass(frozen=True, slots=True)
class Moment:
    """A point where invoice assembly has work; `plan`/`quantity` are the ones after it."""

    at: datetime
    kind: MomentKind
    period: Period
    plan: PlanRef
    quantity: int
    previous_plan: PlanRef | None = None
    previous_quantity: int | None = None
    prorate: bool = False
    period_reset: bool = False


@dataclass(frozen=True, slots=True)
class Segment:
    start_at: datetime
    end_at: datetime
    plan_code: str
    plan_version: int
    quantity: int
    status: Status

    def __post_init__(self) -> None:
        assert self.start_at < self.end_at, self

    @property
    def period(self) -> Period:
        return Period(self.start_at, self.end_at)
