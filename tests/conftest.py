"""Suite-wide settings: the decimal FloatOperation trap is on everywhere."""

from __future__ import annotations

import decimal
from collections.abc import Iterator

import pytest

# New threads copy DefaultContext; the main thread's context is set here too.
decimal.DefaultContext.traps[decimal.FloatOperation] = True
decimal.getcontext().traps[decimal.FloatOperation] = True


@pytest.fixture(autouse=True)
def _float_operation_trap() -> Iterator[None]:
    ctx = decimal.getcontext()
    ctx.traps[decimal.FloatOperation] = True
    yield
