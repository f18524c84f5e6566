"""A batch of events on its way through ingestion: validated (`Prepared`, its valid events as
`Columns`), stored (`Stored`: a status per event), answered (`IngestResult`, an `EventResult`
per event, in the batch's order).

    >>> prepared = ingestion.prepare(items)                                  # doctest: +SKIP
    >>> prepared.answered(stored).as_dict()["accepted"]                      # doctest: +SKIP
    998
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from ratecard.adapters.db.scope import TenantScope
from ratecard.core.errors import Problem


class EventStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    HELD = "held"  # stored and deduplicated; counted once its customer and meter exist
    QUEUED = "queued"  # in the JetStream buffer; the worker decides (services.metering.buffered)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 4x to make, once per event
class EventResult:
    index: int
    event_id: str | None
    status: EventStatus
    problems: tuple[Problem, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "id": self.event_id, "status": self.status}
        if self.problems:
            first = self.problems[0]
            out.update(code=str(first.code), reason=first.message, field=first.field)
            if len(self.problems) > 1:
                out["problems"] = [
                    {"code": str(p.code), "reason": p.message, "field": p.field}
                    for p in self.problems
                ]
        return out


@dataclass(frozen=True, slots=True)
class IngestResult:
    results: tuple[EventResult, ...]
    touched: frozenset[tuple[str, str]] = field(default=frozenset())  # (customer_id, meter)

    def count(self, status: EventStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.count(EventStatus.ACCEPTED),
            "duplicates": self.count(EventStatus.DUPLICATE),
            "rejected": self.count(EventStatus.REJECTED),
            "held": self.count(EventStatus.HELD),
            "results": [r.as_dict() for r in self.results],
        }


Listener = Callable[[TenantScope, frozenset[tuple[str, str]]], None]


class Columns(NamedTuple):
    """A batch's valid events as columns, in batch order (`IngestionService.prepare`): plain
    values, each made once, that cross to a writer process as they are. The writer works on
    positions in these columns; no object is made per event on its path."""

    at: Sequence[int]  # where each event is in its batch
    ids: Sequence[str]
    meters: Sequence[str]
    refs: Sequence[str]  # the customer's external id, or else the subscription's id
    by_subscription: Sequence[bool]  # True: `refs` holds a subscription id
    occurred: Sequence[str]  # `event_store.stored_instant_text`: fixed width, UTC
    hours: Sequence[int]  # `event_store.hour_number`
    properties: Sequence[dict[str, str]]
    json: Sequence[str]  # the properties as stored (`types.dumps_text_map`)


NO_EVENTS = Columns((), (), (), (), (), (), (), (), ())


class Stored(NamedTuple):
    """What the store made of a batch's valid events: a status per event, in `Columns` order
    (`EventStatus` values); the problems of those it rejected, by position; and the (customer,
    meter) pairs whose usage the round changed."""

    statuses: list[str]
    problems: dict[int, tuple[Problem, ...]]
    touched: frozenset[tuple[str, str]]


_STATUS = {status.value: status for status in EventStatus}
ACCEPTED, DUPLICATE, HELD, REJECTED = "accepted", "duplicate", "held", "rejected"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch validated on its own (`IngestionService.prepare`), waiting for the store."""

    received_at: datetime
    results: list[EventResult | None]  # filled: refused in validation; None: to store
    valid: Columns

    @property
    def size(self) -> int:
        """How many of its events go to the store."""
        return len(self.valid.ids)

    def filled(self) -> tuple[EventResult, ...]:
        """The results, once every event has one."""
        filled = tuple(filter(None, self.results))  # a result is truthy: no per-item Python
        assert len(filled) == len(self.results), "every event has a result"
        return filled

    def answered(self, stored: Stored) -> IngestResult:
        """The batch's result, with the store's outcome for its valid events."""
        results = self.results.copy()
        valid, problems, status = self.valid, stored.problems, _STATUS
        if problems:
            for k, (index, event_id, outcome) in enumerate(
                zip(valid.at, valid.ids, stored.statuses, strict=True)
            ):
                results[index] = EventResult(index, event_id, status[outcome], problems.get(k, ()))
        else:
            for index, event_id, outcome in zip(valid.at, valid.ids, stored.statuses, strict=True):
                results[index] = EventResult(index, event_id, status[outcome])
        filled = tuple(filter(None, results))
        assert len(filled) == len(results), "every event has a result"
        return IngestResult(filled, stored.touched)
