"""`ratecard simulate` as a user runs it: JSON and table output, clear errors, no tracebacks."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ratecard.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_json_output_has_every_line_breakdown() -> None:
    result = runner.invoke(app, ["simulate", str(ROOT / "examples" / "hybrid-upgrade.yaml")])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    change = document["invoices"][1]
    credit = change["lines"][0]
    assert credit["kind"] == "proration_credit"
    assert credit["breakdown"]["proration"]["fraction"] == "17/31"
    assert credit["breakdown"]["rounding"] == {
        "exact": "-27.41935483870967741935…",
        "mode": "half_up",
        "rounded": "-27.42",
    }
    usage = document["invoices"][3]["lines"][0]
    assert [t["amount"] for t in usage["breakdown"]["tiers"]] == ["0", "64"]
    assert all(isinstance(inv["amount_due"], str) for inv in document["invoices"])


def test_table_output() -> None:
    path = ROOT / "examples" / "kwd-customer.yaml"
    result = runner.invoke(app, ["simulate", str(path), "--format", "table"])
    assert result.exit_code == 0, result.output
    assert "INV-0002" in result.stdout and "3.868" in result.stdout


def test_bad_scenario_names_every_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
plans:
  - code: p
    currency: USD
    charges:
      - {code: c, model: per_unit, unit_price: 1.5.0}
      - {code: d, model: graduated, meter: nope, tiers: [{up_to: 5, unit_price: "1"}]}
subscription: {plan: missing, start: "2024-01-01T00:00:00Z", quantity: -1}
end: "2023-01-01"
""",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["simulate", str(bad)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    for field in (
        "subscription.quantity",
        "end:",
        "plans[0].charges[0].unit_price",
        "plans[0].charges[1].tiers[0].up_to",
    ):
        assert field in result.stderr, field


def test_a_broken_plan_is_reported_once_not_also_as_unknown(tmp_path: Path) -> None:
    """The README's step 3: break a tier and the one problem is named; the subscription that
    names the broken plan is not also told the plan is unknown."""
    text = (ROOT / "examples" / "hybrid-upgrade.yaml").read_text(encoding="utf-8")
    broken = text.replace('up_to: 100000, unit_price: "0.002"', 'up_to: 5000, unit_price: "0.002"')
    assert broken != text
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    result = runner.invoke(app, ["simulate", str(path)])
    assert result.exit_code == 2
    problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert problems == [
        "plans[0].charges[1].tiers[1].up_to: must be above the previous tier's up_to (10000)"
        " (tiers_not_contiguous)"
    ]


def test_reference_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "plans": [
                    {
                        "code": "p",
                        "currency": "EUR",
                        "charges": [
                            {"code": "c", "model": "per_unit", "unit_price": "x"},
                            {"code": "d", "model": "sum", "meter": "nope"},
                        ],
                    },
                    {
                        "code": "q",
                        "currency": "USD",
                        "charges": [
                            {"code": "u", "model": "per_unit", "meter": "nope", "unit_price": "1"}
                        ],
                    },
                ],
                "subscription": {
                    "plan": "missing",
                    "start": "2024-01-01T00:00:00Z",
                    "changes": [
                        {"at": "2024-01-02T00:00:00Z", "action": "change_plan", "plan": "other"}
                    ],
                },
                "end": "2024-02-01T00:00:00Z",
            }
        ),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["simulate", str(bad)])
    assert result.exit_code == 2
    err = result.stderr
    for field in (
        "plans[0].charges[0].unit_price",
        "plans[0].charges[1].model",
        "plans[1].charges[0].meter",
        "subscription.plan",
        "subscription.changes[0].plan",
    ):
        assert field in err, field


def test_invalid_transition_names_the_change(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
plans: [{code: p, currency: USD, charges: [{code: c, model: flat, amount: "10"}]}]
subscription:
  plan: p
  start: "2024-01-01T00:00:00Z"
  changes:
    - {at: "2024-01-05T00:00:00Z", action: pause}
    - {at: "2024-01-06T00:00:00Z", action: pause}
end: "2024-02-01T00:00:00Z"
""",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["simulate", str(bad)])
    assert result.exit_code == 2
    assert "subscription.changes[1]" in result.stderr
    assert "subscription_already_paused" in result.stderr


@pytest.mark.parametrize("text", ["{not yaml: [", "[]", "plans: 3"])
def test_malformed_documents(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["simulate", str(bad)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_float_never_reaches_money() -> None:
    result = runner.invoke(app, ["simulate", str(ROOT / "examples" / "volume-api-calls.yaml")])
    document = json.loads(result.stdout, parse_float=Decimal)
    assert document["invoices"][0]["total"] == "5000.00"
