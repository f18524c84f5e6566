"""A live uvicorn server in a thread (for real client libraries) and a metered tenant on it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import uvicorn
from sqlalchemy import Engine

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.engine import make_session_factory
from ratecard.adapters.db.scope import Mode, Role
from ratecard.services.tenancy import TenancyService
from ratecard.web.app import create_app
from ratecard.web.deps import RateLimit

NOW = datetime(2024, 1, 20, 12, tzinfo=UTC)
PERIOD_START = datetime(2024, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2024, 2, 1, tzinfo=UTC)

METERED = {
    "code": "metered",
    "name": "Metered",
    "currency": "USD",
    "interval": "month",
    "charges": [
        {"code": "base", "model": "flat", "amount": "10.00"},
        {
            "code": "calls",
            "model": "graduated",
            "meter": "calls",
            "tiers": [
                {"up_to": "2", "unit_price": "0"},
                {"up_to": None, "unit_price": "0.0125"},
            ],
        },
        {"code": "tokens", "model": "per_unit", "meter": "tokens", "unit_price": "0.000125"},
    ],
    "entitlements": [
        {"feature": "api", "type": "metered", "meter": "calls", "limit": "3"},
        {"feature": "sso", "type": "boolean"},
    ],
    "publish": True,
}
BASIC = {**METERED, "code": "basic", "name": "Basic", "entitlements": []}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@dataclass
class Live:
    url: str
    engine: Engine
    clock: FixedClock


@contextmanager
def serve(engine: Engine, writer: Literal["thread", "process"] = "thread") -> Iterator[Live]:
    """The app in a uvicorn thread; `writer` is where its group commit runs."""
    clock = FixedClock(NOW)
    app = create_app(
        engine, clock, rate_limit=RateLimit(burst=10_000, per_second=10_000), ingest_writer=writer
    )
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started)
        yield Live(f"http://127.0.0.1:{port}", engine, clock)
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.wiring.metering.committer.close()  # lifespan is off: close it here


@dataclass
class Tenant:
    live: Live
    keys: dict[Role, str]
    customer_id: str
    subscription_id: str

    @property
    def ingest_key(self) -> str:
        return self.keys[Role.INGEST]

    def http(self, role: Role = Role.ADMIN) -> httpx.Client:
        return httpx.Client(
            base_url=self.live.url, headers={"Authorization": f"Bearer {self.keys[role]}"}
        )

    def get(self, path: str) -> Any:
        with self.http() as client:
            response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def post(self, path: str, body: Any, role: Role = Role.ADMIN) -> Any:
        with self.http(role) as client:
            response = client.post(path, json=body)
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        return response.json()

    def usage(self) -> dict[str, str]:
        """Quantity per meter of the customer's current period."""
        report = self.get(f"/v1/customers/{self.customer_id}/usage")
        (sub,) = report["subscriptions"]
        return {m["meter"]: m["quantity"] for m in sub["meters"]}


def metered_tenant(live: Live, name: str = "Metered", customer: str = "acme") -> Tenant:
    tenancy = TenancyService(make_session_factory(live.engine), live.clock)
    row = tenancy.create_tenant(name)
    keys = {
        role: tenancy.create_api_key(row.id, Mode.LIVE, role, actor="test").secret
        for role in (Role.ADMIN, Role.INGEST, Role.READ_ONLY)
    }
    tenant = Tenant(live, keys, "", "")
    tenant.post("/v1/meters", {"code": "calls", "aggregation": "count"})
    tenant.post("/v1/meters", {"code": "tokens", "aggregation": "sum", "value_field": "tokens"})
    tenant.post("/v1/plans", METERED)
    tenant.post("/v1/plans", BASIC)
    cus = tenant.post("/v1/customers", {"external_id": customer, "name": customer})
    sub = tenant.post(
        "/v1/subscriptions",
        {"customer_id": cus["id"], "plan_code": "metered", "start_at": PERIOD_START.isoformat()},
    )
    tenant.customer_id, tenant.subscription_id = cus["id"], sub["id"]
    return tenant
