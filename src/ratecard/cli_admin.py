"""Operator commands: ``ratecard admin migrate`` and ``ratecard admin audit verify``.

Wire into the main CLI with ``app.add_typer(cli_admin.app, name="admin")``.

    $ ratecard admin migrate
    migrated sqlite:///./var/ratecard.db to 0001
    $ ratecard admin audit verify
    ten_3f9a...: OK (42 entries)

``audit verify`` exits 1 when any chain is broken.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ratecard.adapters.db.engine import make_engine, make_session_factory
from ratecard.adapters.db.schema import migrate as migrate_to
from ratecard.config import get_settings

app = typer.Typer(help="Operate the store: migrations and audit checks.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

UrlOption = Annotated[
    str | None, typer.Option("--database-url", help="Overrides RATECARD_DATABASE_URL.")
]


def _url(url: str | None) -> str:
    return url or get_settings().database_url


@app.command()
def migrate(database_url: UrlOption = None) -> None:
    """Upgrade the database schema to the latest revision."""
    url = _url(database_url)
    revision = migrate_to(url)
    typer.echo(f"migrated {_safe(url)} to {revision}")


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="Check one tenant (default: all).")] = None,
    database_url: UrlOption = None,
) -> None:
    """Check every tenant's audit hash chain; exit 1 and name the first broken link if any."""
    from ratecard.services import audit

    engine = make_engine(_url(database_url))
    try:
        sessions = make_session_factory(engine)
        reports = [audit.verify(sessions, tenant)] if tenant else audit.verify_all(sessions)
    finally:
        engine.dispose()
    for report in reports:
        typer.echo(str(report), err=not report.ok)
    if not reports:
        typer.echo("no tenants")
    if any(not report.ok for report in reports):
        raise typer.Exit(code=1)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
