"""Tenants, their settings, API keys, roles and permission checks.

    >>> tenancy = TenancyService(sessions, clock)                          # doctest: +SKIP
    >>> tenant = tenancy.create_tenant("Acme", TenantSettings(default_currency="EUR"))
    >>> issued = tenancy.create_api_key(tenant.id, Mode.TEST, Role.BILLING, actor="admin@acme")
    >>> issued.secret                        # shown once, stored only as its SHA-256
    'rk_test_Qm9...'
    >>> principal = tenancy.authenticate(issued.secret)
    >>> tenancy.authorize(principal, Action.WRITE_CATALOG)
    Traceback (most recent call last):
    ratecard.core.errors.Forbidden: role billing may not write_catalog

An API key resolves to exactly one tenant and mode. The secret is 256 random bits, so a plain
SHA-256 (no salt, no slow hash) is safe at rest and lets `authenticate` find the key in one
indexed lookup. A denied `authorize` is written to the tenant's audit log before it raises.

Roles and what they may do:

=========  ====  =============  =============  ======  =====
role       read  write_catalog  write_billing  ingest  admin
=========  ====  =============  =============  ======  =====
admin      yes   yes            yes            yes     yes
billing    yes                  yes            yes
read_only  yes
ingest                                         yes
=========  ====  =============  =============  ======  =====
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db.models import ApiKeyRow, TenantRow
from ratecard.adapters.db.repositories import key_state
from ratecard.adapters.db.scope import Mode, Role, TenantScope
from ratecard.adapters.db.uow import AdminUnitOfWork
from ratecard.core.errors import ErrorCode, Forbidden, NotFound, Problem, ValidationFailed
from ratecard.core.money import CURRENCY_EXPONENTS, RoundingMode

__all__ = [
    "PERMISSIONS",
    "Action",
    "IssuedKey",
    "Mode",
    "Principal",
    "Role",
    "TenancyService",
    "TenantSettings",
    "allowed",
    "hash_secret",
]

SECRET_PREFIX = "rk_"
_SECRET_BYTES = 32
_SHOWN_CHARS = 6  # random characters kept in the displayed prefix
#: ``last_used_at`` is refreshed at most this often, so authentication is not a write per call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: How long a process goes on trusting what it read of an API key (`TenancyService.known`): a
#: key revoked through another process (another API worker, the CLI) is refused by this one
#: at most this long after; revoked through this one, at once.
KEY_TRUST_NS = 1_000_000_000
_KEYS_KNOWN_AT_MOST = 10_000
#: The test clock moves at most this far in one step (a bound on replay work).
MAX_CLOCK_ADVANCE = timedelta(days=3653)
PRORATION_CONVENTIONS = ("daily", "by_second", "monthly", "calendar")


class Action(StrEnum):
    READ = "read"
    WRITE_CATALOG = "write_catalog"
    WRITE_BILLING = "write_billing"
    INGEST = "ingest"
    ADMIN = "admin"


PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.BILLING: frozenset({Action.READ, Action.WRITE_BILLING, Action.INGEST}),
    Role.READ_ONLY: frozenset({Action.READ}),
    Role.INGEST: frozenset({Action.INGEST}),
}


def allowed(role: Role, action: Action) -> bool:
    return action in PERMISSIONS[role]


@dataclass(frozen=True, slots=True)
class TenantSettings:
    default_currency: str = "USD"
    timezone: str = "UTC"
    rounding_mode: RoundingMode = RoundingMode.HALF_UP
    proration_convention: str = "daily"
    net_terms_days: int = 30
    invoice_number_prefix: str = "INV"
    branding: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        problems = []
        if self.default_currency not in CURRENCY_EXPONENTS:
            problems.append(
                Problem(ErrorCode.UNKNOWN_CURRENCY, "unknown currency", "default_currency")
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem(ErrorCode.INVALID_VALUE, "unknown time zone", "timezone"))
        if self.rounding_mode not in tuple(RoundingMode):
            problems.append(Problem(ErrorCode.INVALID_VALUE, "unknown mode", "rounding_mode"))
        if self.proration_convention not in PRORATION_CONVENTIONS:
            problems.append(
                Problem(
                    ErrorCode.INVALID_VALUE,
                    f"must be one of {', '.join(PRORATION_CONVENTIONS)}",
                    "proration_convention",
                )
            )
        if not 0 <= self.net_terms_days <= 365:
            problems.append(Problem(ErrorCode.INVALID_VALUE, "must be 0..365", "net_terms_days"))
        prefix = self.invoice_number_prefix
        if not (1 <= len(prefix) <= 20 and prefix.replace("-", "").isalnum()):
            problems.append(
                Problem(
                    ErrorCode.INVALID_VALUE,
                    "1-20 letters, digits or dashes",
                    "invoice_number_prefix",
                )
            )
        if problems:
            raise ValidationFailed(problems)

    @classmethod
    def of(cls, row: TenantRow) -> TenantSettings:
        return cls(
            default_currency=row.default_currency,
            timezone=row.timezone,
            rounding_mode=RoundingMode(row.rounding_mode),
            proration_convention=row.proration_convention,
            net_terms_days=row.net_terms_days,
            invoice_number_prefix=row.invoice_number_prefix,
            branding=dict(row.branding),
        )


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new API key. ``secret`` exists only here: it is never stored and never shown again."""

    key_id: str
    secret: str = field(repr=False)
    prefix: str
    mode: Mode
    role: Role


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant, mode and role an API key resolves to."""

    tenant_id: str
    mode: Mode
    role: Role
    key_id: str

    @property
    def scope(self) -> TenantScope:
        return TenantScope(self.tenant_id, self.mode)

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TenancyService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._monotonic_ns = monotonic_ns
        # hash of a secret -> (its principal, when it was read); see `known`
        self._known: dict[str, tuple[Principal, int]] = {}

    def _uow(self, actor: str, *, read_only: bool = False) -> AdminUnitOfWork:
        return AdminUnitOfWork(self._sessions, actor=actor, clock=self._clock, read_only=read_only)

    def create_tenant(
        self, name: str, settings: TenantSettings | None = None, *, actor: str = "system"
    ) -> TenantRow:
        settings = settings or TenantSettings()
        if not name.strip() or len(name) > 200:
            raise ValidationFailed([Problem(ErrorCode.INVALID_VALUE, "1-200 characters", "name")])
        settings.validate()
        with self._uow(actor) as uow:
            tenant = uow.tenants.add(
                TenantRow(
                    name=name.strip(),
                    default_currency=settings.default_currency,
                    timezone=settings.timezone,
                    rounding_mode=str(settings.rounding_mode),
                    proration_convention=settings.proration_convention,
                    net_terms_days=settings.net_terms_days,
                    invoice_number_prefix=settings.invoice_number_prefix,
                    branding=dict(settings.branding),
                    created_at=self._clock.now(),
                )
            )
            uow.commit()
            return tenant

    def get_tenant(self, tenant_id: str) -> TenantRow:
        with self._uow("system", read_only=True) as uow:
            return uow.tenants.get(tenant_id)

    def update_settings(
        self, tenant_id: str, settings: TenantSettings, *, actor: str, name: str | None = None
    ) -> None:
        settings.validate()
        if name is not None and not (name.strip() and len(name) <= 200):
            raise ValidationFailed([Problem(ErrorCode.INVALID_VALUE, "1-200 characters", "name")])
        with self._uow(actor) as uow:
            tenant = uow.tenants.get(tenant_id)
            if name is not None:
                tenant.name = name.strip()
            tenant.default_currency = settings.default_currency
            tenant.timezone = settings.timezone
            tenant.rounding_mode = str(settings.rounding_mode)
            tenant.proration_convention = settings.proration_convention
            tenant.net_terms_days = settings.net_terms_days
            tenant.invoice_number_prefix = settings.invoice_number_prefix
            tenant.branding = dict(settings.branding)
            uow.commit()

    def create_api_key(
        self, tenant_id: str, mode: Mode, role: Role, *, actor: str, name: str = ""
    ) -> IssuedKey:
        head = f"{SECRET_PREFIX}{Mode(mode)}_"
        secret = head + secrets.token_urlsafe(_SECRET_BYTES)
        prefix = secret[: len(head) + _SHOWN_CHARS]
        with self._uow(actor) as uow:
            uow.tenants.get(tenant_id)
            row = uow.keys.add(
                ApiKeyRow(
                    tenant_id=tenant_id,
                    mode=Mode(mode),
                    role=Role(role),
                    name=name,
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    created_at=self._clock.now(),
                )
            )
            uow.commit()
            return IssuedKey(row.id, secret, prefix, row.mode, row.role)

    def authenticate(self, secret: str) -> Principal | None:
        """The principal for a live, unrevoked key; ``None`` for anything else."""
        if not secret.startswith((f"{SECRET_PREFIX}live_", f"{SECRET_PREFIX}test_")):
            return None
        if len(secret) > 200:
            return None
        now = self._clock.now()
        hashed = hash_secret(secret)
        # Read without the write lock; write `last_used_at` (at most once a minute) apart.
        key = key_state(self._sessions.kw["bind"], hashed)
        if key is None or key.revoked_at is not None:
            return None
        principal = Principal(key.tenant_id, key.mode, key.role, key.id)
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            with self._uow("system:auth") as uow:
                row = uow.keys.by_secret_hash(hashed)
                if row is None or row.revoked_at is not None:
                    return None
                row.last_used_at = now
                uow.commit()
        if len(self._known) >= _KEYS_KNOWN_AT_MOST:
            self._known = {}
        self._known[hashed] = (principal, self._monotonic_ns())
        return principal

    def known(self, secret: str) -> Principal | None:
        """The principal of a key this service authenticated less than `KEY_TRUST_NS` ago,
        without reading the store; None when it must be read (`authenticate`).

        Every request of the API names its key, and reading it cost a statement and a hop to a
        worker thread: a ``GET`` of a customer took 5.4–5.8 ms of CPU in the app with them,
        4.1–4.5 ms without (three interleaved pairs on this project's 2-core machine).
        """
        found = self._known.get(hash_secret(secret))
        if found is None or self._monotonic_ns() - found[1] >= KEY_TRUST_NS:
            return None
        return found[0]

    def revoke_api_key(
        self,
        tenant_id: str,
        key_id: str,
        *,
        actor: str,
        modes: tuple[Mode, ...] = (Mode.LIVE, Mode.TEST),
    ) -> ApiKeyRow:
        """Revoke a key of ``tenant_id`` in one of ``modes``; any other key id is `NotFound`."""
        with self._uow(actor) as uow:
            row = uow.keys.get(tenant_id, key_id)
            if row.mode not in modes:
                raise NotFound(f"API key {key_id} not found")
            if row.revoked_at is None:
                row.revoked_at = self._clock.now()
                uow.commit()
            self._known = {h: k for h, k in self._known.items() if k[0].key_id != key_id}
            return row

    def get_api_key(self, tenant_id: str, key_id: str) -> ApiKeyRow:
        with self._uow("system") as uow:
            return uow.keys.get(tenant_id, key_id)

    def list_api_keys(
        self, tenant_id: str, modes: tuple[Mode, ...], *, limit: int, after_id: str | None
    ) -> list[ApiKeyRow]:
        """``limit`` keys of the tenant in ``modes``, by id, after ``after_id``."""
        with self._uow("system", read_only=True) as uow:
            return uow.keys.list_for(tenant_id, modes, limit=limit, after_id=after_id)

    # --- the test clock: test mode's "now" ---------------------------------------------------

    def now_for(self, principal: Principal) -> datetime:
        """The instant "now" means for ``principal``: the real clock, or the test clock."""
        if principal.mode is Mode.LIVE:
            return self._clock.now()
        with self._uow("system:clock", read_only=True) as uow:
            frozen = uow.tenants.get(principal.tenant_id).test_clock_at
        return frozen or self._clock.now()

    def advance_test_clock(self, tenant_id: str, to_at: datetime, *, actor: str) -> datetime:
        """Move the tenant's test clock to ``to_at`` (never backwards); it stays there."""
        with self._uow(actor) as uow:
            tenant = uow.tenants.get(tenant_id)
            current = tenant.test_clock_at or self._clock.now()
            if to_at < current:
                raise ValidationFailed(
                    [
                        Problem(
                            ErrorCode.INVALID_VALUE,
                            f"the test clock is at {current.isoformat()} and never runs backwards",
                            "body.to",
                        )
                    ]
                )
            if to_at - current > MAX_CLOCK_ADVANCE:
                raise ValidationFailed(
                    [Problem(ErrorCode.INVALID_VALUE, "at most ten years at once", "body.to")]
                )
            tenant.test_clock_at = to_at
            uow.commit()
            return to_at

    def authorize(self, principal: Principal, action: Action, *, target: str | None = None) -> None:
        """Raise `Forbidden` (after auditing the attempt) unless the role allows ``action``."""
        if allowed(principal.role, action):
            return
        with self._uow(principal.actor) as uow:
            uow.record(
                principal.tenant_id,
                "auth.denied",
                "api_key",
                principal.key_id,
                mode=principal.mode,
                after={"role": str(principal.role), "action": str(action), "target": target},
            )
            uow.commit()
        raise Forbidden(f"role {principal.role} may not {action}")
