"""The `ratecard` command line."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ratecard import cli_admin, cli_metering, cli_server

app = typer.Typer(help="Ratecard: billing and subscriptions engine.", no_args_is_help=True)
app.add_typer(cli_admin.app)
app.add_typer(cli_server.app)
app.add_typer(cli_metering.app)


@app.command()
def version() -> None:
    """Print the version."""
    from ratecard import __version__

    typer.echo(__version__)


@app.command()
def examples(
    folder: Annotated[Path, typer.Option(help="Folder of scenarios.")] = Path("examples"),
) -> None:
    """Simulate every example scenario (examples/*.yaml) and print the invoices as tables."""
    from rich.console import Console

    from ratecard.services.documents import load_file
    from ratecard.services.render import print_tables
    from ratecard.services.simulation import simulate as run_simulation

    console = Console()
    for path in sorted(folder.glob("*.yaml")):
        result = run_simulation(load_file(path))
        console.rule(f"{path.name}: {result.scenario.name}")
        print_tables(list(result.invoices), console)


class OutputFormat(StrEnum):
    JSON = "json"
    TABLE = "table"


@app.command()
def simulate(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (JSON or YAML).")],
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="json (default) or table.")
    ] = OutputFormat.JSON,
) -> None:
    """Run a billing scenario through the engine and print its invoices."""
    from rich.console import Console

    from ratecard.core.errors import RatecardError
    from ratecard.services.documents import load_file
    from ratecard.services.render import invoice_dict, print_tables
    from ratecard.services.simulation import simulate as run_simulation

    try:
        result = run_simulation(load_file(scenario))
    except RatecardError as exc:
        err = Console(stderr=True)
        err.print(f"[red]{scenario}: the scenario has problems:[/red]")
        for problem in exc.problems:
            where = problem.field or "(document)"
            err.print(
                f"  {where}: {problem.message} [dim]({problem.code})[/dim]",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(2) from None
    invoices = list(result.invoices)
    if output_format is OutputFormat.TABLE:
        print_tables(invoices, Console())
        return
    document = {
        "scenario": result.scenario.name,
        "invoices": [invoice_dict(invoice) for invoice in invoices],
        "balances": {
            "credit": result.account.credit_balance.format(),
            "prepaid": result.account.prepaid_balance.format(),
        },
    }
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
