"""Expected failures are codes; bugs are assertions.

Every failure a user can cause has an `ErrorCode` (snake_case, stable, documented). Validation
collects every problem at once and raises one `ValidationFailed` holding them all, each naming the
path of the field at fault, e.g.::

    >>> err = Problem(ErrorCode.INVALID_VALUE, "must be positive", "charges[0].tiers[1].up_to")
    >>> err.field
    'charges[0].tiers[1].up_to'

The web layer maps codes to RFC 9457 problem documents in one place (`web/problems.py`).

Exception tree::

    RatecardError
    ├── ValidationFailed        (one or more Problems, each with a field path)
    ├── NotFound
    ├── Conflict                (idempotency key reuse, duplicate, state conflicts)
    ├── InvalidTransition       (subscription state machine)
    └── Forbidden
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_VALUE = "invalid_value"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_TYPE = "invalid_type"
    FLOAT_NOT_ALLOWED = "float_not_allowed"
    CURRENCY_MISMATCH = "currency_mismatch"
    UNKNOWN_CURRENCY = "unknown_currency"
    INVALID_PERIOD = "invalid_period"
    TIERS_NOT_CONTIGUOUS = "tiers_not_contiguous"
    UNKNOWN_CHARGE_MODEL = "unknown_charge_model"
    QUANTITY_ABOVE_LAST_TIER = "quantity_above_last_tier"
    NOT_APPLICABLE = "not_applicable"
    INVALID_TRANSITION = "invalid_transition"
    SUBSCRIPTION_ALREADY_CANCELED = "subscription_already_canceled"
    SUBSCRIPTION_ENDED = "subscription_ended"
    SUBSCRIPTION_PAUSED = "subscription_paused"
    SUBSCRIPTION_ALREADY_PAUSED = "subscription_already_paused"
    SUBSCRIPTION_NOT_PAUSED = "subscription_not_paused"
    SUBSCRIPTION_PAST_DUE = "subscription_past_due"
    SUBSCRIPTION_NOT_PAST_DUE = "subscription_not_past_due"
    SUBSCRIPTION_NOT_ACTIVE = "subscription_not_active"
    SUBSCRIPTION_CANCEL_ALREADY_SCHEDULED = "subscription_cancel_already_scheduled"
    SUBSCRIPTION_NOT_SCHEDULED_TO_CANCEL = "subscription_not_scheduled_to_cancel"
    SUBSCRIPTION_IN_MINIMUM_TERM = "subscription_in_minimum_term"
    COMMAND_OUT_OF_ORDER = "command_out_of_order"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    ALREADY_EXISTS = "already_exists"
    PLAN_VERSION_NOT_PUBLISHED = "plan_version_not_published"
    PLAN_VERSION_IN_USE = "plan_version_in_use"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"
    RATE_LIMITED = "rate_limited"
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL_ERROR = "internal_error"
    UNKNOWN_TAX_JURISDICTION = "unknown_tax_jurisdiction"
    INVALID_WATERFALL_ORDER = "invalid_waterfall_order"
    NEGATIVE_INVOICE = "negative_invoice"
    MALFORMED_BODY = "malformed_body"
    BATCH_TOO_LARGE = "batch_too_large"
    UNKNOWN_CUSTOMER = "unknown_customer"
    UNKNOWN_METER = "unknown_meter"
    EVENT_TOO_OLD = "event_too_old"
    EVENT_IN_FUTURE = "event_in_future"
    LATE_EVENT = "late_event"
    ENTITLEMENT_STORE_UNAVAILABLE = "entitlement_store_unavailable"
    EVENT_BUFFER_UNAVAILABLE = "event_buffer_unavailable"
    INGESTION_BUSY = "ingestion_busy"  # the writer's queue is full: retry after a moment
    STORE_DISK_FAILED = "store_disk_failed"  # an fsync failed: ingestion stops until a restart


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located by a path such as `charges[0].model`."""

    code: ErrorCode
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{where}{self.message} ({self.code})"


class RatecardError(Exception):
    """Base of every expected failure; carries a code and, where it applies, a field path."""

    code: ErrorCode = ErrorCode.INVALID_VALUE

    def __init__(self, message: str, *, code: ErrorCode | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    @property
    def problems(self) -> tuple[Problem, ...]:
        return (Problem(self.code, self.message, self.field),)


class ValidationFailed(RatecardError):
    """One or more problems with an input, all reported at once."""

    def __init__(self, problems: Iterable[Problem]):
        self._problems = tuple(problems)
        assert self._problems, "ValidationFailed needs at least one problem"
        first = self._problems[0]
        super().__init__(
            "; ".join(str(p) for p in self._problems), code=first.code, field=first.field
        )

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self._problems


class NotFound(RatecardError):
    code = ErrorCode.NOT_FOUND


class Conflict(RatecardError):
    code = ErrorCode.CONFLICT


class InvalidTransition(RatecardError):
    code = ErrorCode.INVALID_TRANSITION


class Forbidden(RatecardError):
    code = ErrorCode.FORBIDDEN


def invalid(message: str, field: str | None = None) -> ValidationFailed:
    """Shorthand for a single-problem validation failure."""
    return ValidationFailed([Problem(ErrorCode.INVALID_VALUE, message, field)])
