"""The worked billing cases from ../shared/cases (a copy is kept in tests/data/cases)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
CASES_DIR = HERE / "data" / "cases"
SHARED_DIR = HERE.parent.parent / "shared" / "cases"

FAMILIES = (
    "credits_discounts",
    "dunning",
    "pricing_models",
    "proration",
    "revenue_recognition",
    "rounding_money",
    "tax",
    "usage_aggregation",
)


def load(family: str) -> list[dict[str, Any]]:
    with (CASES_DIR / f"{family}.json").open(encoding="utf-8") as f:
        # parse_float keeps any JSON number exact.
        from decimal import Decimal

        cases: list[dict[str, Any]] = json.load(f, parse_float=Decimal)
    return cases


def params(family: str) -> list[Any]:
    """One pytest param per case, with the case id as the test id."""
    return [pytest.param(case, id=case["id"]) for case in load(family)]
