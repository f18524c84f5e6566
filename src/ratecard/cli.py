"""The `ratecard` command line."""

from __future__ import annotations

import typer

from ratecard import cli_admin, cli_server

app = typer.Typer(help="Ratecard: billing and subscriptions engine.", no_args_is_help=True)
app.add_typer(cli_admin.app)
app.add_typer(cli_server.app)


@app.command()
def version() -> None:
    """Print the version."""
    from ratecard import __version__

    typer.echo(__version__)


@app.command()
def demo() -> None:
    """Run the demo (grows into the server)."""
    typer.echo("ratecard demo")
