"""Column types that keep numbers and instants exact on SQLite and PostgreSQL alike.

- `ExactDecimal`: ``NUMERIC`` (unconstrained) on PostgreSQL, canonical plain text
  (``format(d, "f")``, never exponent notation) on SQLite, which has no decimal type;
  ``Decimal("0.000000000125")`` comes back as exactly that.
- `UtcDateTime`: accepts aware datetimes only; ``timestamptz`` on PostgreSQL, fixed-width ISO-8601
  UTC text on SQLite (so text order is time order); always returns aware UTC.
- `Json`: ``JSONB`` on PostgreSQL, ``JSON`` text on SQLite, written with `dumps` (sorted keys,
  floats refused) and read with `loads` (non-integer numbers become ``Decimal``, never float).
  Amounts travel inside documents as decimal strings.

Money is two columns, ``<name>_minor`` (``BigInteger``) and a currency code; there is no
``Float`` column anywhere (a test inspects the metadata).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import JSON, Dialect, Numeric, String, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.types import TypeEngine

_SQLITE_INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def sqlite_instant_text(at: datetime) -> str:
    """How `UtcDateTime` stores an aware instant on SQLite (for bulk paths that bypass it).

    Fixed width, ``2024-03-01T11:00:00.250000+00:00``; an instant already in `UTC` skips the
    conversion (``isoformat`` is several times cheaper than ``strftime``).
    """
    if at.tzinfo is not UTC:
        assert at.utcoffset() is not None, "aware instants only"
        at = at.astimezone(UTC)
    if at.year < 1000:  # isoformat pads the year, strftime does not: keep the stored form
        return at.strftime(_SQLITE_INSTANT_FORMAT)
    return at.isoformat(timespec="microseconds")


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal: NUMERIC on PostgreSQL, canonical text on SQLite."""

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(asdecimal=True))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"ExactDecimal takes Decimal or int, not {type(value).__name__}")
        number = Decimal(value)
        if not number.is_finite():
            raise ValueError(f"ExactDecimal refuses {number}")
        if dialect.name == "postgresql":
            return number
        return format(number, "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        assert isinstance(value, str), f"unexpected stored decimal {value!r}"
        return Decimal(value)


class UtcDateTime(TypeDecorator[datetime]):
    """An instant: aware datetimes in, aware UTC datetimes out, on every engine."""

    impl = String(32)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(String(32))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UtcDateTime takes datetime, not {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store aware instants only")
        if dialect.name == "postgresql":
            return value.astimezone(UTC)
        return sqlite_instant_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime), f"unexpected stored instant {value!r}"
        assert value.tzinfo is not None, "stored instants are aware"
        return value.astimezone(UTC)


def Json(*, none_as_null: bool = True) -> TypeEngine[Any]:
    """A JSON document column: JSONB on PostgreSQL, JSON text on SQLite."""
    return JSON(none_as_null=none_as_null).with_variant(
        JSONB(none_as_null=none_as_null), "postgresql"
    )


def _refuse(value: object) -> Any:
    raise TypeError(
        f"{type(value).__name__} is not a JSON document value; "
        "write decimals and instants as strings"
    )


def _check_no_float(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError("float refused in JSON documents; write decimals as strings")
    if isinstance(value, dict):
        for item in value.values():
            _check_no_float(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_no_float(item)


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_refuse
)


def dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept, floats and Decimals refused."""
    _check_no_float(value)
    return _ENCODER.encode(value)


def dumps_text_map(value: dict[str, str]) -> str:
    """`dumps` of a flat ``{name: text}`` map (event properties), without the recursive walk.

    The same canonical text as `dumps` (orjson sorts keys by their UTF-8 bytes, which is code
    point order, and escapes what the standard encoder escapes), several times cheaper: it runs
    once per ingested event. Text that is not valid UTF-8 (a lone surrogate, which JSON's
    ``\\ud800`` escape can carry) goes through the standard encoder. Anything but text values
    is refused.
    """
    for item in value.values():
        if not isinstance(item, str):
            raise TypeError(f"{type(item).__name__} in a text map; values are text")
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return _ENCODER.encode(value)


def loads(text: str | bytes) -> Any:
    """Parse JSON with non-integer numbers as ``Decimal`` (never float)."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a document may hold")
