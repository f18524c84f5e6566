"""Serving commands: ``ratecard serve``, ``ratecard run-demo``, ``ratecard plans apply``.

Wire into the main CLI with ``app.add_typer(cli_server.app)``.

    $ ratecard serve --database-url postgresql+psycopg://ratecard@db/ratecard --port 8000
    $ ratecard run-demo                      # ./var/ratecard.db, a demo tenant, a key, the URLs
    $ ratecard plans apply plans.yaml --tenant ten_3f9a... --dry-run
    pro: new version
    --- pro v1
    +++ pro v2
    ...
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import SystemClock
from ratecard.adapters.db.engine import make_engine, make_session_factory
from ratecard.adapters.db.schema import migrate
from ratecard.adapters.db.scope import Mode, Role, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.config import Settings, get_settings
from ratecard.core.errors import RatecardError
from ratecard.services import (
    catalog,
    customers,
    meter_catalog,
    plan_meters,
    plans_as_code,
    subscriptions,
)
from ratecard.services.documents import load_file
from ratecard.services.tenancy import TenancyService

app = typer.Typer(help="Serve the API and manage plans as code.")
plans_app = typer.Typer(help="Plans as code.", no_args_is_help=True)
app.add_typer(plans_app, name="plans")

UrlOption = Annotated[
    str | None, typer.Option("--database-url", help="Overrides RATECARD_DATABASE_URL.")
]
DEMO_URL = "sqlite:///./var/ratecard.db"
DEMO_TENANT = "Demo SaaS"


def _settings(url: str | None) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"database_url": url}) if url else settings


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from ratecard.runtime import tune_gc
    from ratecard.web.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(settings, recover_alerts=True)
    tune_gc()
    uvicorn.run(app, host=host, port=port, log_level="warning")


@app.command()
def serve(
    database_url: UrlOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Migrate the store, then serve the API (JSON access logs on stderr)."""
    settings = _settings(database_url)
    migrate(settings.database_url)
    typer.echo(f"serving on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    _serve(settings, host, port)


def _calls_charge(*, free: str, unit_price: str) -> dict[str, Any]:
    """The demo plans' API calls: `free` a period included, then `unit_price` each."""
    return {
        "code": "calls",
        "model": "graduated",
        "meter": "api_calls",
        "tiers": [
            {"up_to": free, "unit_price": "0"},
            {"up_to": None, "unit_price": unit_price},
        ],
    }


# Every demo customer's plan bills its API calls, so each has a usage report to show.
DEMO_PLANS: list[dict[str, Any]] = [
    {
        "code": "starter",
        "name": "Starter",
        "currency": "USD",
        "interval": "month",
        "trial_days": 14,
        "charges": [
            {"code": "base", "model": "flat", "amount": "29.00"},
            _calls_charge(free="100", unit_price="0.003"),
        ],
        "publish": True,
    },
    {
        "code": "pro",
        "name": "Pro",
        "currency": "USD",
        "interval": "month",
        "charges": [
            {"code": "base", "model": "flat", "amount": "100.00"},
            {"code": "seats", "model": "per_unit", "source": "seats", "unit_price": "12.00"},
            _calls_charge(free="500", unit_price="0.001"),
        ],
        "publish": True,
    },
    {
        "code": "api",
        "name": "API usage",
        "currency": "USD",
        "interval": "month",
        "charges": [_calls_charge(free="100", unit_price="0.002")],
        "publish": True,
    },
]


def seed_demo(database_url: str) -> tuple[str, str]:
    """A demo tenant with plans, customers and subscriptions; returns (tenant id, API key)."""
    clock = SystemClock()
    engine = make_engine(database_url)
    try:
        sessions = make_session_factory(engine)
        tenancy = TenancyService(sessions, clock)
        tenant = tenancy.create_tenant(DEMO_TENANT, actor="system:demo")
        key = tenancy.create_api_key(tenant.id, Mode.LIVE, Role.ADMIN, actor="system:demo")
        scope = TenantScope(tenant.id, Mode.LIVE)
        now = clock.now()

        def work() -> UnitOfWork:
            return UnitOfWork(sessions, scope, actor="system:demo", clock=clock)

        with work() as uow:
            meter_catalog.create_meter(
                uow,
                meter_catalog.MeterInput(code="api_calls", name="API calls", aggregation="count"),
                now=now,
            )
        for plan in DEMO_PLANS:
            with work() as uow:
                catalog.create_plan(uow, catalog.PlanInput.model_validate(plan), now=now)
        people = [("acme", "Acme Inc.", "pro", 5), ("globex", "Globex", "starter", 1)]
        people.append(("initech", "Initech", "api", 1))
        for external_id, name, plan_code, quantity in people:
            with work() as uow:
                row = customers.create_customer(
                    uow, customers.CustomerInput(external_id=external_id, name=name), now=now
                )
            with work() as uow:
                subscriptions.create_subscription(
                    uow,
                    subscriptions.SubscriptionInput(
                        customer_id=row.id,
                        plan_code=plan_code,
                        quantity=quantity,
                        start_at=now - timedelta(days=20),
                    ),
                    now=now,
                )
        _seed_usage(sessions, clock, scope, [p[0] for p in people], now)
        return tenant.id, key.secret
    finally:
        engine.dispose()


def _seed_usage(
    sessions: sessionmaker[Session],
    clock: SystemClock,
    scope: TenantScope,
    external_ids: list[str],
    now: datetime,
) -> None:
    """A month of API calls for each demo customer, through the real ingestion path."""
    from ratecard.services.metering.ingestion import IngestionService

    rng = random.Random(2024)
    events = [
        {
            "id": f"demo-{external_id}-{n}",
            "type": "api_calls",
            "customer": external_id,
            "timestamp": (now - timedelta(minutes=rng.randrange(1, 30 * 24 * 60))).isoformat(),
            "properties": {"endpoint": rng.choice(["/search", "/embed", "/chat"])},
        }
        for external_id in external_ids
        for n in range(rng.randrange(300, 1500))
    ]
    ingestion = IngestionService(sessions, clock)
    for start in range(0, len(events), 1000):
        ingestion.ingest(scope, events[start : start + 1000], actor="system:demo")


@app.command("run-demo")
def run_demo(
    database_url: UrlOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    serve_api: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after seeding.")
    ] = True,
) -> None:
    """Migrate the SQLite store under ./var/, seed a demo tenant, print a key and serve."""
    url = database_url or DEMO_URL
    migrate(url)
    tenant_id, secret = seed_demo(url)
    base = f"http://{host}:{port}"
    typer.echo(f"demo tenant: {tenant_id}")
    typer.echo(f"API key (shown once): {secret}")
    typer.echo(f"API docs:  {base}/docs")
    typer.echo(f"OpenAPI:   {base}/openapi.json")
    typer.echo(f"health:    {base}/healthz   metrics: {base}/metrics")
    typer.echo(f'try:       curl -H "Authorization: Bearer {secret}" {base}/v1/subscriptions')
    if serve_api:
        _serve(_settings(url), host, port)


@plans_app.command("apply")
def plans_apply(
    path: Annotated[
        Path, typer.Argument(help="A YAML/JSON file: one plan, a list, or {plans: [...]}")
    ],
    *,
    tenant: Annotated[str, typer.Option(help="The tenant id.")],
    mode: Annotated[Mode, typer.Option(help="live or test data.")] = Mode.LIVE,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff; change nothing.")
    ] = False,
    publish: Annotated[
        bool, typer.Option("--publish/--draft", help="Publish new versions.")
    ] = True,
    database_url: UrlOption = None,
) -> None:
    """Show what differs from the stored latest versions, then add new plan versions."""
    data = load_file(path)
    documents = data.get("plans", data) if isinstance(data, dict) and "plans" in data else data
    if not isinstance(documents, list):
        documents = [documents]
    engine = make_engine(_settings(database_url).database_url)
    clock = SystemClock()
    try:
        sessions = make_session_factory(engine)
        TenancyService(sessions, clock).get_tenant(tenant)
        scope = TenantScope(tenant, mode)
        with UnitOfWork(sessions, scope, actor="cli:plans-apply", clock=clock) as uow:
            changes = plans_as_code.plan_changes(uow, documents)
            needs = plan_meters.meter_needs(uow, documents)
            for line in needs.lines():
                typer.echo(line)
            for change in changes:
                label = {"create": "new plan", "new_version": "new version"}.get(change.action)
                typer.echo(f"{change.plan_code}: {label or 'unchanged'}")
                if change.diff:
                    typer.echo(change.diff)
            if dry_run:
                typer.echo("dry run: nothing changed")
                return
            made = plans_as_code.apply_plan_changes(
                uow, changes, publish=publish, now=clock.now(), new_meters=needs.create
            )
        for meter in needs.create:
            typer.echo(f"applied meter {meter.code}")
        for row in made:
            typer.echo(f"applied {row.plan_code} v{row.version} ({row.status})")
        if not made and not needs.create:
            typer.echo("nothing to apply")
    except RatecardError as error:
        for problem in error.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()
