"""What ``caravan tokens list`` prints, read at 80 columns: each token's scopes apart. The
database is faked."""

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from caravan import cli, output, tokens_cli
from shared.auth.tokens import TokenInfo


def shown(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setattr(output.console, "width", 80)
    done = CliRunner().invoke(cli.app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def test_a_tokens_scopes_are_listed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime(2026, 12, 3, 9, 12, 28, tzinfo=UTC)
    listed = [TokenInfo("desk", ["ops", "orders:read"], at, None)]

    async def in_tx(database_url: str, work: object) -> list[TokenInfo]:
        return listed

    monkeypatch.setattr(tokens_cli, "_in_tx", in_tx)
    monkeypatch.setattr(tokens_cli, "_database_url", lambda: "postgresql://caravan@db/caravan")
    assert "ops, orders:read" in shown(monkeypatch, "tokens", "list")
