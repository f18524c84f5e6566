"""What every tenant-bound piece of the store is bound to: a tenant and a mode.

    >>> TenantScope("ten_1", Mode.TEST)
    TenantScope(tenant_id='ten_1', mode=<Mode.TEST: 'test'>)

Live and test data of one tenant never mix: every tenant table carries ``mode`` beside
``tenant_id`` and every query filters on both.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    LIVE = "live"
    TEST = "test"


class Role(StrEnum):
    ADMIN = "admin"
    BILLING = "billing"
    READ_ONLY = "read_only"
    INGEST = "ingest"


@dataclass(frozen=True, slots=True)
class TenantScope:
    tenant_id: str
    mode: Mode

    def __post_init__(self) -> None:
        assert self.tenant_id, "a scope names a tenant"
        assert isinstance(self.mode, Mode), f"mode must be a Mode, not {self.mode!r}"


def new_id(prefix: str) -> str:
    """A random, unguessable id such as ``cus_3f9a...`` (96 bits)."""
    assert prefix.isalnum() and len(prefix) <= 8
    return f"{prefix}_{secrets.token_hex(12)}"
