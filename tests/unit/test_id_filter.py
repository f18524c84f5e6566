"""The id filter never says "not stored" of a stored id, whatever happened to the store."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ratecard.adapters.db import id_filter
from ratecard.adapters.db.id_filter import IdFilter

HASHES = st.integers(min_value=0, max_value=(1 << 48) - 1)


class _Events:
    """SQLite's events table as the filter reads it: ``seq -> id_hash``, a new row at the
    highest seq plus one."""

    def __init__(self) -> None:
        self.rows: dict[int, int | None] = {}
        self.deletions = 0  # `id_filter.DELETIONS`: the purge counts itself
        self._found: list[tuple[int | None]] = []

    @property
    def top(self) -> int:
        return max(self.rows, default=0)

    def insert(self, hashes: list[int | None]) -> None:
        first = self.top + 1
        self.rows.update(zip(range(first, first + len(hashes)), hashes, strict=True))

    def delete_newest(self, count: int) -> None:
        for seq in sorted(self.rows)[-count:] if count else []:
            del self.rows[seq]
        self.deletions += 1

    def execute(self, sql: str, params: tuple[int, int] = (0, 0)) -> None:  # the cursor
        if sql == id_filter.DELETIONS:
            self._found = [(self.deletions,)]  # type: ignore[list-item]
            return
        if sql in id_filter._KEYS:  # the two tiers of dedup keys: here even seqs, then odd
            tier = id_filter._KEYS.index(sql)
            first, end = params
            self._found = [
                (h,)
                for seq, h in self.rows.items()
                if h is not None and seq % 2 == tier and first <= h < end
            ]
            return
        assert sql == id_filter._RANGE
        low, high = params
        self._found = [(h,) for seq, h in sorted(self.rows.items()) if low < seq <= high]

    def fetchall(self) -> list[tuple[int | None]]:
        return self._found


@given(st.lists(HASHES, max_size=200), st.lists(HASHES, max_size=200))
def test_every_added_hash_is_a_candidate(added, others):
    ids = IdFilter.sized_for(len(added), top=0)
    ids.add(added)
    assert ids.complete
    candidates = ids.candidates(added + others)
    assert set(added) <= set(candidates)
    assert set(candidates) <= set(added + others)


def test_an_incomplete_filter_looks_every_id_up():
    ids = IdFilter.sized_for(10, top=5)
    assert not ids.complete
    assert ids.candidates([1, 2, 3]) == [1, 2, 3]


def test_new_ids_are_mostly_not_candidates():
    ids = IdFilter.sized_for(10_000, top=0)
    ids.add(range(0, 10_000 * 7919, 7919))
    fresh = [(n * 2654435761) % (1 << 48) for n in range(1, 10_001)]
    assert len(ids.candidates(fresh)) < 100  # sized for twice as many ids: well under 1 %


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.lists(st.one_of(HASHES, st.none()), max_size=20)),
        st.tuples(st.just("delete"), st.integers(0, 15)),
        st.tuples(st.just("catch_up"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(st.lists(HASHES, max_size=30), _STEPS, st.integers(1, 7))
def test_caught_up_it_holds_every_stored_hash(before, steps, backfill):
    """Started on a store holding `before`, read a few rows a round, through inserts and
    deletions of the newest rows (whose seqs are then given again, perhaps before the next
    round), growing as it fills (here from 64 bits, room for 4 ids): each time it is caught
    up, every hash stored is a candidate."""
    events = _Events()
    events.insert(list(before))
    saved = id_filter.BACKFILL, id_filter._MIN_LOG2
    id_filter.BACKFILL, id_filter._MIN_LOG2 = backfill, 6
    ids = IdFilter.sized_for(0, top=events.top)
    try:
        for action, arg in steps:
            if action == "insert":
                events.insert(arg)
            elif action == "delete":
                events.delete_newest(arg)
            else:
                ids.catch_up(events, events.top)
                stored = [h for h in events.rows.values() if h is not None]
                assert set(stored) <= set(ids.candidates(stored))
        for _ in range(events.top // backfill + 3):
            ids.catch_up(events, events.top)
        assert ids.complete
        stored = [h for h in events.rows.values() if h is not None]
        assert set(stored) <= set(ids.candidates(stored))
    finally:
        id_filter.BACKFILL, id_filter._MIN_LOG2 = saved


def test_a_full_filter_fills_a_larger_one_and_takes_it_over(monkeypatch):
    monkeypatch.setattr(id_filter, "_MIN_LOG2", 6)  # 64 bits: room for 4 ids
    monkeypatch.setattr(id_filter, "BACKFILL", 10)
    events = _Events()
    ids: Any = IdFilter.sized_for(0, top=0)
    hashes = [(n * 2654435761) % (1 << 48) for n in range(1, 41)]
    capacities = []
    for start in range(0, 40, 4):
        events.insert(hashes[start : start + 4])
        ids.catch_up(events, events.top)
        capacities.append(ids.capacity)
        assert ids.complete  # the smaller one answers while the larger one fills
        assert set(hashes[: start + 4]) <= set(ids.candidates(hashes))
    assert capacities[0] == 4 and capacities[-1] >= 40 and not ids.full


def test_rows_a_writer_stored_count_as_read_only_once_committed():
    events = _Events()
    ids = IdFilter.sized_for(0, top=0)
    ids.catch_up(events, events.top)
    events.insert([11, 12])
    committed = ids.stored(1, [11, 12])
    assert set(ids.candidates([11, 12])) == {11, 12}  # at once, whatever comes of it
    assert ids.high == 0  # not yet: the transaction may roll back
    committed()
    assert ids.high == 2
    # Rolled back: its seqs go to other rows, which the next catch-up reads.
    rolled_back = ids.stored(3, [13])
    events.insert([14])
    ids.catch_up(events, events.top)
    rolled_back()  # too late to count: a later catch-up read seq 3 already
    assert ids.high == 3 and 14 in ids.candidates([14])
