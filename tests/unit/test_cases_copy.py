"""The cases kept in the repository are the shared ones, and every family has a test module."""

from __future__ import annotations

import pytest

from tests.cases import CASES_DIR, SHARED_DIR


@pytest.mark.skipif(not SHARED_DIR.exists(), reason="../shared is not beside this checkout")
def test_copy_matches_shared() -> None:
    for path in SHARED_DIR.glob("*.json"):
        assert (CASES_DIR / path.name).read_bytes() == path.read_bytes(), path.name


def test_every_family_has_a_case_test_module() -> None:
    from pathlib import Path

    from tests.cases import FAMILIES

    here = Path(__file__).parent
    missing = [f for f in FAMILIES if not (here / f"test_cases_{f}.py").exists()]
    assert missing == []
    assert sorted(p.stem for p in CASES_DIR.glob("*.json")) == sorted(FAMILIES)


def test_float_operation_trap_is_on() -> None:
    import decimal

    with pytest.raises(decimal.FloatOperation):
        decimal.Decimal(0.1)  # noqa: RUF032 - the point of the test
    with pytest.raises(decimal.FloatOperation):
        _ = decimal.Decimal("0.1") < 0.2  # type: ignore[operator]
