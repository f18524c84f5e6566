"""Which event ids SQLite's store may hold, answered from memory: most new ids need no lookup.

    >>> ids = IdFilter.sized_for(0, top=0)
    >>> ids.add([0x1234_5678_9ABC])
    >>> ids.candidates([0x1234_5678_9ABC, 0x0FED_CBA9_8765])
    [20015998343868]

SQLite's dedup looks every id of a round up in two B-trees (`event_ids.existing_sqlite`), and
that lookup grows with the store: 2.0 µs an event at the start of a run, 3.5 µs by 2.3 million
events. Nine ids in ten are new. This Bloom filter sets two bits for the hash of every stored id
(`event_ids.id_hash`), in 16 to 64 bits of room an id (made anew, twice as large, when it
fills); an id with either bit clear is not stored, and is not looked up. The others (repeats,
and one new id in a thousand to one in seventy) are looked up as before.

Exact by construction: a bit once set is never cleared, so the filter never says "not stored" of
a stored id, whatever else it holds (ids purged since, rounds rolled back). It is brought up to
date from the store itself, under the write lock the lookup runs under (`catch_up`):
- the events above the highest ``seq`` it has read, whoever wrote them (a writer's own rows
  count as read once their commit returned: `stored`);
- the events stored before it was made, through their dedup keys (`event_ids.ID_TABLES`,
  where each event's key is written with it): a slice of the hash range a round, about
  `BACKFILL` keys, so that a writer starting on a large store is not held up reading all of
  it. Until the whole range is read, every id is looked up.
SQLite gives a new event the highest ``seq`` plus one, so a ``seq`` is given again only after the
newest events were deleted: a deletion of events counts itself in the database (`DELETIONS`, by
the purge, in the same transaction), and a filter that sees a new count reads the store again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ratecard.adapters.db.models import EVENT_IDS, RECENT_EVENT_IDS

BITS_PER_ID = 16  # room an id when full: one new id in seventy is then looked up needlessly
BACKFILL = 10_000  # older keys read per round (about 10 ms) until the filter covers the store
_HASH_BITS = 48  # `event_ids.id_hash`
_MIN_LOG2 = 27  # 16 MiB: room for 8 million ids before it first grows
_MAX_LOG2 = 32  # 512 MiB: past 268 million ids, more of the new ones are looked up
_HASHES = 1 << _HASH_BITS
_RANGE = "SELECT id_hash FROM events WHERE seq > ? AND seq <= ?"
# The dedup keys of a slice of the hash range, both tiers (`event_ids.add_id_keys`).
_KEYS = tuple(
    f"SELECT id_hash FROM {tier.name} WHERE id_hash >= ? AND id_hash < ?"
    for tier in (RECENT_EVENT_IDS, EVENT_IDS)
)
# SQLite's user version (a number in the database header, written transactionally): how many
# times events were deleted. Ratecard's schema version lives in Alembic's table, not there.
DELETIONS = "PRAGMA user_version"


class IdFilter:
    """A Bloom filter of stored id hashes, and how much of the store it has read."""

    def __init__(self, log2: int, *, top: int) -> None:
        """`log2`: the filter's size in bits, as a power of two; `top`: the store's highest
        ``seq`` now (the newer events are read by ``seq``, the older ones by their keys)."""
        assert _MIN_LOG2 <= log2 <= _MAX_LOG2
        self._bits = bytearray(1 << (log2 - 3))
        self._shift = _HASH_BITS - log2  # the first position: the hash's top bits
        self._mask = (1 << log2) - 1  # the second: its low bits
        self.capacity = (1 << log2) // BITS_PER_ID
        self.count = 0  # ids added
        self.high = top  # every event above `top` and up to `high` has been read
        self.scanned = 0 if top else _HASHES  # and every key stored by then, below this hash
        self.deletions: int | None = None  # `DELETIONS` when last caught up
        self._larger: IdFilter | None = None  # filling, to take over once complete

    @classmethod
    def sized_for(cls, count: int, *, top: int) -> IdFilter:
        """A filter with room for twice `count` ids."""
        wanted = max(1, 2 * count * BITS_PER_ID)
        return cls(max(_MIN_LOG2, min(_MAX_LOG2, (wanted - 1).bit_length())), top=top)

    @property
    def complete(self) -> bool:
        """Whether every stored row has been read: only then can the filter say "not stored"."""
        return self.scanned >= _HASHES

    @property
    def full(self) -> bool:
        """Past its capacity: a larger filter is filled, and takes over once complete."""
        return self.count > self.capacity

    def add(self, hashes: Iterable[int]) -> None:
        bits, shift, mask = self._bits, self._shift, self._mask
        added = 0
        for h in hashes:
            p = h >> shift
            bits[p >> 3] |= 1 << (p & 7)
            q = h & mask
            bits[q >> 3] |= 1 << (q & 7)
            added += 1
        self.count += added

    def candidates(self, hashes: Sequence[int]) -> list[int]:
        """The hashes of `hashes` the store may hold: all of them until `complete`."""
        if not self.complete:
            return list(hashes)
        bits, shift, mask = self._bits, self._shift, self._mask
        return [
            h
            for h in hashes
            if bits[(p := h >> shift) >> 3] >> (p & 7) & 1
            and bits[(q := h & mask) >> 3] >> (q & 7) & 1
        ]

    def stored(self, first: int, hashes: Sequence[int]) -> Callable[[], None]:
        """Add the hashes of the rows a transaction is storing, ``seq`` `first` onwards, and
        give the call that counts them as read once that transaction committed (the next
        `catch_up` then does not read them back; a rollback leaves bits that cost nothing)."""
        self.add(hashes)
        last = first + len(hashes) - 1

        def committed() -> None:
            if self.high == first - 1:  # else another call read them, or reads them again
                self.high = last

        return committed

    def catch_up(self, cursor: Any, top: int) -> None:
        """Read what was stored since the last call and the next slice of the older keys,
        through `cursor`, whose transaction holds the write lock; `top` is the highest ``seq``
        now."""
        cursor.execute(DELETIONS)
        deletions = int(cursor.fetchall()[0][0])
        if (deletions != self.deletions and self.deletions is not None) or top < self.high:
            # Events were deleted since the last call, the newest ones perhaps, and their seqs
            # given again: read the store again (the bits already set can stay).
            self.high, self.scanned = top, 0
        self.deletions = deletions
        if top > self.high:
            cursor.execute(_RANGE, (self.high, top))
            self.add(h for (h,) in cursor.fetchall() if h is not None)
            self.high = top
        if not self.complete:
            # About `BACKFILL` keys: the hashes are uniform, and there are at most `top` keys.
            end = min(_HASHES, self.scanned + max(1, _HASHES * BACKFILL // max(top, 1)))
            for keys in _KEYS:
                cursor.execute(keys, (self.scanned, end))
                self.add(h for (h,) in cursor.fetchall())
            self.scanned = end
        elif self.full or self._larger is not None:
            self._grow(cursor, top)

    def _grow(self, cursor: Any, top: int) -> None:
        """Fill a filter twice the size a round at a time, this one answering meanwhile; then
        take its bits."""
        if self._larger is None:
            self._larger = IdFilter.sized_for(self.count, top=top)
        larger = self._larger
        larger.catch_up(cursor, top)
        if larger.complete:
            self._bits, self._shift, self._mask = larger._bits, larger._shift, larger._mask
            self.capacity, self.count = larger.capacity, larger.count
            self._larger = None
