"""Metering commands: the event worker and store maintenance (the lead wires this app in).

ratecard worker --consume nats          # ingest from the JetStream buffer until stopped
ratecard rollups rebuild TENANT METER   # re-aggregate a meter's rollups from raw events
"""

from __future__ import annotations

import asyncio
import logging

import typer

app = typer.Typer(help="Metering: event workers and rollups.", no_args_is_help=True)


@app.command()
def worker(  # noqa: PLR0917 (Typer options are parameters)
    consume: str = typer.Option("nats", help="Where events come from (nats)."),
    nats_url: str | None = typer.Option(None, envvar="RATECARD_NATS_URL"),
    database_url: str | None = typer.Option(None, envvar="RATECARD_DATABASE_URL"),
    stream: str | None = typer.Option(None, envvar="RATECARD_NATS_STREAM"),
    subject_prefix: str | None = typer.Option(None, envvar="RATECARD_NATS_SUBJECT_PREFIX"),
    durable: str = typer.Option("ratecard-ingest", help="The durable consumer's name."),
    ack_wait: int = typer.Option(
        30, min=1, max=3600, help="Seconds before an unacked batch is delivered again."
    ),
) -> None:
    """Take event batches from the buffer and write them to the store, dedup included.

    A batch is acked only after the store committed it; after a crash it comes back (once the
    ack wait passed) and its events are duplicates: each is counted once. The committed
    batches reach the alerts and the entitlement cache; the worker also announces whose usage
    changed on ``<prefix>_usage_changed``, which has every API process with the buffer on drop
    those customers' cached entitlements (in-process caches; a Redis cache the worker shares).
    """
    if consume != "nats":
        raise typer.BadParameter("only 'nats' is supported", param_hint="--consume")
    from ratecard.adapters.clock import SystemClock
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.adapters.event_bus import NatsBuffer
    from ratecard.adapters.event_bus import consume as run
    from ratecard.config import get_settings
    from ratecard.services.metering.wiring import MeteringServices

    settings = get_settings()
    engine = make_engine(database_url or settings.database_url, settings)
    metering = MeteringServices.build(
        make_session_factory(engine), SystemClock(), redis_url=settings.redis_url
    )

    async def main() -> None:
        buffer = await NatsBuffer.connect(
            nats_url or settings.nats_url,
            stream=stream or settings.nats_stream,
            subject_prefix=subject_prefix or settings.nats_subject_prefix,
        )
        try:
            # a crossing a crash left unevaluated fires now, as the API server does at start
            try:
                await asyncio.to_thread(metering.alerts.recover)
            except Exception:  # the store is down: consuming finds out, and retries
                logging.getLogger(__name__).exception("alerts recovery failed")
            await run(buffer, metering.ingestion.ingest, durable=durable, ack_wait_seconds=ack_wait)
        finally:
            await buffer.close()

    asyncio.run(main())


rollups = typer.Typer(help="Usage rollups.", no_args_is_help=True)
app.add_typer(rollups, name="rollups")


@rollups.command("rebuild")
def rebuild(
    tenant_id: str,
    meter: str,
    mode: str = typer.Option("live", help="live or test"),
    database_url: str | None = typer.Option(None, envvar="RATECARD_DATABASE_URL"),
) -> None:
    """Drop a meter's rollups and rebuild them from raw events: the events read while ingestion
    goes on, then the rollups swapped under the meter's lock."""
    from ratecard.adapters.clock import SystemClock
    from ratecard.adapters.db.engine import make_engine, make_session_factory
    from ratecard.adapters.db.models import TenantRow
    from ratecard.adapters.db.scope import Mode, TenantScope
    from ratecard.adapters.db.uow import UnitOfWork
    from ratecard.config import get_settings
    from ratecard.core.errors import NotFound, RatecardError
    from ratecard.services.metering.rebuild import rebuild_meter

    if mode not in {str(m) for m in Mode}:
        typer.echo(f"error: --mode is live or test, not {mode!r}", err=True)
        raise typer.Exit(2)
    engine = make_engine(database_url or get_settings().database_url)
    scope = TenantScope(tenant_id, Mode(mode))
    try:
        with UnitOfWork(
            make_session_factory(engine), scope, actor="cli:rollups", clock=SystemClock()
        ) as uow:
            if uow.session.get(TenantRow, tenant_id) is None:
                raise NotFound(f"tenant {tenant_id} not found")
            written = rebuild_meter(uow, uow.meters.get_by_code(meter))
            uow.commit()
    except RatecardError as error:
        for problem in error.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(f"{written} rollup partials written for {meter}")
