"""Metering commands: the event worker and store maintenance (the lead wires this app in).

ratecard worker --consume nats          # ingest from the JetStream buffer until stopped
ratecard rollups rebuild TENANT METER   # re-aggregate a meter's rollups from raw events
"""

from __future__ import annotations

import asyncio

import typer

app = typer.Typer(help="Metering: event workers and rollups.", no_args_is_help=True)


@app.command()
def worker(
    consume: str = typer.Option("nats", help="Where events come from (nats)."),
    nats_url: str = typer.Option("nats://127.0.0.1:4222", envvar="RATECARD_NATS_URL"),
    database_url: str | None = typer.Option(None, envvar="RATECARD_DATABASE_URL"),
) -> None:
    """Take event batches from the buffer and write them to the store, dedup included."""
    if consume != "nats":
        raise typer.BadParameter("only 'nats' is supported", param_hint="--consume")
    from ratecard.adapters.clock import SystemClock
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.adapters.event_bus import NatsBuffer
    from ratecard.adapters.event_bus import consume as run
    from ratecard.config import get_settings
    from ratecard.services.metering.ingestion import IngestionService

    engine = make_engine(database_url or get_settings().database_url)
    service = IngestionService(make_session_factory(engine), SystemClock())

    async def main() -> None:
        buffer = await NatsBuffer.connect(nats_url)
        try:
            await run(buffer, service.ingest)
        finally:
            await buffer.close()

    asyncio.run(main())


rollups = typer.Typer(help="Usage rollups.", no_args_is_help=True)
app.add_typer(rollups, name="rollups")


@rollups.command("rebuild")
def rebuild(
    tenant_id: str,
    meter: str,
    mode: str = typer.Option("live"),
    database_url: str | None = typer.Option(None, envvar="RATECARD_DATABASE_URL"),
) -> None:
    """Drop a meter's rollups and rebuild them from raw events (one transaction)."""
    from ratecard.adapters.clock import SystemClock
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.adapters.db.scope import Mode, TenantScope
    from ratecard.adapters.db.uow import UnitOfWork
    from ratecard.config import get_settings
    from ratecard.services.metering.meters import rebuild_rollups

    engine = make_engine(database_url or get_settings().database_url)
    scope = TenantScope(tenant_id, Mode(mode))
    with UnitOfWork(
        make_session_factory(engine), scope, actor="cli:rollups", clock=SystemClock()
    ) as uow:
        written = rebuild_rollups(uow.session, scope, uow.meters.get_by_code(meter))
        uow.commit()
    typer.echo(f"{written} rollup partials written for {meter}")
