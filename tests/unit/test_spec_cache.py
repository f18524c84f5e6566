"""`meters.SpecCache`: a scope's meter specs as of its tenant's meters revision."""

from __future__ import annotations

from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.core.aggregation import Aggregation, MeterSpec
from ratecard.services.metering.meters import SpecCache

A, B = TenantScope("ten_a", Mode.LIVE), TenantScope("ten_b", Mode.LIVE)
COUNT = MeterSpec(Aggregation.COUNT)
SUM = MeterSpec(Aggregation.SUM, "tokens")
MAX = MeterSpec(Aggregation.MAX, "tokens")


def test_specs_are_taken_only_at_the_revision_they_were_cached_at():
    cache = SpecCache()
    assert cache.get(A, 0) == {}
    cache.put(A, 3, {"calls": COUNT})
    assert cache.get(A, 3) == {"calls": COUNT}
    assert cache.get(A, 2) == {} and cache.get(A, 4) == {}
    assert cache.get(B, 3) == {}, "each scope apart"
    assert cache.get(TenantScope("ten_a", Mode.TEST), 3) == {}, "each mode apart"


def test_the_same_revision_adds_to_the_specs_and_a_newer_one_replaces_them():
    cache = SpecCache()
    cache.put(A, 3, {"calls": COUNT})
    cache.put(A, 3, {"tokens": SUM})
    assert cache.get(A, 3) == {"calls": COUNT, "tokens": SUM}
    cache.put(A, 4, {"tokens": MAX})
    assert cache.get(A, 4) == {"tokens": MAX}, "nothing of revision 3 is kept"
    cache.put(A, 3, {"calls": COUNT})  # a reader that saw the older revision
    assert cache.get(A, 4) == {"tokens": MAX} and cache.get(A, 3) == {}


def test_the_oldest_scope_gives_way_beyond_the_bound():
    cache = SpecCache(max_scopes=2)
    scopes = [TenantScope(f"ten_{n}", Mode.LIVE) for n in range(3)]
    for scope in scopes:
        cache.put(scope, 1, {"calls": COUNT})
    assert [cache.get(s, 1) for s in scopes] == [{}, {"calls": COUNT}, {"calls": COUNT}]
    cache.put(scopes[2], 2, {"tokens": SUM})  # a cached scope again: nothing gives way
    assert cache.get(scopes[1], 1) == {"calls": COUNT}
