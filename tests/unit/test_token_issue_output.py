"""``caravan tokens issue`` prints the token alone on stdout, so that
``TOKEN=$(caravan tokens issue --scope ...)`` holds the token; what it says about it goes to
stderr. The database is faked."""

import pytest
from typer.testing import CliRunner

from caravan import cli, tokens_cli

TOKEN = "cvn_" + "t" * 43


def test_the_token_is_all_that_goes_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def issue_token(database_url: str, name: str, scopes: list[str]) -> str:
        return TOKEN

    monkeypatch.setattr(tokens_cli, "issue_token", issue_token)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1/caravan")
    args = ["tokens", "issue", "--scope", "ops", "--scope", "orders:read", "--name", "desk"]
    done = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert done.stdout == TOKEN + "\n"
    assert done.stderr == "token desk (ops, orders:read), shown once:\n"
