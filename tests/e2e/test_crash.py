"""kill -9 the server while a client streams batches; after a restart nothing is lost or doubled.

The server is a real ``uvicorn`` subprocess on the engine's database (a SQLite file, or a
PostgreSQL schema). A client thread streams batches and retries each one until it is
acknowledged; the test kills the server mid-stream and starts it again. Then every event is
stored exactly once, the retried batches report only ``accepted`` or ``duplicate``, and the
usage sum equals the sum of the distinct events' values.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ratecard.adapters.clock import SystemClock
from ratecard.adapters.db.engine import make_session_factory
from ratecard.adapters.db.scope import Mode, Role, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.periods import Period
from ratecard.services import customers, meter_catalog
from ratecard.services.metering.usage import UsageService
from ratecard.services.tenancy import TenancyService
from tests.e2e.live import free_port, wait_until
from tests.integration.conftest import Database

SRC = Path(__file__).resolve().parents[2] / "src"
BATCHES = 24
PER_BATCH = 250
KILL_AFTER = 6  # acknowledged batches before the kill


def _start(url: str, port: int, writer: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RATECARD_DATABASE_URL": url,
        "RATECARD_INGEST_WRITER": writer,
        "PYTHONPATH": str(SRC),
    }
    command = [sys.executable, "-m", "uvicorn", "ratecard.web.app:create_app", "--factory"]
    command += ["--port", str(port), "--log-level", "warning", "--lifespan", "off"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, seconds=20)
    return process


def _tenant(database: Database) -> tuple[TenantScope, str, str]:
    clock = SystemClock()
    sessions = make_session_factory(database.engine)
    tenancy = TenancyService(sessions, clock)
    row = tenancy.create_tenant("Crash")
    key = tenancy.create_api_key(row.id, Mode.LIVE, Role.INGEST, actor="test").secret
    scope = TenantScope(row.id, Mode.LIVE)
    with UnitOfWork(sessions, scope, actor="test", clock=clock) as uow:
        meter_catalog.create_meter(
            uow,
            meter_catalog.MeterInput(code="tokens", aggregation="sum", value_field="tokens"),
            now=clock.now(),
        )
    with UnitOfWork(sessions, scope, actor="test", clock=clock) as uow:
        cus = customers.create_customer(
            uow, customers.CustomerInput(external_id="acme", name="Acme"), now=clock.now()
        )
        customer_id = cus.id
    return scope, key, customer_id


def _batch(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"crash-{n}-{i}",
            "type": "tokens",
            "customer": "acme",
            "properties": {"tokens": f"{i % 7 + 1}.25"},
        }
        for i in range(PER_BATCH)
    ]


@dataclass
class Stream:
    url: str
    key: str
    acked: int = 0
    first_try: list[list[str]] = field(default_factory=list)
    retried: list[list[str]] = field(default_factory=list)
    failures: int = 0
    done: bool = False

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            for n in range(BATCHES):
                attempt = 0
                deadline = time.monotonic() + 60
                while True:
                    try:
                        response = client.post("/v1/events", json=_batch(n))
                    except httpx.TransportError:  # the server died: retry what was not acked
                        attempt += 1
                        self.failures += 1
                        assert time.monotonic() < deadline, "the server never came back"
                        time.sleep(0.02)
                        continue
                    assert response.status_code == 200, response.text
                    statuses = [r["status"] for r in response.json()["results"]]
                    (self.retried if attempt else self.first_try).append(statuses)
                    self.acked += 1
                    break
        self.done = True


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_kill_9_mid_stream_loses_and_doubles_nothing(api_database: Database, writer: str) -> None:
    """With ``process``, the kill leaves the writer process to store what it received (then
    it exits): those batches come back as duplicates when retried."""
    scope, key, customer_id = _tenant(api_database)
    port = free_port()
    server = _start(api_database.url, port, writer)
    stream = Stream(f"http://127.0.0.1:{port}", key)
    client = threading.Thread(target=stream.run)
    try:
        client.start()
        wait_until(lambda: stream.acked >= KILL_AFTER, seconds=30)
        server.send_signal(signal.SIGKILL)  # mid-stream: the client is always sending
        server.wait(10)
        server = _start(api_database.url, port, writer)
        client.join(60)
        assert stream.done
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)

    assert stream.failures >= 1, "the kill interrupted a request"
    assert all(set(s) == {"accepted"} for s in stream.first_try)
    assert all(set(s) <= {"accepted", "duplicate"} for s in stream.retried)
    with api_database.engine.connect() as connection:
        rows, distinct = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT event_id) FROM events WHERE tenant_id = :t"),
            {"t": scope.tenant_id},
        ).one()
    assert rows == distinct == BATCHES * PER_BATCH
    now = SystemClock().now()
    usage = UsageService(make_session_factory(api_database.engine), SystemClock())
    period = Period(now - timedelta(days=1), now + timedelta(days=1))
    total = usage.meter_usage(scope, customer_id, "tokens", period).total.value
    expected = BATCHES * sum(Decimal(f"{i % 7 + 1}.25") for i in range(PER_BATCH))
    assert total == expected
