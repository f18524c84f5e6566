"""Request bodies read as JSON with every number exact, fast: what the ingestion routes parse.

    >>> loads(b'[{"tokens": 1250, "cost": 0.000125, "rate": 1.50}]')
    [{'tokens': 1250, 'cost': Decimal('0.000125'), 'rate': Decimal('1.50')}]

The same documents as ``json.loads(body, parse_float=Decimal)`` with ``NaN`` and ``Infinity``
refused, at about half its cost: msgspec reads the body, handing each number with a fraction or
an exponent to `Decimal` as its text, so no number passes through float. Where msgspec refuses a
body, the standard library reads it, so that what it accepts that msgspec does not (a UTF-8 byte
order mark, an escaped lone surrogate) is still accepted, and the reason given for a body that
is not JSON is the standard library's (`tests/unit/test_exact_json.py` checks both agree). Both
refuse a document nested about as deep as the interpreter's recursion limit (997 levels for
msgspec, 993 for the standard library, at the default limit of 1,000).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec

from ratecard.core.events import refuse_constant

_FAST = msgspec.json.Decoder(float_hook=Decimal).decode


def loads(body: bytes) -> Any:
    """`body` as JSON, numbers as `int` or `Decimal`; `ValueError` if it is not JSON (and
    `RecursionError` if it nests deeper than the interpreter's recursion limit)."""
    try:
        return _FAST(body)
    except msgspec.DecodeError:  # the standard library says why (or reads what it can)
        return json.loads(body, parse_float=Decimal, parse_constant=refuse_constant)
