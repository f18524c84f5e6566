"""From draft invoices to invoices: numbering, coupons, tax and credits, in time order.

Worked example — a customer with a 10.00 once-off coupon, 20% tax and 5.00 of prepaid credit;
its first draft holds one 100.00 line::

    subtotal 100.00, coupon -10.00, tax 18.00, total 108.00, prepaid -5.00, due 103.00

and the coupon is used up, the prepaid balance is 0.00 for the next invoice.

Drafts of every subscription of one customer are finalized together, ordered by instant and
then by subscription id, because coupons and credit balances are the customer's. A draft whose
lines sum below zero (a downgrade's credit exceeds its charge) becomes a credit invoice: its
negated total goes to the customer's credit balance and nothing is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from ratecard.core.billing import Draft
from ratecard.core.discounts import (
    DEFAULT_ORDER,
    AppliedCoupon,
    FeeLine,
    InvoiceTotals,
    WaterfallStep,
    compute_totals,
)
from ratecard.core.invoicing import Invoice, InvoiceLine, InvoiceTotalsView
from ratecard.core.money import Currency, Money, RoundingMode
from ratecard.core.tax import TaxRate, TaxRounding


@dataclass(frozen=True, slots=True)
class CouponGrant:
    """A coupon on the customer from `active_from`, for one subscription or (None) all."""

    applied: AppliedCoupon
    active_from: datetime
    subscription_id: str | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """What the customer carries from one invoice to the next."""

    customer_id: str
    currency: Currency
    tax_rate: TaxRate | None
    tax_note: str | None
    credit_balance: Money  # credit notes and negative invoices
    prepaid_balance: Money
    coupons: tuple[CouponGrant, ...] = ()
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class TotalsPolicy:
    rounding: RoundingMode
    tax_rounding: TaxRounding = TaxRounding.LINE
    order: tuple[WaterfallStep, ...] = DEFAULT_ORDER
    invoice_prefix: str = "INV"
    first_number: int = 1


def _view(totals: InvoiceTotals) -> InvoiceTotalsView:
    return InvoiceTotalsView(
        subtotal=totals.subtotal,
        discount=totals.discount,
        taxable=totals.taxable,
        tax=totals.tax,
        total=totals.total_incl_tax,
        credit_notes_applied=totals.credit_notes_applied,
        prepaid_applied=totals.prepaid_applied,
        amount_due=totals.amount_due,
    )


def _negated(view: InvoiceTotalsView) -> InvoiceTotalsView:
    zero = Money.zero(view.subtotal.currency)
    return InvoiceTotalsView(
        subtotal=-view.subtotal,
        discount=zero,
        taxable=-view.taxable,
        tax=-view.tax,
        total=-view.total,
        credit_notes_applied=zero,
        prepaid_applied=zero,
        amount_due=zero,
    )


def _settle(
    lines: Sequence[InvoiceLine], account: Account, at: datetime, sub_id: str, policy: TotalsPolicy
) -> tuple[InvoiceTotals, bool, list[int]]:
    """Totals for the lines; (totals, is_credit_invoice, indexes of the coupons used)."""
    cur = account.currency
    fees = [FeeLine(line.amount, account.tax_rate) for line in lines]
    zero = Money.zero(cur)
    if sum(line.amount.amount_minor for line in lines) < 0:
        positive = [FeeLine(-fee.amount, fee.tax_rate) for fee in fees]
        totals = compute_totals(
            positive,
            [],
            cur=cur,
            tax_rounding=policy.tax_rounding,
            mode=policy.rounding,
            credit_note_balance=zero,
            prepaid_balance=zero,
            order=policy.order,
        )
        return totals, True, []
    usable = [
        i
        for i, grant in enumerate(account.coupons)
        if grant.active_from <= at
        and grant.subscription_id in (None, sub_id)
        and not grant.applied.terminated
    ]
    totals = compute_totals(
        fees,
        [account.coupons[i].applied for i in usable],
        cur=cur,
        tax_rounding=policy.tax_rounding,
        mode=policy.rounding,
        credit_note_balance=account.credit_balance,
        prepaid_balance=account.prepaid_balance,
        order=policy.order,
    )
    return totals, False, usable


def finalize_drafts(
    drafts: Sequence[tuple[str, Draft]], account: Account, policy: TotalsPolicy
) -> tuple[list[Invoice], Account]:
    """Invoices for (subscription id, draft) pairs, and the account after them."""
    invoices: list[Invoice] = []
    number = policy.first_number
    for sub_id, draft in sorted(drafts, key=lambda pair: (pair[1].at, pair[0])):
        totals, is_credit, used = _settle(draft.lines, account, draft.at, sub_id, policy)
        notes: list[str] = []
        if account.tax_note and account.tax_rate is not None:
            notes.append(account.tax_note)
        if is_credit:
            view = _negated(_view(totals))
            account = replace(account, credit_balance=account.credit_balance - view.total)
            notes.append(f"{(-view.total).format()} credited to the customer's balance")
            sign = -1
        else:
            view = _view(totals)
            grants = list(account.coupons)
            for index, state in zip(used, totals.coupons, strict=True):
                grants[index] = replace(grants[index], applied=state)
            account = replace(
                account,
                coupons=tuple(grants),
                credit_balance=account.credit_balance - totals.credit_notes_applied,
                prepaid_balance=account.prepaid_balance - totals.prepaid_applied,
            )
            sign = 1
        lines = tuple(
            replace(
                line,
                discount=None if is_credit else discount,
                tax=tax if sign == 1 else -tax,
                tax_rate_percent=account.tax_rate.rate_percent if account.tax_rate else None,
            )
            for line, discount, tax in zip(
                draft.lines, totals.fee_discounts, totals.fee_taxes, strict=True
            )
        )
        invoices.append(
            Invoice(
                number=f"{policy.invoice_prefix}-{number:04d}",
                customer_id=account.customer_id,
                subscription_id=sub_id,
                currency=account.currency,
                issued_at=draft.at,
                reason=draft.reason,
                period=draft.period,
                lines=lines,
                totals=view,
                notes=tuple(notes),
                timezone=account.timezone,
            )
        )
        number += 1
    return invoices, account
