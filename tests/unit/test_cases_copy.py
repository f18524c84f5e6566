"""The cases kept in the repository are the shared ones, and every family has a test module."""

from __future__ import annotations

import pytest

from tests.cases import CASES_DIR, SHARED_DIR


@pytest.mark.skipif(not SHARED_DIR.exists(), reason="../shared is not beside this checkout")
def test_copy_matches_shared() -> None:
    for path in SHARED_DIR.glob("*.json"):
        assert (CASES_DIR / path.name).read_bytes() == path.read_bytes(), path.name
