"""The clock, injected: services never call ``datetime.now()`` themselves.

    >>> clock = FixedClock(datetime(2024, 1, 31, tzinfo=UTC))
    >>> clock.advance(timedelta(days=1))
    >>> clock.now().isoformat()
    '2024-02-01T00:00:00+00:00'

Every instant a clock returns is timezone-aware UTC.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until told to move; for tests and simulations.

    Thread-safe, so concurrent tests can share one.
    """

    def __init__(self, start: datetime) -> None:
        self._now = _aware_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def __reduce__(self) -> tuple[type[FixedClock], tuple[datetime]]:
        """Pickled (for another process) as the instant it shows; the copy moves on its own."""
        return (FixedClock, (self.now(),))

    def set(self, instant: datetime) -> None:
        instant = _aware_utc(instant)
        with self._lock:
            assert instant >= self._now, "a clock never runs backwards"
            self._now = instant

    def advance(self, delta: timedelta) -> None:
        assert delta >= timedelta(0), "a clock never runs backwards"
        with self._lock:
            self._now = self._now + delta


#: The simulated clock of ``ratecard simulate`` is a fixed clock that scenarios advance.
SimulatedClock = FixedClock


def _aware_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant!r}: clocks hold aware instants only")
    return instant.astimezone(UTC)
