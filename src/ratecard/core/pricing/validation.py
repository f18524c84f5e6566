"""Validation of a charge's price: every problem at once, each naming the field at fault.

Worked example — a graduated table whose tiers go backwards and whose last tier is bounded::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import ChargeModel, PriceSpec, Tier
    >>> price = PriceSpec(tiers=(Tier(Dec(10), Dec(1)), Tier(Dec(5), Dec("-1"))))
    >>> for problem in validate_price(ChargeModel.GRADUATED, price, "charges[0].price"):
    ...     print(problem.field, problem.code)
    charges[0].price.tiers[1].up_to tiers_not_contiguous
    charges[0].price.tiers[1].up_to invalid_value
    charges[0].price.tiers[1].unit_price invalid_value

`rate()` does no checking of its own (it is the hot path), so every price is validated here once,
when a plan is saved.
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import ChargeModel, PriceSpec, QuantityRounding
from ratecard.core.errors import ErrorCode, Problem
from ratecard.core.money import MAX_PRICE_PLACES
from ratecard.core.pricing.values import ZERO

_TIERED = {
    ChargeModel.GRADUATED,
    ChargeModel.VOLUME,
    ChargeModel.STAIRCASE,
    ChargeModel.GRADUATED_PERCENTAGE,
}
_PERCENT_FIELDS = ("fixed_fee_per_event", "min_per_event", "max_per_event")

#: The model-specific fields each model reads; any other one that is set is reported.
_USES: dict[ChargeModel, frozenset[str]] = {
    ChargeModel.FLAT: frozenset({"amount"}),
    ChargeModel.PER_UNIT: frozenset({"unit_price"}),
    ChargeModel.GRADUATED: frozenset({"tiers"}),
    ChargeModel.VOLUME: frozenset({"tiers"}),
    ChargeModel.STAIRCASE: frozenset({"tiers"}),
    ChargeModel.GRADUATED_PERCENTAGE: frozenset({"tiers"}),
    ChargeModel.PACKAGE: frozenset({"amount", "package_size", "package_rounding"}),
    ChargeModel.PERCENTAGE: frozenset({"rate", *_PERCENT_FIELDS, "free_events", "free_amount"}),
}
_DEFAULTS = PriceSpec()
_SPECIFIC = (
    "amount",
    "unit_price",
    "tiers",
    "package_size",
    "package_rounding",
    "rate",
    *_PERCENT_FIELDS,
    "free_events",
    "free_amount",
)


def _number(
    problems: list[Problem], value: Decimal | None, field: str, *, positive: bool = False
) -> None:
    """A finite, non-negative (or positive) decimal with at most MAX_PRICE_PLACES places."""
    if value is None:
        return
    if not isinstance(value, Decimal) or not value.is_finite():
        problems.append(Problem(ErrorCode.INVALID_VALUE, "must be a finite decimal", field))
        return
    if positive and value <= ZERO:
        problems.append(Problem(ErrorCode.INVALID_VALUE, "must be positive", field))
    elif value < ZERO:
        problems.append(Problem(ErrorCode.INVALID_VALUE, "must not be negative", field))
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PRICE_PLACES:
        message = f"has more than {MAX_PRICE_PLACES} decimal places"
        problems.append(Problem(ErrorCode.INVALID_VALUE, message, field))


def _required(problems: list[Problem], price: PriceSpec, name: str, path: str) -> None:
    if getattr(price, name) is None:
        problems.append(Problem(ErrorCode.MISSING_FIELD, "is required", f"{path}.{name}"))


def _tiers(problems: list[Problem], model: ChargeModel, price: PriceSpec, path: str) -> None:
    if not price.tiers:
        problems.append(
            Problem(ErrorCode.MISSING_FIELD, "needs at least one tier", f"{path}.tiers")
        )
        return
    previous: Decimal | None = None
    last = len(price.tiers) - 1
    for index, tier in enumerate(price.tiers):
        where = f"{path}.tiers[{index}]"
        if tier.up_to is None and index != last:
            message = "only the last tier may be unbounded"
            problems.append(Problem(ErrorCode.INVALID_VALUE, message, f"{where}.up_to"))
        elif tier.up_to is not None:
            _number(problems, tier.up_to, f"{where}.up_to", positive=True)
            if previous is not None and tier.up_to <= previous:
                message = f"must be above the previous tier's up_to ({previous})"
                problems.append(Problem(ErrorCode.TIERS_NOT_CONTIGUOUS, message, f"{where}.up_to"))
            previous = tier.up_to
            if index == last and model is not ChargeModel.STAIRCASE:
                message = "the last tier must be unbounded (up_to null)"
                problems.append(Problem(ErrorCode.INVALID_VALUE, message, f"{where}.up_to"))
        _number(problems, tier.unit_price, f"{where}.unit_price")
        _number(problems, tier.flat_fee, f"{where}.flat_fee")
        _number(problems, tier.rate, f"{where}.rate")
        _tier_fields(problems, model, tier.unit_price, tier.rate, where)


def _tier_fields(
    problems: list[Problem], model: ChargeModel, unit_price: Decimal, rate: Decimal, where: str
) -> None:
    percent = model is ChargeModel.GRADUATED_PERCENTAGE
    if unit_price and (percent or model is ChargeModel.STAIRCASE):
        message = f"is not used by {model} (use flat_fee or rate)"
        problems.append(Problem(ErrorCode.NOT_APPLICABLE, message, f"{where}.unit_price"))
    if rate and not percent:
        message = f"is not used by {model}"
        problems.append(Problem(ErrorCode.NOT_APPLICABLE, message, f"{where}.rate"))


def _not_applicable(
    problems: list[Problem], model: ChargeModel, price: PriceSpec, path: str
) -> None:
    uses = _USES[model]
    for name in _SPECIFIC:
        if name not in uses and getattr(price, name) != getattr(_DEFAULTS, name):
            message = f"is not used by the {model} model"
            problems.append(Problem(ErrorCode.NOT_APPLICABLE, message, f"{path}.{name}"))
    if model is ChargeModel.PERCENTAGE:
        for name in ("free_units", "transform"):
            if getattr(price, name) != getattr(_DEFAULTS, name):
                message = "is not used by percentage (use free_events or free_amount)"
                problems.append(Problem(ErrorCode.NOT_APPLICABLE, message, f"{path}.{name}"))


def _ordered(
    problems: list[Problem], low: Decimal | None, high: Decimal | None, field: str
) -> None:
    if low is not None and high is not None and low > high:
        problems.append(Problem(ErrorCode.INVALID_VALUE, f"must not be below {low}", field))


def validate_price(model: ChargeModel, price: PriceSpec, path: str) -> list[Problem]:
    """Every problem with `price` for `model`, each naming a field under `path`."""
    problems: list[Problem] = []
    if model not in _USES:
        return [Problem(ErrorCode.UNKNOWN_CHARGE_MODEL, f"unknown model {model!r}", path)]
    if model in (ChargeModel.FLAT, ChargeModel.PACKAGE):
        _required(problems, price, "amount", path)
    if model is ChargeModel.PER_UNIT:
        _required(problems, price, "unit_price", path)
    if model is ChargeModel.PACKAGE:
        _required(problems, price, "package_size", path)
        _number(problems, price.package_size, f"{path}.package_size", positive=True)
        if price.package_rounding is QuantityRounding.NEAREST:
            message = "must be up or down"
            problems.append(Problem(ErrorCode.INVALID_VALUE, message, f"{path}.package_rounding"))
    if model is ChargeModel.PERCENTAGE:
        _required(problems, price, "rate", path)
        if price.free_events < 0:
            message = "must not be negative"
            problems.append(Problem(ErrorCode.INVALID_VALUE, message, f"{path}.free_events"))
        _ordered(problems, price.min_per_event, price.max_per_event, f"{path}.max_per_event")
    if model in _TIERED:
        _tiers(problems, model, price, path)
    for name in ("amount", "unit_price", "rate", *_PERCENT_FIELDS, "free_amount", "free_units"):
        _number(problems, getattr(price, name), f"{path}.{name}")
    _number(problems, price.minimum_amount, f"{path}.minimum_amount")
    _number(problems, price.maximum_amount, f"{path}.maximum_amount")
    _ordered(problems, price.minimum_amount, price.maximum_amount, f"{path}.maximum_amount")
    _not_applicable(problems, model, price, path)
    return problems
