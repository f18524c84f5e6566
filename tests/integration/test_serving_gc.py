"""`tune_gc`: a serving process hides its start-up objects from the collector and collects young
objects rarely (the batches in flight at full load stay under the threshold)."""

from __future__ import annotations

import gc

from ratecard.runtime import tune_gc


def test_start_up_objects_are_frozen_and_young_collections_are_rare():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (100_000, 20, 20)
        assert gc.get_freeze_count() > 0
        start = gc.get_count()[0]
        kept = [[] for _ in range(50_000)]  # half the threshold alive at once: no collection
        assert gc.get_count()[0] >= start + 50_000
        del kept
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
