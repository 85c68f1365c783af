"""Whatever PostgreSQL scheme DATABASE_URL is given in (``postgresql+asyncpg://``,
``postgresql://`` or ``postgres://``, as the settings take it), the commands that connect
by themselves (the audit trail of a replay or redrive, the redrives before, tokens) connect
with asyncpg: here they reach for a port nothing listens on and are refused, where a scheme
they did not know was NoSuchModuleError (a replay then applied was not on record)."""

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from caravan import tokens_cli
from caravan.ops import dlq, record
from shared.settings import asyncpg_url
from tests.harness import free_port

SCHEMES = ["postgresql+asyncpg", "postgresql", "postgres"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_any_postgresql_scheme_is_asyncpg(scheme: str) -> None:
    assert asyncpg_url(f"{scheme}://u:p@h:5/db?ssl=require") == (
        "postgresql+asyncpg://u:p@h:5/db?ssl=require"
    )


async def nothing(conn: object) -> None:
    pass


async def on_the_trail(url: str, ask: Callable[[AsyncEngine], Awaitable[object]]) -> object:
    """``ask`` of the audit trail's engine on ``url``, as a replay or a redrive opens it."""
    async with record.trail(url) as engine:
        assert engine is not None
        return await ask(engine)


CONNECTS: dict[str, Callable[[str], Awaitable[object]]] = {
    "audit trail": lambda url: on_the_trail(
        url, lambda engine: record.record(engine, "replay", True, "g on t", {})
    ),
    "closed before": lambda url: on_the_trail(url, lambda engine: dlq.closed_before(engine, [])),
    "tokens": lambda url: tokens_cli._in_tx(url, nothing),
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("command", CONNECTS)
async def test_the_commands_connect_whatever_the_scheme(command: str, scheme: str) -> None:
    with pytest.raises(ConnectionRefusedError):
        await CONNECTS[command](f"{scheme}://caravan:x@127.0.0.1:{free_port()}/caravan")
