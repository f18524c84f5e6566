"""Pricing as code: ``ratecard plans apply`` compares plan documents with the catalog and makes
the versions (and the meters a template implies, `plan_meters`) that differ, in one commit.

    >>> changes = plan_changes(uow, documents)                              # doctest: +SKIP
    >>> [c.describe() for c in changes]                                      # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    ValidationError,
)

from ratecard.adapters.db.models import (
    PlanRow,
    PlanVersionRow,
)
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.services.catalog import (
    PlanInput,
    check_plan,
    document_of,
    latest_version,
    new_version,
)
from ratecard.services.common import commit_unique
from ratecard.services.documents import problems_from
from ratecard.services.meter_catalog import MeterInput, add_meter
from ratecard.services.metering.lifecycle import release_held
from ratecard.services.plan_documents import load_plan, native_document

# --- pricing as code: ``ratecard plans apply`` -----------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanChange:
    """What applying one plan document does: create the plan, add a version, or nothing."""

    plan_code: str
    action: Literal["create", "new_version", "unchanged"]
    diff: str
    document: dict[str, Any]


def _pretty(document: dict[str, Any] | None) -> list[str]:
    if document is None:
        return []
    return json.dumps(document, indent=2, sort_keys=True, default=str).splitlines(keepends=True)


def plan_changes(uow: UnitOfWork, documents: list[Any]) -> list[PlanChange]:
    """Validate every document (all problems at once) and compare it with the latest version."""
    problems: list[Problem] = []
    parsed: list[PlanInput] = []
    for index, data in enumerate(documents):
        try:
            doc = PlanInput.model_validate(native_document(data, f"plans[{index}]"))
            load_plan(document_of(doc), f"plans[{index}]")
            parsed.append(doc)
        except ValidationError as error:
            problems.extend(problems_from(error, f"plans[{index}]"))
        except ValidationFailed as failed:
            problems.extend(failed.problems)
    codes = [doc.code for doc in parsed]
    for index, code in enumerate(codes):
        if codes.index(code) != index:
            problems.append(Problem(ErrorCode.INVALID_VALUE, f"plan {code} twice", "plans"))
    if problems:
        raise ValidationFailed(problems)
    changes = []
    for doc in parsed:
        document = document_of(doc)
        latest = latest_version(uow, doc.code)
        before = None if latest is None else latest.document
        if before == document:
            changes.append(PlanChange(doc.code, "unchanged", "", document))
            continue
        diff = "".join(
            difflib.unified_diff(
                _pretty(before),
                _pretty(document),
                f"{doc.code} v{latest.version}" if latest else "(none)",
                f"{doc.code} (new)" if latest is None else f"{doc.code} v{latest.version + 1}",
            )
        )
        action: Literal["create", "new_version"] = "create" if latest is None else "new_version"
        changes.append(PlanChange(doc.code, action, diff, document))
    return changes


def apply_plan_changes(
    uow: UnitOfWork,
    changes: list[PlanChange],
    *,
    publish: bool,
    now: datetime,
    new_meters: Sequence[MeterInput] = (),
) -> list[PlanVersionRow]:
    """Each changed plan gets a new version (or is created); nothing is edited in place.
    `new_meters` (those a template implies: `plan_meters`) are created in the same commit."""
    for meter in new_meters:
        add_meter(uow, meter, now=now)
    made = []
    for change in changes:
        if change.action == "unchanged":
            continue
        data = PlanInput.model_validate({**change.document, "publish": publish})
        check_plan(data)
        if change.action == "create":
            uow.plans.add(PlanRow(code=data.code, name=data.name or data.code, created_at=now))
            uow.session.flush()
            made.append(new_version(uow, data, 1, now=now))
        else:
            plan = uow.plans.get_by_code(data.code)
            plan.name = data.name or plan.code
            number = uow.plan_versions.next_version_number(data.code)
            made.append(new_version(uow, data, number, now=now))
    commit_unique(
        uow,
        " or ".join(([f"meter {m.code}" for m in new_meters]) + (["plan version"] if made else [])),
    )
    if new_meters and release_held(uow):  # events sent before their meter existed
        uow.commit()
    return made
