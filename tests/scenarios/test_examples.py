"""Every example in examples/ runs through `ratecard simulate` and matches its golden output.

The goldens in tests/golden/examples/ were checked by hand (the figures are worked out in
docs/examples.md); regenerate them with RATECARD_UPDATE_GOLDEN=1 only after checking a change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ratecard.services.documents import load_file
from ratecard.services.render import invoice_dict
from ratecard.services.simulation import simulate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden" / "examples"


def _run(path: Path) -> dict[str, Any]:
    result = simulate(load_file(path))
    return {
        "invoices": [invoice_dict(i) for i in result.invoices],
        "balances": {
            "credit": result.account.credit_balance.format(),
            "prepaid": result.account.prepaid_balance.format(),
        },
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_matches_golden(path: Path) -> None:
    actual = _run(path)
    golden = GOLDEN / f"{path.stem}.json"
    if os.environ.get("RATECARD_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", "utf-8")
    assert actual == json.loads(golden.read_text("utf-8"))


def _summary(name: str) -> list[tuple[str, list[str], str]]:
    data = _run(ROOT / "examples" / f"{name}.yaml")
    return [
        (inv["issued_on"], [line["amount"] for line in inv["lines"]], inv["amount_due"])
        for inv in data["invoices"]
    ]


def test_hybrid_upgrade_figures() -> None:
    assert _summary("hybrid-upgrade") == [
        ("2024-01-01", ["50.00"], "50.00"),
        # 5 seats: 17 of 31 days of 10.00 credited, of 25.00 charged.
        ("2024-01-15", ["-27.42", "68.55"], "41.13"),
        # 5 -> 8 seats on Business for the last 12 of 31 days.
        ("2024-01-20", ["-48.39", "77.42"], "29.03"),
        # Team usage 42,000 calls (32,000 x 0.002) and Business usage 90,000 (40,000 x 0.0015),
        # then February's 8 seats in advance; duplicate event e2 counted once.
        ("2024-02-01", ["64.00", "60.00", "200.00"], "324.00"),
    ]


def test_volume_commitment_figures() -> None:
    assert _summary("volume-api-calls") == [
        # 600,000 calls all at the 0.0003 tier; 1,500 GB latest; trued up to the 5,000.00 minimum.
        ("2024-04-01", ["180.00", "150.00", "4670.00"], "5000.00"),
        # The gauge carries over; usage beats the commitment, so no true-up.
        ("2024-05-01", ["6000.00", "150.00"], "6150.00"),
    ]


def test_annual_cancel_credit_figures() -> None:
    data = _run(ROOT / "examples" / "annual-cancel-credit.yaml")
    first, credit = data["invoices"]
    assert first["total"] == "1440.00"
    # 184 unused of 366 days of 1200.00, with 20% VAT, goes to the customer's balance.
    assert [line["amount"] for line in credit["lines"]] == ["-603.28"]
    assert (credit["tax"], credit["total"], credit["amount_due"]) == ("-120.66", "-723.94", "0.00")
    assert data["balances"]["credit"] == "723.94"


def test_currencies_round_to_their_exponent() -> None:
    assert _summary("jpy-customer") == [
        ("2024-04-01", ["4440"], "4884"),
        ("2024-04-11", ["-2960", "6907"], "4342"),
        ("2024-05-01", ["10360"], "11396"),
    ]
    assert _summary("kwd-customer") == [
        ("2024-05-01", ["4.500"], "3.825"),
        # 2 x 0.0125 + 3 x 0.0085 = 0.0505 -> 0.051; 15% off for two periods.
        ("2024-06-01", ["0.051", "4.500"], "3.868"),
    ]


def test_package_tokens_figures() -> None:
    # 5,050,001 tokens - 2,000,000 free = 4 started packages of 1,000,000 at 5.00.
    assert _summary("package-tokens") == [
        ("2024-02-01", ["29.00"], "34.51"),
        ("2024-03-01", ["20.00", "29.00"], "58.31"),
    ]
