"""Reading JSON and YAML documents exactly: numbers become Decimal, never float.

    >>> load_text('{"amount": 5000.00}', "plan.json")
    {'amount': Decimal('5000.00')}
    >>> load_text("rate: 0.0005", "plan.yaml")
    {'rate': Decimal('0.0005')}

Pydantic reports errors as location tuples; `field_path()` turns them into the paths we show
users (`charges[0].tiers[1].up_to`), and `problems_from()` turns a pydantic ValidationError into
our `Problem`s, all of them at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BeforeValidator, ValidationError

from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.money import CURRENCY_EXPONENTS


class _ExactLoader(yaml.SafeLoader):
    """A YAML loader whose floats are exact Decimals built from the scalar's own text."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise yaml.constructor.ConstructorError(
            None, None, f"not a finite decimal: {text!r}", node.start_mark
        ) from None
    if not value.is_finite():
        raise yaml.constructor.ConstructorError(
            None, None, f"not a finite decimal: {text!r}", node.start_mark
        )
    return value


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a number here")


def load_text(text: str, name: str = "document.json") -> Any:
    """Parse JSON or YAML (by the name's suffix; YAML is a superset, so it is the fallback)."""
    try:
        if name.endswith(".json"):
            return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        return yaml.load(text, Loader=_ExactLoader)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValidationFailed([Problem(ErrorCode.INVALID_VALUE, f"{name}: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise ValidationFailed([Problem(ErrorCode.INVALID_VALUE, f"{name}: {exc}")]) from None


def load_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationFailed(
            [Problem(ErrorCode.INVALID_VALUE, f"cannot read {path}: {exc.strerror}")]
        ) from None
    return load_text(text, path.name)


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """('charges', 0, 'tiers', 1, 'up_to') -> 'charges[0].tiers[1].up_to'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "constrained-")):
            continue
        else:
            out += f".{part}" if out else part
    return out


_CODES = {
    "missing": ErrorCode.MISSING_FIELD,
    "extra_forbidden": ErrorCode.UNKNOWN_FIELD,
}


def problems_from(error: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        code = _CODES.get(item["type"], ErrorCode.INVALID_VALUE)
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(Problem(code, message, field_path(item["loc"], prefix) or None))
    return problems


def _exact_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    if isinstance(value, float):
        raise ValueError("floats are not accepted; write the number as a decimal string")
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
        if not parsed.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return parsed
    return value


#: A Decimal field that accepts decimal strings, ints and Decimals, and refuses floats.
ExactDecimal = Annotated[Decimal, BeforeValidator(_exact_number)]


def join_problems(groups: Iterable[list[Problem]]) -> list[Problem]:
    return [p for group in groups for p in group]


def known_currency(value: str) -> str:
    if value.upper() not in CURRENCY_EXPONENTS:
        raise ValueError(f"unknown ISO 4217 currency {value!r}")
    return value.upper()


def known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


#: An active ISO 4217 code, upper-cased ("usd" -> "USD").
CurrencyCode = Annotated[str, AfterValidator(known_currency)]
#: An IANA time zone name such as "Europe/Paris".
TimeZoneName = Annotated[str, AfterValidator(known_zone)]
