"""The subscription state machine: every transition, refusals, segments and billing moments."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratecard.core.errors import ErrorCode, InvalidTransition, ValidationFailed
from ratecard.core.periods import Interval, IntervalUnit, Period, local_midnight
from ratecard.core.subscription_model import (
    IN_EFFECT,
    Cancel,
    ChangePlan,
    ChangeQuantity,
    Command,
    Effective,
    EndReason,
    MomentKind,
    Pause,
    PaymentFailed,
    PaymentRecovered,
    PlanRef,
    Reactivate,
    Resume,
    Start,
    Status,
    Terms,
)
from ratecard.core.subscriptions import run

MONTHLY = Interval(IntervalUnit.MONTH)
A, B = PlanRef("A", 1), PlanRef("B", 1)
NOW, END = Effective.NOW, Effective.PERIOD_END


def d(m: int, day: int, y: int = 2024, tz: ZoneInfo | None = None) -> datetime:
    return datetime(y, m, day, tzinfo=tz or UTC)


def start(**kw: object) -> Start:
    args: dict[str, object] = {"at": d(1, 1), "plan": A, "quantity": 3, "interval": MONTHLY}
    args["timezone"] = "UTC"
    args.update(kw)
    return Start(**args)  # type: ignore[arg-type]


def test_the_briefs_timeline() -> None:
    tl = run(
        start(),
        [
            ChangePlan(d(1, 15), B),
            ChangeQuantity(d(1, 20), 5, effective=END),
            Cancel(d(2, 10), effective=END),
        ],
        until_at=d(4, 1),
    )
    jan = tl.segments(Period(d(1, 1), d(2, 1)))
    assert [(s.plan_code, s.quantity, s.start_at, s.end_at) for s in jan] == [
        ("A", 3, d(1, 1), d(1, 15)),
        ("B", 3, d(1, 15), d(2, 1)),
    ]
    feb = tl.segments(Period(d(2, 1), d(3, 1)))
    assert [(s.plan_code, s.quantity, s.start_at, s.end_at) for s in feb] == [
        ("B", 5, d(2, 1), d(3, 1))
    ]
    assert tl.segments(Period(d(3, 1), d(4, 1))) == ()
    after = tl.state_at(d(3, 1))
    assert (after.status, after.end_reason, after.ended_at) == (
        Status.ENDED,
        EndReason.CANCELED,
        d(3, 1),
    )
    assert [s.state.status for s in tl.steps] == [Status.ACTIVE] * 4
    assert tl.steps[2].state.pending_quantity == 5 and tl.steps[3].state.cancel_at == d(3, 1)
    kinds = [(m.at, m.kind) for m in tl.moments]
    assert kinds == [
        (d(1, 1), MomentKind.PERIOD_START),
        (d(1, 15), MomentKind.CHANGE),
        (d(2, 1), MomentKind.PERIOD_END),
        (d(2, 1), MomentKind.PERIOD_START),
        (d(3, 1), MomentKind.PERIOD_END),
        (d(3, 1), MomentKind.END),
    ]
    change = tl.moments[1]
    assert (change.previous_plan, change.plan, change.prorate) == (A, B, True)
    assert change.period == Period(d(1, 1), d(2, 1))


def test_trial_then_active_with_anchor_at_trial_end() -> None:
    tl = run(start(trial_ends_at=d(1, 15)), [], until_at=d(3, 20))
    assert tl.state_at(d(1, 10)).status is Status.TRIALING
    assert tl.state_at(d(1, 15)).status is Status.ACTIVE
    starts = [m.period for m in tl.moments if m.kind is MomentKind.PERIOD_START]
    assert starts[:3] == [
        Period(d(1, 1), d(1, 15)),
        Period(d(1, 15), d(2, 15)),
        Period(d(2, 15), d(3, 15)),
    ]
    assert [s.status for s in tl.segments(Period(d(1, 1), d(2, 1)))] == [
        Status.TRIALING,
        Status.ACTIVE,
    ]


def test_month_end_anchor_returns_to_the_31st() -> None:
    tl = run(start(at=d(1, 31)), [], until_at=d(5, 1))
    ends = [m.at.date() for m in tl.moments if m.kind is MomentKind.PERIOD_END]
    assert ends == [date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]


def test_calendar_billing_in_a_dst_timezone() -> None:
    ny = ZoneInfo("America/New_York")
    begun = d(3, 5, tz=ny) + timedelta(hours=15)
    tl = run(start(at=begun, timezone="America/New_York", calendar=True), [], until_at=d(5, 2))
    periods = [m.period for m in tl.moments if m.kind is MomentKind.PERIOD_START]
    first_april = local_midnight(date(2024, 4, 1), ny)
    assert periods[0] == Period(begun, first_april)
    assert periods[1] == Period(first_april, local_midnight(date(2024, 5, 1), ny))


def test_pause_resume_and_past_due() -> None:
    tl = run(
        start(),
        [
            Pause(d(1, 10)),
            Resume(d(1, 20)),
            PaymentFailed(d(2, 3)),
            PaymentRecovered(d(2, 5)),
        ],
        until_at=d(3, 1),
    )
    assert [s.state.status for s in tl.steps[1:]] == [
        Status.PAUSED,
        Status.ACTIVE,
        Status.PAST_DUE,
        Status.ACTIVE,
    ]
    jan = tl.segments(Period(d(1, 1), d(2, 1)))
    assert [(s.status, s.start_at.day, s.end_at.day) for s in jan] == [
        (Status.ACTIVE, 1, 10),
        (Status.PAUSED, 10, 20),
        (Status.ACTIVE, 20, 1),
    ]


def test_resume_during_trial_goes_back_to_trialing() -> None:
    tl = run(start(trial_ends_at=d(1, 20)), [Pause(d(1, 5)), Resume(d(1, 8))], until_at=d(2, 1))
    assert tl.steps[-1].state.status is Status.TRIALING


def test_cancel_now_ends_at_once_and_refuses_more() -> None:
    tl = run(start(), [Cancel(d(1, 10), effective=NOW)], until_at=d(3, 1))
    final = tl.final
    assert (final.status, final.ended_at) == (Status.CANCELED, d(1, 10))
    assert tl.moments[-1].kind is MomentKind.END and tl.moments[-1].at == d(1, 10)
    assert tl.segments(Period(d(1, 1), d(2, 1)))[-1].end_at == d(1, 10)
    with pytest.raises(InvalidTransition) as err:
        run(start(), [Cancel(d(1, 10), effective=NOW), Resume(d(1, 11))], until_at=d(2, 1))
    assert err.value.code is ErrorCode.SUBSCRIPTION_ALREADY_CANCELED


def test_reactivate_before_the_end_keeps_it_going() -> None:
    tl = run(start(), [Cancel(d(1, 10)), Reactivate(d(1, 20))], until_at=d(3, 1))
    assert tl.final.status is Status.ACTIVE and tl.final.cancel_at is None


def test_change_plan_at_period_end_and_with_a_new_interval_now() -> None:
    tl = run(start(), [ChangePlan(d(1, 10), B, effective=END)], until_at=d(2, 10))
    assert [s.plan_code for s in tl.segments(Period(d(1, 1), d(2, 10)))] == ["A", "B"]
    yearly = Interval(IntervalUnit.YEAR)
    tl = run(start(), [ChangePlan(d(1, 10), B, interval=yearly)], until_at=d(2, 10))
    change, restart = tl.moments[1], tl.moments[2]
    assert change.period_reset and change.period == Period(d(1, 1), d(2, 1))
    assert restart.kind is MomentKind.PERIOD_START
    assert restart.period == Period(d(1, 10), d(1, 10, 2025))


def test_contract_term_refuses_cancel_now_and_ends_or_renews() -> None:
    terms = Terms(minimum_term_end_at=d(4, 1), auto_renew=False)
    with pytest.raises(InvalidTransition) as err:
        run(start(terms=terms), [Cancel(d(2, 10), effective=NOW)], until_at=d(5, 1))
    assert err.value.code is ErrorCode.SUBSCRIPTION_IN_MINIMUM_TERM
    ended = run(start(terms=terms), [], until_at=d(5, 1)).final
    assert (ended.status, ended.end_reason, ended.ended_at) == (
        Status.ENDED,
        EndReason.TERM_ENDED,
        d(4, 1),
    )
    renewing = Terms(minimum_term_end_at=d(4, 1), renewal_interval=Interval(IntervalUnit.QUARTER))
    assert run(start(terms=renewing), [], until_at=d(5, 1)).final.term_ends_at == d(7, 1)
    # A cancel at period end inside the term waits for the term end.
    tl = run(start(terms=renewing), [Cancel(d(2, 10))], until_at=d(5, 1))
    assert tl.final.ended_at == d(4, 1)


@pytest.mark.parametrize(
    ("commands", "code"),
    [
        ([Pause(d(1, 2)), Pause(d(1, 3))], ErrorCode.SUBSCRIPTION_ALREADY_PAUSED),
        ([Resume(d(1, 2))], ErrorCode.SUBSCRIPTION_NOT_PAUSED),
        ([Pause(d(1, 2)), ChangePlan(d(1, 3), B)], ErrorCode.SUBSCRIPTION_PAUSED),
        ([Pause(d(1, 2)), ChangeQuantity(d(1, 3), 4)], ErrorCode.SUBSCRIPTION_PAUSED),
        ([Reactivate(d(1, 2))], ErrorCode.SUBSCRIPTION_NOT_SCHEDULED_TO_CANCEL),
        ([Cancel(d(1, 2)), Cancel(d(1, 3))], ErrorCode.SUBSCRIPTION_CANCEL_ALREADY_SCHEDULED),
        ([PaymentRecovered(d(1, 2))], ErrorCode.SUBSCRIPTION_NOT_PAST_DUE),
        ([Pause(d(1, 2)), PaymentFailed(d(1, 3))], ErrorCode.SUBSCRIPTION_NOT_ACTIVE),
        ([PaymentFailed(d(1, 2)), Pause(d(1, 3))], ErrorCode.SUBSCRIPTION_PAST_DUE),
        ([Cancel(d(1, 2)), Reactivate(d(2, 2))], ErrorCode.SUBSCRIPTION_ALREADY_CANCELED),
        ([Cancel(d(1, 2), effective=NOW), Pause(d(1, 3))], ErrorCode.SUBSCRIPTION_ALREADY_CANCELED),
    ],
)
def test_invalid_transitions_have_specific_codes(commands: list[Command], code: ErrorCode) -> None:
    with pytest.raises(InvalidTransition) as err:
        run(start(), commands, until_at=d(3, 1))
    assert err.value.code is code


def test_term_ended_subscription_refuses_with_ended() -> None:
    terms = Terms(minimum_term_end_at=d(2, 1), auto_renew=False)
    with pytest.raises(InvalidTransition) as err:
        run(start(terms=terms), [Pause(d(2, 5))], until_at=d(3, 1))
    assert err.value.code is ErrorCode.SUBSCRIPTION_ENDED


def test_commands_out_of_order_or_bad_values_are_refused() -> None:
    with pytest.raises(ValidationFailed) as err:
        run(start(), [Pause(d(1, 5)), Resume(d(1, 4))], until_at=d(2, 1))
    assert err.value.code is ErrorCode.COMMAND_OUT_OF_ORDER
    with pytest.raises(ValidationFailed):
        run(start(), [ChangeQuantity(d(1, 5), -1)], until_at=d(2, 1))


def _command(kind: str, at: datetime, hour: int) -> Command:
    if kind == "plan":
        return ChangePlan(at, PlanRef("P", hour % 3 + 1))
    if kind == "qty":
        return ChangeQuantity(at, hour % 7)
    if kind == "qty_end":
        return ChangeQuantity(at, hour % 5, effective=END)
    simple = {"pause": Pause, "resume": Resume, "fail": PaymentFailed, "recover": PaymentRecovered}
    return simple[kind](at)


command_kinds = st.sampled_from(["plan", "qty", "qty_end", "pause", "resume", "fail", "recover"])


@given(
    steps=st.lists(st.tuples(command_kinds, st.integers(1, 24 * 90)), max_size=8),
    begun_on=st.dates(min_value=date(2023, 1, 1), max_value=date(2025, 12, 31)),
    calendar=st.booleans(),
)
def test_segments_tile_every_billing_period(
    steps: list[tuple[str, int]], begun_on: date, calendar: bool
) -> None:
    begun = datetime(begun_on.year, begun_on.month, begun_on.day, 9, tzinfo=UTC)
    until = begun + timedelta(days=100)
    hours = sorted(h for _, h in steps)
    commands: list[Command] = []
    for (kind, _), hour in zip(steps, hours, strict=True):
        at = begun + timedelta(hours=hour)
        candidate = [*commands, _command(kind, at, hour)]
        try:
            run(start(at=begun, calendar=calendar), candidate, until_at=until)
        except InvalidTransition:
            continue
        commands = candidate
    tl = run(start(at=begun, calendar=calendar), commands, until_at=until)
    periods = [m.period for m in tl.moments if m.kind is MomentKind.PERIOD_START]
    for a, b in itertools.pairwise(periods):
        assert a.end_at == b.start_at
    for period in periods:
        if period.end_at > until:
            continue
        segs = tl.segments(period)
        assert segs[0].start_at == period.start_at and segs[-1].end_at == period.end_at
        for x, y in itertools.pairwise(segs):
            assert x.end_at == y.start_at
            assert (x.plan_code, x.plan_version, x.quantity, x.status) != (
                y.plan_code,
                y.plan_version,
                y.quantity,
                y.status,
            )
        assert all(s.status in IN_EFFECT for s in segs)
