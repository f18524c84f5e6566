"""``ratecard run-demo``, ``ratecard plans apply`` and ``ratecard serve`` against a SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ratecard.adapters.db.engine import make_engine
from ratecard.adapters.db.models import EventRow
from ratecard.cli import app
from ratecard.web.app import create_app
from tests.e2e.live import free_port, gone, wait_until

SRC = Path(__file__).resolve().parents[2] / "src"

runner = CliRunner()


def test_run_demo_seeds_a_tenant_and_prints_a_working_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = runner.invoke(app, ["run-demo", "--database-url", url, "--no-serve"])
    assert result.exit_code == 0, result.output
    secret = next(
        line.split(": ", 1)[1] for line in result.output.splitlines() if line.startswith("API key")
    )
    assert "http://127.0.0.1:8000/docs" in result.output
    engine = make_engine(url)
    try:
        auth = {"Authorization": f"Bearer {secret}"}
        with TestClient(create_app(engine)) as client:
            subs = client.get("/v1/subscriptions", headers=auth)
            assert subs.status_code == 200 and len(subs.json()["data"]) == 3
            for sub in subs.json()["data"]:  # every plan bills the calls of its period
                (report,) = client.get(
                    f"/v1/customers/{sub['customer_id']}/usage", headers=auth
                ).json()["subscriptions"]
                (calls,) = report["meters"]
                assert (calls["charge_code"], calls["meter"]) == ("calls", "api_calls")
                assert 150 <= int(calls["quantity"]) < 1500, calls
        with engine.connect() as connection:
            per_customer = connection.execute(
                sa.select(EventRow.customer_id, sa.func.count()).group_by(EventRow.customer_id)
            ).all()
        # A month of usage for each of the three demo customers, through ingestion.
        assert len(per_customer) == 3
        assert all(300 <= count < 1500 for _, count in per_customer)
    finally:
        engine.dispose()


def test_plans_apply_diffs_and_adds_versions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    demo = runner.invoke(app, ["run-demo", "--database-url", url, "--no-serve"])
    tenant = next(line.split(": ")[1] for line in demo.output.splitlines() if "demo tenant" in line)
    plans = {
        "plans": [
            {
                "code": "pro",
                "name": "Pro",
                "currency": "USD",
                "charges": [
                    {"code": "base", "model": "flat", "amount": "120.00"},
                    {
                        "code": "seats",
                        "model": "per_unit",
                        "source": "seats",
                        "unit_price": "12.00",
                    },
                ],
            },
            {
                "code": "new",
                "currency": "USD",
                "charges": [
                    {"code": "base", "model": "flat", "amount": "5.00"},
                    {"code": "calls", "model": "per_unit", "meter": "api_calls", "unit_price": "1"},
                    {"code": "gpu", "model": "per_unit", "meter": "gpu_hours", "unit_price": "2"},
                ],
            },
        ]
    }
    path = tmp_path / "plans.yaml"
    path.write_text(yaml.safe_dump(plans))
    args = ["plans", "apply", str(path), "--tenant", tenant, "--database-url", url]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "pro: new version" in dry.output and "new: new plan" in dry.output
    assert '-  "amount": "100.00"' in dry.output.replace("      ", "  ") or "100.00" in dry.output
    assert "dry run: nothing changed" in dry.output
    missing = "warning: plan new bills meter gpu_hours, which does not exist: its events are "
    assert missing in dry.output  # named, not refused: meters are the tenant's to define
    assert "bills meter api_calls" not in dry.output  # the demo has that one
    applied = runner.invoke(app, args)
    assert applied.exit_code == 0 and missing in applied.output, applied.output
    assert "applied meter" not in applied.output  # a native document implies no meter
    assert "applied pro v2 (published)" in applied.output, applied.output
    assert "applied new v1 (published)" in applied.output
    again = runner.invoke(app, args)
    assert "nothing to apply" in again.output and "pro: unchanged" in again.output
    path.write_text(yaml.safe_dump({"plans": [{"code": "bad", "currency": "XXX", "charges": []}]}))
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    assert "plans[0].currency" in failed.output and "plans[0].charges" in failed.output


def _meter_codes(url: str, headers: dict[str, str]) -> list[str]:
    engine = make_engine(url)
    try:
        with TestClient(create_app(engine)) as client:
            listed = client.get("/v1/meters", headers=headers).json()["data"]
    finally:
        engine.dispose()
    return sorted(m["code"] for m in listed)


def test_plans_apply_accepts_the_brief_template(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    demo = runner.invoke(app, ["run-demo", "--database-url", url, "--no-serve"])
    tenant = next(line.split(": ")[1] for line in demo.output.splitlines() if "demo tenant" in line)
    secret = next(
        line.split(": ", 1)[1] for line in demo.output.splitlines() if line.startswith("API key")
    )
    template = Path(__file__).parents[1] / "data" / "seed_template.json"
    path = tmp_path / "template.json"
    path.write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    args = ["plans", "apply", str(path), "--tenant", tenant, "--database-url", url]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "enterprise_v2: new plan" in dry.output and "dry run: nothing changed" in dry.output
    # the demo's api_calls meter counts; the template's would sum: kept, and said so
    assert "meter storage_gb: new (latest of value, never reset)" in dry.output
    assert "meter api_calls: exists (count), kept; the template implies sum of value" in dry.output
    headers = {"Authorization": f"Bearer {secret}"}
    assert _meter_codes(url, headers) == ["api_calls"]  # the dry run created nothing
    applied = runner.invoke(app, args)
    assert "applied meter storage_gb" in applied.output, applied.output
    assert "applied enterprise_v2 v1 (published)" in applied.output, applied.output
    again = runner.invoke(app, args).output
    assert "enterprise_v2: unchanged" in again and "nothing to apply" in again
    assert "meter storage_gb" not in again  # it exists now, as the template implies it
    engine = make_engine(url)
    try:
        with TestClient(create_app(engine)) as client:
            got = client.get("/v1/plans/enterprise_v2/versions/1", headers=headers)
            meters = {
                m["code"]: m for m in client.get("/v1/meters", headers=headers).json()["data"]
            }
            event = {
                "id": "gb-1",
                "type": "storage_gb",
                "customer": "acme",
                "properties": {"value": "1200"},
            }
            stored = client.post("/v1/events", json=event, headers=headers)
    finally:
        engine.dispose()
    storage = meters["storage_gb"]
    assert (storage["aggregation"], storage["value_field"], storage["reset"]) == (
        "latest",
        "value",
        "never",
    )
    assert meters["api_calls"]["aggregation"] == "count"  # kept as it was
    assert (stored.status_code, stored.json()["accepted"]) == (200, 1), stored.text
    assert got.status_code == 200, got.text
    document = got.json()["document"]
    charges = {c["code"]: c for c in document["charges"]}
    assert charges["api_calls"]["model"] == "volume"
    assert [t["unit_price"] for t in charges["api_calls"]["tiers"]] == [
        "0.0005",
        "0.0004",
        "0.0003",
    ]
    assert (charges["storage_gb"]["model"], charges["storage_gb"]["unit_price"]) == (
        "per_unit",
        "0.10",
    )
    assert document["commitments"][0]["minimum_amount"] == "5000.00"
    # A template with a problem is refused, naming the field; nothing is applied.
    path.write_text('{"planId": "broken", "currency": "USD", "features": []}', encoding="utf-8")
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1 and "plans[0].features" in failed.output, failed.output


def _children_named(parent: int, name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                head, tail = stat.read().rsplit(")", 1)
        except OSError:
            continue
        if head.partition("(")[2] == name and int(tail.split()[1]) == parent:
            found.append(int(pid))
    return found


def test_serve_with_a_writer_process_stores_events_and_stops_it_on_ctrl_c(tmp_path: Path) -> None:
    """On a SQLite file ``ratecard serve`` starts a ``ratecard-writer`` child by default
    (``RATECARD_INGEST_WRITER=auto``), events sent over HTTP are stored through it, and Ctrl-C
    (SIGINT to the whole process group, as a terminal sends it) stops both cleanly."""
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    demo = runner.invoke(app, ["run-demo", "--database-url", url, "--no-serve"])
    secret = next(
        line.split(": ", 1)[1] for line in demo.output.splitlines() if line.startswith("API key")
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("RATECARD_INGEST_WRITER", None)  # the default
    ratecard = str(Path(sys.executable).with_name("ratecard"))  # the console script
    command = [ratecard, "serve", "--database-url", url]
    server = subprocess.Popen(
        [*command, "--port", str(port)], env=env, start_new_session=True, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(base), seconds=30)
        writers = _children_named(server.pid, "ratecard-writer")
        assert len(writers) == 1  # started with the app, before it took traffic
        headers = {"Authorization": f"Bearer {secret}"}
        customers = httpx.get(f"{base}/v1/customers", headers=headers).json()["data"]
        events = [
            {"id": f"serve-{i}", "type": "api_calls", "customer": customers[0]["external_id"]}
            for i in range(3)
        ]
        body = httpx.post(f"{base}/v1/events", json=events + events[:1], headers=headers).json()
        assert [r["status"] for r in body["results"]] == ["accepted"] * 3 + ["duplicate"]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr.decode()
    wait_until(lambda: all(gone(pid) for pid in writers), seconds=30)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                sa.select(sa.func.count()).where(EventRow.event_id.like("serve-%"))
            ).scalar_one()
        assert stored == 3
    finally:
        engine.dispose()


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
