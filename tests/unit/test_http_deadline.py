"""A request's bound on its database work (shared.http.Deadline) counts neither the client's
time sending its body, nor a wait on another service (shared.http.elsewhere), nor anything
after the answer began, and gives up only what waits on
the database as the database not answering: a route stuck on anything else is its own failure
(a 500 where it runs under create_app), not told to the client as the database's. Its 503
against a frozen PostgreSQL: tests/e2e/test_db_black_hole.py."""

import asyncio

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.types import Message, Receive, Scope, Send

from shared.http import Deadline, elsewhere

BOUND = 0.2


def _bounded(app: object) -> httpx.AsyncClient:
    engine = create_async_engine("postgresql+asyncpg://caravan@db.example:5433/caravan")
    bounded = Deadline(app, seconds=BOUND, engine=engine)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=bounded), base_url="http://x")


async def _answer(send: Send, body: bytes = b"done") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_a_slow_body_is_the_client_s_time_not_the_bound_s() -> None:
    """A body whose chunks come slower than the bound: read whole, answered 200."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        got = b""
        while True:
            message: Message = await receive()
            got += message.get("body", b"")
            if not message.get("more_body"):
                break
        await _answer(send, got)

    async def chunks() -> object:
        for part in (b"a", b"b", b"c"):
            await asyncio.sleep(BOUND)
            yield part

    async with _bounded(app) as http:
        answer = await http.post("/", content=chunks())  # type: ignore[arg-type]
    assert (answer.status_code, answer.content) == (200, b"abc")


async def test_work_stuck_elsewhere_is_raised_as_it_is_not_said_the_database_s() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(10 * BOUND)  # not the database's client
        await _answer(send)

    async with _bounded(app) as http:
        with pytest.raises(TimeoutError):
            await http.get("/")


async def test_an_answer_begun_is_not_given_up() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(2 * BOUND)
        await send({"type": "http.response.body", "body": b"late"})

    async with _bounded(app) as http:
        answer = await http.get("/")
    assert (answer.status_code, answer.content) == (200, b"late")


async def test_a_wait_on_another_service_is_not_counted_and_what_was_left_still_bounds() -> None:
    """The operations page waits on the orders API (``elsewhere``), which bounds its own
    database work by the same setting and says why it gave it up: the page's bound, begun
    first, ended that wait, a 500. Longer than the bound, it is answered; the time left before
    it still bounds what follows."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(BOUND / 4)
        with elsewhere():
            await asyncio.sleep(3 * BOUND)
        if scope["path"] == "/more":
            await asyncio.sleep(BOUND)  # with the quarter before: past the bound
        await _answer(send)

    async with _bounded(app) as http:
        assert (await http.get("/")).content == b"done"
        with pytest.raises(TimeoutError):
            await http.get("/more")
