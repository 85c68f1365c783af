"""``caravan tokens issue`` prints the token alone on stdout, so that
``TOKEN=$(caravan tokens issue --scope ...)`` holds the token; what it says about it goes to
stderr. The database is faked."""

import pytest
from typer.testing import CliRunner

from caravan import cli, tokens_cli

TOKEN = "cvn_" + "t" * 43


def issued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str] | None, str | None]]:
    """``issue_token_with_client`` faked to return :data:`TOKEN`; the bindings it was asked for."""
    asked: list[tuple[list[str] | None, str | None]] = []

    async def issue_token_with_client(
        database_url: str,
        name: str,
        scopes: list[str],
        sources: list[str] | None,
        client: str | None = None,
    ) -> tuple[str, str | None]:
        asked.append((sources, client))
        return TOKEN, client

    monkeypatch.setattr(tokens_cli, "issue_token_with_client", issue_token_with_client)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1/caravan")
    return asked


def test_the_token_is_all_that_goes_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    issued(monkeypatch)
    args = ["tokens", "issue", "--scope", "ops", "--scope", "orders:read", "--name", "desk"]
    done = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert done.stdout == TOKEN + "\n"
    assert done.stderr == "token desk (ops, orders:read), shown once:\n"


def test_a_bound_token_is_issued_with_its_sources_and_said_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--own-orders`` binds a token to the orders it places over HTTP; each ``--source``
    adds a source's orders (and binds it alike); neither leaves it unbound (None)."""
    asked = issued(monkeypatch)
    base = ["tokens", "issue", "--scope", "orders:read", "--name", "shop"]
    said = []
    for more in (
        [],
        ["--own-orders"],
        ["--source", "storefront/shawan-center", "--source", "platform/t-market"],
        ["--client", "shop-2025"],
    ):
        done = CliRunner().invoke(cli.app, base + more, env={"COLUMNS": "200"})
        assert done.exit_code == 0, done.output
        assert done.stdout == TOKEN + "\n"
        said.append(done.stderr)
    sources = ["platform/t-market", "storefront/shawan-center"]
    assert asked == [(None, None), ([], None), (sources, None), ([], "shop-2025")]
    assert said == [
        "token shop (orders:read), shown once:\n",
        "token shop (orders:read; orders: own), shown once:\n",
        "token shop (orders:read; orders: own, platform/t-market, storefront/shawan-center),"
        " shown once:\n",
        "token shop (orders:read; orders: own as shop-2025), shown once:\n",
    ]
