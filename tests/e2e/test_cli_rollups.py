"""``ratecard rollups rebuild``: a meter's rollups dropped and rebuilt from raw events, on the
demo tenant's SQLite file; bad arguments are named, without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ratecard.adapters.db.engine import make_engine
from ratecard.adapters.db.models import UsageRollupRow
from ratecard.cli import app
from ratecard.web.app import create_app

runner = CliRunner()


def _demo(tmp_path: Path) -> tuple[str, str, str]:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo = runner.invoke(app, ["run-demo", "--database-url", url, "--no-serve"])
    assert demo.exit_code == 0, demo.output
    tenant = next(line.split(": ")[1] for line in demo.output.splitlines() if "demo tenant" in line)
    secret = next(
        line.split(": ", 1)[1] for line in demo.output.splitlines() if line.startswith("API key")
    )
    return url, tenant.strip(), secret


def _usage(url: str, secret: str) -> list[Any]:
    engine = make_engine(url)
    try:
        auth = {"Authorization": f"Bearer {secret}"}
        with TestClient(create_app(engine)) as client:
            customers = client.get("/v1/customers", headers=auth).json()["data"]
            return [
                client.get(f"/v1/customers/{c['id']}/usage", headers=auth).json() for c in customers
            ]
    finally:
        engine.dispose()


def _rollup_rows(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.scalar(sa.select(sa.func.count()).select_from(UsageRollupRow)) or 0
            )
    finally:
        engine.dispose()


def test_rebuild_restores_the_rollups_from_raw_events(tmp_path: Path) -> None:
    url, tenant, secret = _demo(tmp_path)
    usage, rows = _usage(url, secret), _rollup_rows(url)
    assert rows > 0 and all(u["subscriptions"][0]["meters"][0]["events"] for u in usage)
    engine = make_engine(url)
    with engine.begin() as connection:  # the rollups lost: usage would read nothing
        connection.execute(sa.delete(UsageRollupRow))
    engine.dispose()

    rebuilt = runner.invoke(app, ["rollups", "rebuild", tenant, "api_calls", "--database-url", url])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.output.strip().endswith("rollup partials written for api_calls")
    assert _rollup_rows(url) == rows
    assert _usage(url, secret) == usage


def test_bad_arguments_are_named_without_a_traceback(tmp_path: Path) -> None:
    url, tenant, _ = _demo(tmp_path)
    for args, said in (
        ([tenant, "nope"], "meter nope not found"),
        ([tenant, "api_calls", "--mode", "staging"], "--mode"),
        (["ten_nope", "api_calls"], "not found"),
    ):
        result = runner.invoke(app, ["rollups", "rebuild", *args, "--database-url", url])
        assert result.exit_code == 2, (args, result.output)
        assert said in result.output, (args, result.output)
        assert "Traceback" not in result.output
