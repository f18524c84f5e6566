"""Entitlements: may this customer use this feature, and how much is left? O(1) from a cache.

    >>> service = EntitlementService(sessions, clock)          # in-process cache  # doctest: +SKIP
    >>> service.check(scope, "cus_1", "api_calls", requested=Decimal(1))          # doctest: +SKIP
    Check(allowed=True, feature='api_calls', reason=None, remaining=Decimal('999'), ...)

Kinds (from the customer's live subscription's plan): ``boolean`` (enabled or not), ``limit`` (a
fixed number, e.g. seats: allowed while `requested` is within it) and ``metered`` (a limit on a
meter's usage in the current billing period; `remaining` = limit − usage).

A check reads one hash field of the customer's cached entitlements (`adapters.cache`: in-process
by default, Redis when configured). On a miss the customer's entitlements are computed from the
store and cached as one hash; `invalidate` (a plan or subscription change) and every ingested
batch for the customer (usage changed) drop the hash, and an answer read while a drop landed is
not cached (the cache's versions, `adapters.cache`). Over the limit, ``deny`` refuses with
``limit_exceeded``, ``allow_and_notify`` allows and sets `notify`, ``throttle_and_notify``
refuses with ``throttled`` and sets `notify`; either also writes one
``entitlement.limit_exceeded`` webhook event per customer, feature and period. When neither
cache nor store can answer, a feature fails open or closed as its plan says (`fail_open`; open
when it was never seen). What each
feature does then is kept beside the entitlements, per tenant and for 30 days, in the cache as
well as in the process: with Redis a restarted process still knows it while the store is down.
A cached view is read until the billing period it counts ends (`EntitlementView.until`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.cache import CacheUnavailable, HashCache, InProcessCache
from ratecard.adapters.clock import Clock
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.catalog import EntitlementKind, ExceedAction
from ratecard.core.events import format_instant, format_timestamp
from ratecard.core.periods import Period
from ratecard.services.metering.alerts import enqueue
from ratecard.services.metering.priced_usage import plan_of
from ratecard.services.metering.usage_reader import UsageReader
from ratecard.services.subscription_state import live_subscription

log = logging.getLogger(__name__)
_ALL = "__all__"
_FALLBACK_TTL = 30 * 24 * 3600  # how long the cache keeps a feature's fallback, in seconds
_DAY_NS = 24 * 3600 * 1_000_000_000
_NOTIFIED_AT_MOST = 100_000


@dataclass(frozen=True, slots=True)
class EntitlementView:
    feature: str
    kind: EntitlementKind
    enabled: bool
    limit: Decimal | None
    usage: Decimal | None
    remaining: Decimal | None
    on_exceed: ExceedAction
    fail_open: bool
    until: datetime | None = None  # the end of the period its usage counts (a cached view
    # is stale from then: the next period starts from zero)

    def current(self, now: datetime) -> bool:
        return self.until is None or now < self.until

    def to_json(self) -> str:
        data = asdict(self)
        for name in ("limit", "usage", "remaining"):
            if data[name] is not None:
                data[name] = format(data[name], "f")
        data["until"] = _instant_text(self.until)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> EntitlementView:
        data = json.loads(text)

        def number(name: str) -> Decimal | None:
            return None if data[name] is None else Decimal(data[name])

        return cls(
            feature=data["feature"],
            kind=EntitlementKind(data["kind"]),
            enabled=bool(data["enabled"]),
            limit=number("limit"),
            usage=number("usage"),
            remaining=number("remaining"),
            on_exceed=ExceedAction(data["on_exceed"]),
            fail_open=bool(data["fail_open"]),
            until=_instant(data.get("until")),  # absent from views cached by older versions
        )


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def _instant_text(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _instant(text: str | None) -> datetime | None:
    """An instant as cached; None for none, and for what an older version cached instead
    (``"1"``: computed, without the period's end)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Check:
    allowed: bool
    feature: str
    reason: str | None = (
        None  # not_entitled, disabled, limit_exceeded, throttled, store_unavailable
    )
    remaining: Decimal | None = None
    notify: bool = False
    source: str = "cache"  # cache, store, fallback


def decide(view: EntitlementView, requested: Decimal) -> Check:
    if not view.enabled:
        return Check(False, view.feature, "disabled")
    if view.kind is EntitlementKind.BOOLEAN or view.limit is None:
        return Check(True, view.feature)
    used = view.usage or Decimal(0)
    within = used + requested <= view.limit
    if within:
        return Check(True, view.feature, remaining=view.remaining)
    if view.on_exceed is ExceedAction.ALLOW_AND_NOTIFY:
        return Check(True, view.feature, "limit_exceeded", view.remaining, notify=True)
    if view.on_exceed is ExceedAction.THROTTLE_AND_NOTIFY:
        return Check(False, view.feature, "throttled", view.remaining, notify=True)
    return Check(False, view.feature, "limit_exceeded", view.remaining)


class EntitlementService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        cache: HashCache | None = None,
        ttl_seconds: int = 300,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.cache: HashCache = cache or InProcessCache()
        self._ttl = ttl_seconds
        # Each feature's fallback as last seen, per (tenant, mode, feature), with when this process
        # last kept it in the cache (monotonic ns)
        self._fail_open: dict[tuple[str, str, str], tuple[bool, int]] = {}
        self._notified: set[tuple[str, str, str]] = set()  # the notices written (`_noticed`)

    @staticmethod
    def _key(scope: TenantScope, customer_id: str) -> str:
        return f"ent:{scope.tenant_id}:{scope.mode}:{customer_id}"

    @staticmethod
    def _fallback_key(scope: TenantScope, feature: str) -> str:
        return f"entfail:{scope.tenant_id}:{scope.mode}:{feature}"

    def _fails_open(self, scope: TenantScope, feature: str) -> bool:
        """Whether `feature` is allowed while the store cannot be read: as last seen by this
        process, else by any (the cache), else open."""
        seen = self._fail_open.get((scope.tenant_id, scope.mode, feature))
        if seen is not None:
            return seen[0]
        try:
            kept = self.cache.get(self._fallback_key(scope, feature), "open")
        except CacheUnavailable:
            kept = None
        return kept != "0"

    def _remember_fallbacks(self, scope: TenantScope, views: Iterable[EntitlementView]) -> None:
        """Keep each feature's fallback in the process and, when it changed or a day has
        passed since, in the cache for `_FALLBACK_TTL` (one write a feature a day)."""
        now = time.monotonic_ns()
        for view in views:
            known = self._fail_open.get((scope.tenant_id, scope.mode, view.feature))
            if known is not None and known[0] == view.fail_open and now - known[1] < _DAY_NS:
                continue
            try:
                self.cache.put(
                    self._fallback_key(scope, view.feature),
                    {"open": "1" if view.fail_open else "0"},
                    ttl_seconds=_FALLBACK_TTL,
                )
                kept = now
            except CacheUnavailable as exc:
                log.warning("entitlement cache unavailable: %s", exc)
                kept = now - _DAY_NS  # not kept: the next load tries again
            self._fail_open[(scope.tenant_id, scope.mode, view.feature)] = (view.fail_open, kept)

    def check(
        self,
        scope: TenantScope,
        customer_id: str,
        feature: str,
        requested: Decimal = Decimal(0),
        *,
        now: datetime | None = None,
    ) -> Check:
        """`now`: the request's (a test-mode key's is its tenant's test clock); a cached view
        of a period that has ended by then is read again."""
        key = self._key(scope, customer_id)
        at = now or self._clock.now()
        try:
            cached = self.cache.get(key, feature)
            if cached is not None:
                seen = EntitlementView.from_json(cached)
                if seen.current(at):
                    return self._noticed(scope, customer_id, seen, decide(seen, requested), at)
            else:
                marker = self.cache.get(key, _ALL)  # the period's end, or "" without a plan
                until = None if marker is None else _instant(marker)
                if marker is not None and (until is None or at < until):
                    return Check(False, feature, "not_entitled")
        except CacheUnavailable as exc:
            log.warning("entitlement cache unavailable: %s", exc)
        try:
            views = self._load(scope, customer_id)
        except (OperationalError, DBAPIError) as exc:
            log.warning("entitlement store unavailable: %s", exc)
            allowed = self._fails_open(scope, feature)
            return Check(allowed, feature, "store_unavailable", source="fallback")
        view = views.get(feature)
        if view is None:
            return Check(False, feature, "not_entitled", source="store")
        checked = _with_source(decide(view, requested), "store")
        return self._noticed(scope, customer_id, view, checked, at)

    def _noticed(
        self,
        scope: TenantScope,
        customer_id: str,
        view: EntitlementView,
        check: Check,
        at: datetime,
    ) -> Check:
        """A soft limit exceeded notifies: the check says so (`notify`) and the tenant gets an
        ``entitlement.limit_exceeded`` webhook event, once per customer, feature and period
        (the outbox's key; this process remembers the ones it wrote, so a customer checked
        again and again over the limit costs no write). A store that cannot take the event
        does not fail the check."""
        if not check.notify:
            return check
        until = "" if view.until is None else format_timestamp(view.until)  # keyed as alerts
        dedup = f"entitlement:{customer_id}:{view.feature}:{until}"
        if (scope.tenant_id, scope.mode, dedup) in self._notified:
            return check
        try:
            with UnitOfWork(self._sessions, scope, actor="entitlements", clock=self._clock) as uow:
                enqueue(
                    uow.session,
                    scope,
                    "entitlement.limit_exceeded",
                    dedup,
                    payload={
                        "customer_id": customer_id,
                        "feature": view.feature,
                        "limit": _text(view.limit),
                        "usage": _text(view.usage),
                        "on_exceed": str(view.on_exceed),
                        "allowed": "true" if check.allowed else "false",
                        "period_end": "" if view.until is None else format_instant(view.until),
                    },
                    at=at,
                )
                uow.commit()
        except (OperationalError, DBAPIError) as exc:
            log.warning("entitlement notice not written: %s", exc)
            return check
        if len(self._notified) >= _NOTIFIED_AT_MOST:
            self._notified.clear()
        self._notified.add((scope.tenant_id, scope.mode, dedup))
        return check

    def list(self, scope: TenantScope, customer_id: str) -> list[EntitlementView]:
        return sorted(self._load(scope, customer_id).values(), key=lambda v: v.feature)

    def invalidate(self, scope: TenantScope, customer_id: str) -> None:
        try:
            self.cache.drop(self._key(scope, customer_id))
        except CacheUnavailable as exc:
            log.warning("entitlement cache unavailable: %s", exc)

    def on_ingested(self, scope: TenantScope, touched: frozenset[tuple[str, str]]) -> None:
        """Ingestion listener: usage changed, so the customers' remaining amounts did."""
        for customer_id in {c for c, _ in touched}:
            self.invalidate(scope, customer_id)

    def _load(self, scope: TenantScope, customer_id: str) -> dict[str, EntitlementView]:
        """The customer's entitlements from the store, cached unless an invalidation landed
        while they were read (the cache's version of the key moved: what was read may be
        the old plan or usage, and the next check reads again)."""
        key = self._key(scope, customer_id)
        try:
            seen: int | None = self.cache.version(key)
        except CacheUnavailable as exc:
            log.warning("entitlement cache unavailable: %s", exc)
            seen = None
        views, until = self._compute(scope, customer_id)
        self._remember_fallbacks(scope, views.values())
        if seen is None:
            return views
        values = {feature: view.to_json() for feature, view in views.items()}
        values[_ALL] = _instant_text(until) or ""
        try:
            self.cache.put(key, values, ttl_seconds=self._ttl, if_version=seen)
        except CacheUnavailable as exc:
            log.warning("entitlement cache unavailable: %s", exc)
        return views

    def _compute(
        self, scope: TenantScope, customer_id: str
    ) -> tuple[dict[str, EntitlementView], datetime | None]:
        """The customer's entitlements now, and the end of the period they count (None
        without a live subscription)."""
        with UnitOfWork(
            self._sessions, scope, actor="entitlements", clock=self._clock, read_only=True
        ) as uow:
            uow.customers.get(customer_id)
            session = uow.session
            now = uow.scope_now()
            sub = live_subscription(uow, customer_id, now)
            if sub is None:
                return {}, None
            plan = plan_of(session, scope, sub)
            period = Period(sub.current_period_start_at, sub.current_period_end_at)
            reader = UsageReader(session, scope)
            metered = [
                (ent.meter_code, period)
                for ent in plan.entitlements
                if ent.kind is EntitlementKind.METERED and ent.meter_code is not None
            ]
            if metered:
                reader.prefetch(customer_id, metered)  # every meter in one statement
            views: dict[str, EntitlementView] = {}
            for ent in plan.entitlements:
                usage = remaining = None
                if ent.kind is EntitlementKind.METERED and ent.meter_code is not None:
                    usage = reader.result(customer_id, ent.meter_code, period).total.value
                    if ent.limit is not None:
                        remaining = max(ent.limit - usage, Decimal(0))
                elif ent.kind is EntitlementKind.LIMIT:
                    remaining = ent.limit
                views[ent.feature] = EntitlementView(
                    ent.feature,
                    ent.kind,
                    ent.enabled,
                    ent.limit,
                    usage,
                    remaining,
                    ent.on_exceed,
                    ent.fail_open,
                    period.end_at,
                )
            return views, period.end_at


def _with_source(check: Check, source: str) -> Check:
    values: dict[str, Any] = {f: getattr(check, f) for f in check.__dataclass_fields__}
    values["source"] = source
    return Check(**values)
