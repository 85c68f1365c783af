"""``caravan up`` issues the machine's development token under a name made from the host's
name: a host whose name holds characters a token name may not (a Chinese name, a space)
still gets one, under a name the token rule accepts. The database is faked; the name goes
through ``tokens.issue``'s own check."""

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from caravan import tokens_cli
from shared.auth import tokens


class _Conn:
    """Enough of a connection for ``tokens.issue``: no name is taken, the insert is dropped."""

    async def scalar(self, statement: Any) -> None:
        return None

    async def execute(self, statement: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("dev.example.org", "dev.example.org"),
        ("my_box", "my_box"),
        ("生产机", "host"),
        ("农场_01", "_01"),
        ("büro pc", "b-ro-pc"),
        ("--", "host"),
        ("b" * 80, "b" * 40),
    ],
)
def test_the_development_token_is_named_after_any_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str, shown: str
) -> None:
    issued: list[str] = []

    async def issue_token(database_url: str, name: str, scopes: list[str]) -> str:
        token = await tokens.issue(_Conn(), name, scopes)  # type: ignore[arg-type]
        issued.append(name)
        return token

    monkeypatch.setattr(tokens_cli, "issue_token", issue_token)
    monkeypatch.setattr(socket, "gethostname", lambda: host)
    token, new = tokens_cli.dev_token("postgresql://unused", tmp_path / "dev-token")
    assert new and token.startswith(tokens.PREFIX)
    [name] = issued
    assert re.fullmatch(tokens.NAME_PATTERN, name), name
    assert re.fullmatch(rf"dev-{re.escape(shown)}-[0-9a-f]{{6}}", name), name
    assert (tmp_path / "dev-token").read_text() == token + "\n"
