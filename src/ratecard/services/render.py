"""Invoices as JSON-ready dicts (amounts as decimal strings) and as readable tables."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from ratecard.core.invoicing import Invoice, InvoiceLine
from ratecard.core.money import Money
from ratecard.core.periods import Period


def _dec(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f") if value != 0 else "0"
    return text


def _money(value: Money | None) -> str | None:
    return None if value is None else value.format()


def _period(period: Period | None) -> dict[str, str] | None:
    if period is None:
        return None
    return {"start": period.start_at.isoformat(), "end": period.end_at.isoformat()}


def line_dict(line: InvoiceLine) -> dict[str, Any]:
    breakdown: dict[str, Any] = {
        "tiers": [
            {
                "description": t.description,
                "quantity": _dec(t.quantity),
                "unit_price": _dec(t.unit_price),
                "amount": _dec(t.amount),
            }
            for t in line.tiers
        ],
    }
    if line.proration is not None:
        fraction = line.proration.fraction
        breakdown["proration"] = {
            "fraction": f"{fraction.numerator}/{fraction.denominator}",
            "used": line.proration.used,
            "of": line.proration.of,
            "convention": line.proration.convention,
        }
    if line.rounding is not None:
        breakdown["rounding"] = {
            "exact": line.rounding.exact,
            "mode": line.rounding.mode.value,
            "rounded": line.rounding.rounded,
        }
    return {
        "kind": line.kind.value,
        "description": line.description,
        "charge": line.charge_code,
        "plan": line.plan_code,
        "plan_version": line.plan_version,
        "period": _period(line.period),
        "quantity": _dec(line.quantity),
        "unit_price": _dec(line.unit_price),
        "amount": line.amount.format(),
        "discount": _money(line.discount),
        "tax": _money(line.tax),
        "tax_rate_percent": _dec(line.tax_rate_percent),
        "breakdown": breakdown,
    }


def invoice_dict(invoice: Invoice) -> dict[str, Any]:
    totals = invoice.totals
    return {
        "number": invoice.number,
        "customer": invoice.customer_id,
        "subscription": invoice.subscription_id,
        "issued_at": invoice.issued_at.isoformat(),
        "issued_on": invoice.issued_at.astimezone(ZoneInfo(invoice.timezone)).date().isoformat(),
        "reason": invoice.reason.value,
        "currency": invoice.currency.code,
        "period": _period(invoice.period),
        "lines": [line_dict(line) for line in invoice.lines],
        "subtotal": totals.subtotal.format(),
        "discount": totals.discount.format(),
        "tax": totals.tax.format(),
        "total": totals.total.format(),
        "credit_notes_applied": totals.credit_notes_applied.format(),
        "prepaid_applied": totals.prepaid_applied.format(),
        "amount_due": totals.amount_due.format(),
        "notes": list(invoice.notes),
    }


def print_tables(invoices: list[Invoice], console: Console) -> None:
    for invoice in invoices:
        day = invoice.issued_at.astimezone(ZoneInfo(invoice.timezone)).date().isoformat()
        table = Table(
            title=f"{invoice.number}  {day}  {invoice.reason.value}  ({invoice.subscription_id})",
            title_justify="left",
            show_footer=False,
        )
        table.add_column("line")
        table.add_column("qty", justify="right")
        table.add_column("detail")
        table.add_column(invoice.currency.code, justify="right")
        for line in invoice.lines:
            detail = []
            if line.proration is not None:
                detail.append(f"{line.proration.used} of {line.proration.of}")
            if len(line.tiers) > 1:
                detail.append(f"{len(line.tiers)} tiers")
            table.add_row(
                line.description, _dec(line.quantity), ", ".join(detail), line.amount.format()
            )
        t = invoice.totals
        table.add_section()
        table.add_row("subtotal", "", "", t.subtotal.format())
        if not t.discount.is_zero():
            table.add_row("discount", "", "", (-t.discount).format())
        if not t.tax.is_zero():
            table.add_row("tax", "", "", t.tax.format())
        table.add_row("total", "", "", t.total.format())
        for label, value in (("credits", t.credit_notes_applied), ("prepaid", t.prepaid_applied)):
            if not value.is_zero():
                table.add_row(label, "", "", (-value).format())
        table.add_row("[b]amount due[/b]", "", "", f"[b]{t.amount_due.format()}[/b]")
        console.print(table)
        for note in invoice.notes:
            console.print(f"  note: {note}")
