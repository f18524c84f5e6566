"""The subscription lifecycle as a pure state machine, and what invoice assembly reads from it.

Worked example — monthly plan A from 2024-01-01 with 3 seats; on Jan 15 an upgrade to B "now";
on Jan 20 seats 3 -> 5 "at period end"; on Feb 10 a cancel "at period end"::

    >>> from datetime import datetime, UTC
    >>> from ratecard.core.periods import Interval, IntervalUnit, Period
    >>> from ratecard.core.subscription_model import (
    ...     Cancel, ChangePlan, ChangeQuantity, Effective, PlanRef, Start)
    >>> d = lambda m, day: datetime(2024, m, day, tzinfo=UTC)
    >>> monthly = Interval(IntervalUnit.MONTH)
    >>> tl = run(
    ...     Start(d(1, 1), PlanRef("A", 1), 3, monthly, "UTC"),
    ...     [ChangePlan(d(1, 15), PlanRef("B", 1)),
    ...      ChangeQuantity(d(1, 20), 5, effective=Effective.PERIOD_END),
    ...      Cancel(d(2, 10), effective=Effective.PERIOD_END)],
    ...     until_at=d(4, 1))
    >>> [(s.plan_code, s.quantity, s.start_at.day, s.end_at.day)
    ...  for s in tl.segments(Period(d(1, 1), d(2, 1)))]
    [('A', 3, 1, 15), ('B', 3, 15, 1)]
    >>> [(s.plan_code, s.quantity) for s in tl.segments(Period(d(2, 1), d(3, 1)))]
    [('B', 5)]
    >>> tl.state_at(d(3, 1)).status, tl.state_at(d(3, 1)).end_reason
    (<Status.ENDED: 'ended'>, <EndReason.CANCELED: 'canceled'>)

What invoice assembly gets from `run(start, commands, until_at) -> Timeline`:
- `Timeline.steps`: the command and the `Subscription` state right after it, one per command
  (the `Start` first); `state_at(at)` gives the state at any instant (automatic renewals, trial
  ends and scheduled ends included).
- `Timeline.segments(period)`: the `Segment`s `[start_at, end_at)` in effect inside a billing
  period, contiguous and in time order, each with plan (code, version), quantity and status. Only
  statuses in `IN_EFFECT` (trialing, active, past_due, paused) appear: a gap means no service.
  Assembly prices each segment's share of the period with `core.proration` (trialing and paused
  segments are typically free).
- `Timeline.moments`: the billing moments in time order. `PERIOD_END` (bill in arrears) and
  `PERIOD_START` (bill in advance) at each boundary; `CHANGE` for an immediate plan or quantity
  change, with the rate before and after and `prorate` (credit the unused old rate, charge the new
  one for the rest of `period`; with `period_reset` the interval changed, so only the credit
  applies and a new `PERIOD_START` follows at the same instant); `END` when service stops
  mid-period (cancel now: credit the unused time) or at a boundary.

Rules: plan and quantity changes "at period end" take effect at the next boundary; a cancel at
period end ends the subscription there (status `ended`, reason `canceled`), or at the end of the
minimum term if that is later, and can be reactivated until then; a cancel now is `canceled` at
once and is refused inside a minimum term. At the term end an auto-renewing contract starts a new
term (`renewal_interval`) or runs on evergreen (no interval); otherwise it ends (`term_ended`). A
trial is a period of its own; billing periods then repeat from the anchor (by default the trial
end, else the start), clipped so that the first one starts at the start. Every invalid transition
raises `InvalidTransition` with a specific code. The machine's vocabulary (statuses, the state,
the commands, moments and segments) is in `subscription_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from ratecard.core.errors import ErrorCode, InvalidTransition, Problem, ValidationFailed
from ratecard.core.periods import (
    Interval,
    Period,
    add_interval,
    period_containing,
    require_aware,
)
from ratecard.core.subscription_model import (
    IN_EFFECT,
    Cancel,
    ChangePlan,
    ChangeQuantity,
    Command,
    Effective,
    EndReason,
    Moment,
    MomentKind,
    Pause,
    PaymentFailed,
    Reactivate,
    Resume,
    Segment,
    Start,
    Status,
    Subscription,
)


def _refuse(code: ErrorCode, message: str) -> InvalidTransition:
    return InvalidTransition(message, code=code)


def _first_period(
    at: datetime, anchor_at: datetime, interval: Interval, tz: ZoneInfo, calendar: bool
) -> Period:
    """The period that holds `at`, clipped to begin at `at`."""
    held = period_containing(at, anchor_at, interval, tz, calendar)
    return Period(max(held.start_at, at), held.end_at)


def start(cmd: Start) -> tuple[Subscription, list[Moment]]:
    at = require_aware(cmd.at)
    tz = ZoneInfo(cmd.timezone)
    trial_ends_at = None if cmd.trial_ends_at is None else require_aware(cmd.trial_ends_at)
    if trial_ends_at is not None and trial_ends_at <= at:
        raise ValidationFailed(
            [Problem(ErrorCode.INVALID_VALUE, "trial ends before it starts", "trial_ends_at")]
        )
    anchor_at = require_aware(cmd.anchor_at or trial_ends_at or at)
    if trial_ends_at is not None:
        period = Period(at, trial_ends_at)
    else:
        period = _first_period(at, anchor_at, cmd.interval, tz, cmd.calendar)
    terms = cmd.terms
    sub = Subscription(
        plan=cmd.plan,
        quantity=cmd.quantity,
        status=Status.ACTIVE if trial_ends_at is None else Status.TRIALING,
        interval=cmd.interval,
        timezone=cmd.timezone,
        calendar=cmd.calendar,
        anchor_at=anchor_at,
        started_at=at,
        current_period=period,
        trial_ends_at=trial_ends_at,
        term_ends_at=None if terms is None else require_aware(terms.minimum_term_end_at),
        auto_renew=True if terms is None else terms.auto_renew,
        renewal_interval=None if terms is None else terms.renewal_interval,
    )
    return sub, [Moment(at, MomentKind.PERIOD_START, period, sub.plan, sub.quantity)]


def _end(sub: Subscription, at: datetime, status: Status, reason: EndReason) -> Subscription:
    return replace(
        sub,
        status=status,
        ended_at=at,
        end_reason=reason,
        cancel_at=None,
        pending_plan=None,
        pending_interval=None,
        pending_quantity=None,
    )


def _renew(sub: Subscription) -> tuple[Subscription, list[Moment]]:
    """Cross the boundary at the end of the current period."""
    at, closing = sub.current_period.end_at, sub.current_period
    moments = [Moment(at, MomentKind.PERIOD_END, closing, sub.plan, sub.quantity)]
    if sub.cancel_at is not None and at >= sub.cancel_at:
        sub = _end(sub, at, Status.ENDED, EndReason.CANCELED)
        return sub, [*moments, Moment(at, MomentKind.END, closing, sub.plan, sub.quantity)]
    term_ends_at = sub.term_ends_at
    if term_ends_at is not None and at >= term_ends_at:
        if not sub.auto_renew:
            sub = _end(sub, at, Status.ENDED, EndReason.TERM_ENDED)
            return sub, [*moments, Moment(at, MomentKind.END, closing, sub.plan, sub.quantity)]
        term = sub.renewal_interval
        next_term = None if term is None else add_interval(term_ends_at, term, 1, sub.tz)
        sub = replace(sub, term_ends_at=next_term)
    if sub.status is Status.TRIALING:
        sub = replace(sub, status=Status.ACTIVE)
    if sub.pending_interval is not None and sub.pending_interval != sub.interval:
        sub = replace(sub, interval=sub.pending_interval, anchor_at=at)
    sub = replace(
        sub,
        plan=sub.pending_plan or sub.plan,
        quantity=sub.quantity if sub.pending_quantity is None else sub.pending_quantity,
        pending_plan=None,
        pending_interval=None,
        pending_quantity=None,
    )
    period = _first_period(at, sub.anchor_at, sub.interval, sub.tz, sub.calendar)
    sub = replace(sub, current_period=period)
    return sub, [*moments, Moment(at, MomentKind.PERIOD_START, period, sub.plan, sub.quantity)]


def advance(
    sub: Subscription, to_at: datetime
) -> tuple[Subscription, list[Moment], list[Subscription]]:
    """Cross every boundary at or before `to_at`: the state, the moments and each new state."""
    moments: list[Moment] = []
    states: list[Subscription] = []
    while sub.status in IN_EFFECT and sub.current_period.end_at <= to_at:
        sub, crossed = _renew(sub)
        moments.extend(crossed)
        states.append(sub)
    return sub, moments, states


def _check_live(sub: Subscription) -> None:
    if sub.status is Status.CANCELED or sub.end_reason is EndReason.CANCELED:
        raise _refuse(ErrorCode.SUBSCRIPTION_ALREADY_CANCELED, "the subscription is canceled")
    if sub.status is Status.ENDED:
        raise _refuse(ErrorCode.SUBSCRIPTION_ENDED, "the subscription has ended")


def _change(
    sub: Subscription, cmd: ChangePlan | ChangeQuantity
) -> tuple[Subscription, list[Moment]]:
    if sub.status is Status.PAUSED:
        raise _refuse(ErrorCode.SUBSCRIPTION_PAUSED, "resume the subscription to change it")
    plan = cmd.plan if isinstance(cmd, ChangePlan) else sub.plan
    quantity = cmd.quantity if isinstance(cmd, ChangeQuantity) else sub.quantity
    interval = (cmd.interval if isinstance(cmd, ChangePlan) else None) or sub.interval
    if quantity < 0:
        raise ValidationFailed(
            [Problem(ErrorCode.INVALID_VALUE, "must not be negative", "quantity")]
        )
    if cmd.effective is Effective.PERIOD_END:
        if isinstance(cmd, ChangePlan):
            return replace(sub, pending_plan=plan, pending_interval=cmd.interval), []
        return replace(sub, pending_quantity=quantity), []
    at, period = cmd.at, sub.current_period
    reset = interval != sub.interval
    moment = Moment(
        at,
        MomentKind.CHANGE,
        period,
        plan,
        quantity,
        sub.plan,
        sub.quantity,
        prorate=cmd.prorate,
        period_reset=reset,
    )
    sub = replace(sub, plan=plan, quantity=quantity)
    if not reset:
        return sub, [moment]
    new_period = _first_period(at, at, interval, sub.tz, sub.calendar)
    sub = replace(
        sub, interval=interval, anchor_at=at, current_period=new_period, pending_interval=None
    )
    return sub, [moment, Moment(at, MomentKind.PERIOD_START, new_period, plan, quantity)]


def apply(sub: Subscription, cmd: Command) -> tuple[Subscription, list[Moment]]:
    """Apply one command at `cmd.at` to a state already advanced to that instant."""
    at = require_aware(cmd.at)
    assert sub.current_period.start_at <= at < sub.current_period.end_at or sub.ended_at
    _check_live(sub)
    status = sub.status
    if isinstance(cmd, ChangePlan | ChangeQuantity):
        return _change(sub, cmd)
    if isinstance(cmd, Pause):
        if status is Status.PAUSED:
            raise _refuse(ErrorCode.SUBSCRIPTION_ALREADY_PAUSED, "already paused")
        if status is Status.PAST_DUE:
            raise _refuse(ErrorCode.SUBSCRIPTION_PAST_DUE, "settle the past-due invoice first")
        return replace(sub, status=Status.PAUSED), []
    if isinstance(cmd, Resume):
        if status is not Status.PAUSED:
            raise _refuse(ErrorCode.SUBSCRIPTION_NOT_PAUSED, "the subscription is not paused")
        trialing = sub.trial_ends_at is not None and at < sub.trial_ends_at
        return replace(sub, status=Status.TRIALING if trialing else Status.ACTIVE), []
    if isinstance(cmd, Cancel):
        return _cancel(sub, cmd)
    if isinstance(cmd, Reactivate):
        if sub.cancel_at is None:
            raise _refuse(ErrorCode.SUBSCRIPTION_NOT_SCHEDULED_TO_CANCEL, "no cancel to withdraw")
        return replace(sub, cancel_at=None), []
    if isinstance(cmd, PaymentFailed):
        if status is not Status.ACTIVE:
            raise _refuse(ErrorCode.SUBSCRIPTION_NOT_ACTIVE, f"cannot fall due from {status}")
        return replace(sub, status=Status.PAST_DUE), []
    if status is not Status.PAST_DUE:
        raise _refuse(ErrorCode.SUBSCRIPTION_NOT_PAST_DUE, "the subscription is not past due")
    return replace(sub, status=Status.ACTIVE), []


def _cancel(sub: Subscription, cmd: Cancel) -> tuple[Subscription, list[Moment]]:
    if cmd.effective is Effective.NOW:
        if sub.term_ends_at is not None and cmd.at < sub.term_ends_at:
            raise _refuse(
                ErrorCode.SUBSCRIPTION_IN_MINIMUM_TERM,
                f"the minimum term runs until {sub.term_ends_at.isoformat()}",
            )
        sub = _end(sub, cmd.at, Status.CANCELED, EndReason.CANCELED)
        return sub, [Moment(cmd.at, MomentKind.END, sub.current_period, sub.plan, sub.quantity)]
    if sub.cancel_at is not None:
        raise _refuse(ErrorCode.SUBSCRIPTION_CANCEL_ALREADY_SCHEDULED, "already scheduled")
    cancel_at = sub.current_period.end_at
    if sub.term_ends_at is not None:
        cancel_at = max(cancel_at, sub.term_ends_at)  # ends at the first boundary after it
    return replace(sub, cancel_at=cancel_at), []


@dataclass(frozen=True, slots=True)
class Step:
    command: Start | Command
    state: Subscription


@dataclass(frozen=True, slots=True)
class Timeline:
    steps: tuple[Step, ...]
    moments: tuple[Moment, ...]
    history: tuple[Segment, ...]  # every span in effect from the start to `until_at`
    snapshots: tuple[tuple[datetime, Subscription], ...]
    until_at: datetime

    @property
    def final(self) -> Subscription:
        return self.snapshots[-1][1]

    def state_at(self, at: datetime) -> Subscription:
        """The state at instant `at` (after any command or boundary at exactly `at`)."""
        at = require_aware(at)
        assert at <= self.until_at, "beyond the timeline"
        found = [state for when, state in self.snapshots if when <= at]
        if not found:
            raise _refuse(ErrorCode.INVALID_TRANSITION, "before the subscription starts")
        return found[-1]

    def segments(self, period: Period) -> tuple[Segment, ...]:
        """The segments in effect inside `period`, clipped to it, in time order."""
        assert period.end_at <= self.until_at, "run the timeline at least to the period end"
        clipped = []
        for seg in self.history:
            start_at, end_at = max(seg.start_at, period.start_at), min(seg.end_at, period.end_at)
            if start_at < end_at:
                clipped.append(replace(seg, start_at=start_at, end_at=end_at))
        return tuple(clipped)


def _spans(
    snapshots: Sequence[tuple[datetime, Subscription]], until_at: datetime
) -> tuple[Segment, ...]:
    """Contiguous spans of equal (plan, quantity, status); states that last no time vanish."""
    spans: list[Segment] = []
    for (at, sub), (next_at, _) in zip(snapshots, [*snapshots[1:], (until_at, None)], strict=True):
        if at >= next_at or sub.status not in IN_EFFECT:
            continue
        seg = Segment(
            at, next_at, sub.plan.plan_code, sub.plan.plan_version, sub.quantity, sub.status
        )
        last = spans[-1] if spans else None
        if last is not None and last.end_at == at and _same(last, seg):
            spans[-1] = replace(last, end_at=next_at)
        else:
            spans.append(seg)
    return tuple(spans)


def _same(a: Segment, b: Segment) -> bool:
    return (a.plan_code, a.plan_version, a.quantity, a.status) == (
        b.plan_code,
        b.plan_version,
        b.quantity,
        b.status,
    )


def run(start_cmd: Start, commands: Sequence[Command], until_at: datetime) -> Timeline:
    """Replay a start and its ordered, timestamped commands up to `until_at`."""
    until_at = require_aware(until_at)
    sub, moments = start(start_cmd)
    steps = [Step(start_cmd, sub)]
    snapshots = [(sub.started_at, sub)]
    last_at = sub.started_at
    for index, cmd in enumerate(commands):
        at = require_aware(cmd.at)
        if not last_at <= at <= until_at:
            raise ValidationFailed(
                [
                    Problem(
                        ErrorCode.COMMAND_OUT_OF_ORDER,
                        "commands must be in time order within the timeline",
                        f"commands[{index}].at",
                    )
                ]
            )
        last_at = at
        sub, crossed, states = advance(sub, at)
        moments.extend(crossed)
        snapshots.extend(
            (s.current_period.start_at if s.ended_at is None else s.ended_at, s) for s in states
        )
        sub, happened = apply(sub, cmd)
        moments.extend(happened)
        steps.append(Step(cmd, sub))
        snapshots.append((at, sub))
    sub, crossed, states = advance(sub, until_at)
    moments.extend(crossed)
    snapshots.extend(
        (s.current_period.start_at if s.ended_at is None else s.ended_at, s) for s in states
    )
    return Timeline(
        tuple(steps), tuple(moments), _spans(snapshots, until_at), tuple(snapshots), until_at
    )
