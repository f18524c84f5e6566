"""Usage-changed notices: which customers' usage the NATS consumer just stored.

    >>> scope = TenantScope("ten_1", Mode.LIVE)
    >>> usage_changed_subject("ratecard.events")
    'ratecard.events_usage_changed'
    >>> [data] = usage_notices(scope, ["cus_2", "cus_1", "cus_2"])
    >>> data
    b'{"customer_ids":["cus_1","cus_2"],"mode":"live","tenant_id":"ten_1"}'
    >>> decode_usage_notice(data)
    (TenantScope(tenant_id='ten_1', mode=<Mode.LIVE: 'live'>), ('cus_1', 'cus_2'))

With the JetStream buffer on, ingestion's listeners (the entitlement cache among them) run in
``ratecard worker --consume nats``, not in the API processes that answer entitlement checks.
The worker publishes a notice on core NATS after each commit that counted events
(`adapters.event_bus.consume`); each API process subscribes and drops the named customers'
cached entitlements. Notices are best effort: nothing stores them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from ratecard.adapters.db.scope import Mode, TenantScope

#: One notice names at most this many customers (a few tens of KiB).
MAX_NOTICE_CUSTOMERS = 500

#: Told a scope and the customers whose usage another process stored (in a worker thread).
UsageListener = Callable[[TenantScope, tuple[str, ...]], None]


def usage_changed_subject(subject_prefix: str) -> str:
    """Where the consumer announces usage changes: not under ``<prefix>.>``, which the stream
    would store (and the consumer then take for a batch of events)."""
    return f"{subject_prefix}_usage_changed"


def usage_notices(scope: TenantScope, customer_ids: Sequence[str]) -> list[bytes]:
    """The customers as notice bodies of at most `MAX_NOTICE_CUSTOMERS` each, in order."""
    ids = sorted(set(customer_ids))
    return [
        json.dumps(
            {
                "tenant_id": scope.tenant_id,
                "mode": str(scope.mode),
                "customer_ids": ids[start : start + MAX_NOTICE_CUSTOMERS],
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        for start in range(0, len(ids), MAX_NOTICE_CUSTOMERS)
    ]


def decode_usage_notice(data: bytes) -> tuple[TenantScope, tuple[str, ...]]:
    """Raises ValueError when `data` is not a notice."""
    body = json.loads(data)  # JSONDecodeError is a ValueError
    if not isinstance(body, dict):
        raise ValueError("a notice is a JSON object")
    tenant_id, mode, ids = body.get("tenant_id"), body.get("mode"), body.get("customer_ids")
    if not (isinstance(tenant_id, str) and tenant_id and isinstance(ids, list)):
        raise ValueError("a notice names a tenant and a list of customers")
    if not all(isinstance(c, str) for c in ids) or len(ids) > MAX_NOTICE_CUSTOMERS:
        raise ValueError(f"a notice names at most {MAX_NOTICE_CUSTOMERS} customer ids")
    return TenantScope(tenant_id, Mode(str(mode))), tuple(ids)
