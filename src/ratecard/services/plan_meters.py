"""The meters that plan documents bill, for ``ratecard plans apply``.

    >>> needs = meter_needs(uow, documents)                           # doctest: +SKIP
    >>> needs.create, needs.kept, needs.missing                       # doctest: +SKIP

A plan's charges and entitlements name meters by code; a plan does not create them, and an
event for a meter that does not exist is refused (or held, per the tenant's policy). The
brief's template has no meter list: each of its features implies a meter of the same key
(`plan_documents.ImpliedMeter`), which `plans apply` creates with the plans when it does not
exist yet. A meter that exists is kept as it is, also when the template implies another
definition (it is named, so the difference is seen). A native document's meters are the
tenant's own to define (`POST /v1/meters`): one that does not exist is named as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ratecard.adapters.db.models import MeterRow
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.services.meter_catalog import MeterInput
from ratecard.services.plan_documents import ImpliedMeter, from_template, native_document


@dataclass(slots=True)
class MeterNeeds:
    """What applying plan documents means for the tenant's meters."""

    create: list[MeterInput] = field(default_factory=list)  # implied by a template, absent
    kept: list[tuple[MeterRow, MeterInput]] = field(default_factory=list)  # exist, another way
    missing: list[tuple[str, str]] = field(default_factory=list)  # (plan, meter): no meter

    def lines(self) -> list[str]:
        """What `plans apply` prints of them, before the plans' diffs."""
        out = [f"meter {m.code}: new ({describe(m)})" for m in self.create]
        out += [
            f"meter {row.code}: exists ({describe(row)}), kept; the template implies "
            f"{describe(implied)}"
            for row, implied in self.kept
        ]
        out += [
            f"warning: plan {plan} bills meter {code}, which does not exist: its events are "
            f"refused (or held, per the metering policy) until it is created (POST /v1/meters)"
            for plan, code in self.missing
        ]
        return out


def describe(meter: MeterRow | MeterInput) -> str:
    """A meter's definition in a few words: ``sum of value``, ``latest of gb, never reset``,
    ``count, where region = eu, by model``. Two meters count alike when their words are
    alike."""
    what = str(meter.aggregation)
    if meter.value_field:
        what += f" of {meter.value_field}"
    if meter.reset == "never":
        what += ", never reset"
    for name, value in sorted((meter.filters or {}).items()):
        shown = " or ".join(map(str, value)) if isinstance(value, list) else value
        what += f", where {name} = {shown}"
    if meter.group_by:
        what += f", by {', '.join(map(str, meter.group_by))}"
    return what


def implied_input(implied: ImpliedMeter) -> MeterInput:
    """The meter a template's feature implies, as `meter_catalog.create_meter` takes it."""
    never = implied.reset == "never"
    return MeterInput(
        code=implied.code,
        aggregation=implied.aggregation,
        value_field=implied.value_property,
        reset="never" if never else "monthly",
        snapshot=never,
    )


def meter_needs(uow: UnitOfWork, documents: list[Any]) -> MeterNeeds:
    """The meters to create, kept and missing for `documents` (validated already:
    `plans_as_code.plan_changes`)."""
    needs = MeterNeeds()
    implied: dict[str, MeterInput] = {}
    implied_by: dict[str, str] = {}  # meter code -> the first plan implying it
    problems: list[Problem] = []
    billed: list[tuple[str, str]] = []  # (plan, meter) of every charge and entitlement
    for index, data in enumerate(documents):
        if isinstance(data, dict) and "planId" in data:
            plan = str(data["planId"])
            for meter in from_template(data).meters:
                wanted = implied.setdefault(meter.code, implied_input(meter))
                implied_by.setdefault(meter.code, plan)
                if describe(wanted) != describe(implied_input(meter)):
                    problems.append(
                        Problem(
                            ErrorCode.INVALID_VALUE,
                            f"meter {meter.code} is {describe(wanted)} in plan "
                            f"{implied_by[meter.code]} and "
                            f"{describe(implied_input(meter))} in plan {plan}",
                            f"plans[{index}].features",
                        )
                    )
        native = native_document(data)
        parts = [*native.get("charges", []), *native.get("entitlements", [])]
        billed += [(str(native["code"]), str(p["meter"])) for p in parts if p.get("meter")]
    if problems:
        raise ValidationFailed(problems)
    scope = uow.scope
    wanted_codes = {*implied, *(code for _, code in billed)}
    existing = {
        row.code: row
        for row in uow.session.scalars(
            select(MeterRow).where(
                MeterRow.tenant_id == scope.tenant_id,
                MeterRow.mode == scope.mode,
                MeterRow.code.in_(wanted_codes),
            )
        )
    }
    for code, wanted in implied.items():
        row = existing.get(code)
        if row is None:
            needs.create.append(wanted)
        elif describe(row) != describe(wanted):
            needs.kept.append((row, wanted))
    needs.missing = [
        pair for pair in dict.fromkeys(billed) if pair[1] not in existing and pair[1] not in implied
    ]
    return needs
