"""A service whose own event loop was too busy to hear PostgreSQL's answer in time (a long
synchronous step, a load of 25 on two cores): its ``/healthz`` said "cannot reach PostgreSQL
(no answer within 2 s)" of a database that had answered in a millisecond, and operations
looked at a healthy database. It now says how late its loop was, and ``/metrics`` shows that
lateness (``caravan_event_loop_lag_seconds``: shared/loop_lag.py); a PostgreSQL that does not
answer, or is stopped, while the loop is punctual, is said as before. So does a request whose
database work was given up (``CARAVAN_HTTP_DB_TIMEOUT_SECONDS``: shared.http.Deadline), which
said "the database did not answer within 8 s" of the same database.

The service (inventory) runs in this process, its loop the test's; it reaches PostgreSQL
through a forwarder (tests/harness.py) the test freezes or stops, and Kafka not at all (a port
nothing listens on: it waits for it, its HTTP API served meanwhile), so that it joins no
consumer group of the session's."""

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from caravan import system
from caravan.tokens_cli import issue_token
from services.inventory.bootstrap import bootstrap
from shared.api import bearer_headers
from shared.db.engine import address
from shared.http import HEALTH_DB_WITHIN, RETRY_SECONDS
from shared.runtime import Service
from shared.settings import Settings
from tests.harness import forwarder, free_port

BLOCK = 3.0  # seconds the loop is held, past /healthz's bound on its SELECT 1 and DEADLINE
DEADLINE = 2.0  # the requests' bound on their database work (the services' is 8 s)


def _late(within: float, then: str = "") -> re.Pattern[str]:
    """What is said of PostgreSQL's answer waited for ``within`` s by a loop late (its
    lateness, the group), followed by ``then``."""
    return re.compile(
        r"this service's event loop was (\d+\.\d) s late; PostgreSQL's answer may not have"
        rf" been heard within {within:g} s{re.escape(then)}"
    )


async def _healthy(http: httpx.AsyncClient) -> httpx.Response:
    """``/healthz``'s first 200, within 60 s (the service starting, a connection made again)."""
    for _ in range(120):
        try:
            answer = await http.get("/healthz")
        except httpx.TransportError:  # not listening yet
            answer = None
        if answer is not None and answer.status_code == 200:
            return answer
        await asyncio.sleep(0.5)
    raise AssertionError(f"/healthz never answered 200: {answer and answer.text}")


async def _lag(http: httpx.AsyncClient) -> float:
    page = await http.get("/metrics")
    assert page.status_code == 200, page.text
    for family in text_string_to_metric_families(page.text):
        for sample in family.samples:
            if sample.name == "caravan_event_loop_lag_seconds":
                assert sample.labels == {"service": "inventory"}, sample
                return float(sample.value)
    raise AssertionError("no caravan_event_loop_lag_seconds on /metrics")


@dataclass
class Served:
    """Inventory served in this process (its loop the test's), asked by ``http``, reaching
    PostgreSQL through a forwarder that passes bytes while ``passing`` is set."""

    service: Service
    http: httpx.AsyncClient
    passing: asyncio.Event
    pg: asyncio.Server
    clients: list[asyncio.StreamWriter]

    def stop_postgresql(self) -> None:
        """PostgreSQL stopped: its sessions ended, new ones refused."""
        self.pg.close()
        for client in self.clients:
            client.close()


@asynccontextmanager
async def _served(infra: system.Infrastructure, **more: Any) -> AsyncIterator[Served]:
    """Inventory served (``more`` settings of its), once ``/healthz`` answers 200, asked with a
    token of the scopes metrics and inventory:read."""
    await system.prepare(infra.kafka_bootstrap, infra.database_url)
    scopes = ["metrics", "inventory:read"]
    token = await issue_token(infra.database_url, f"lag-{uuid.uuid4().hex[:6]}", scopes)
    target, pg_port = make_url(infra.database_url), free_port()
    via = target.set(host="127.0.0.1", port=pg_port, query={})
    passing = asyncio.Event()
    passing.set()
    forward = forwarder("127.0.0.1", target.port or 5432, passing)
    clients: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)
        await forward(reader, writer)

    pg = await asyncio.start_server(tracked, "127.0.0.1", pg_port)
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # away: no group joined
        database_url=via.render_as_string(hide_password=False),
        **more,
    )
    service = bootstrap(settings)
    service.http_port = free_port()
    stop = asyncio.Event()
    serving = asyncio.create_task(service.serve(stop))
    base = f"http://127.0.0.1:{service.http_port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers=bearer_headers(token)) as http:
            await _healthy(http)
            yield Served(service, http, passing, pg, clients)
    finally:
        passing.set()  # its connections closed as it stops, not waited on for ever
        stop.set()
        await asyncio.wait_for(serving, 60)
        pg.close()


def _hold_the_loop(engine: AsyncEngine) -> list[asyncio.Task[None]]:
    """The loop held ``BLOCK`` s by a task's synchronous sleep (a long synchronous step) as
    ``engine``'s next statement goes out; the task, once it is made."""
    held: list[asyncio.Task[None]] = []

    async def blocked() -> None:
        time.sleep(BLOCK)  # noqa: ASYNC251  # a long synchronous step: the loop held

    def hold(*_: Any) -> None:
        held.append(asyncio.get_running_loop().create_task(blocked()))

    event.listen(engine.sync_engine, "before_cursor_execute", hold, once=True)
    return held


async def test_healthz_tells_its_own_late_event_loop_from_postgresql_not_answering(
    infrastructure: system.Infrastructure,
) -> None:
    """The loop held ``BLOCK`` s by a task's synchronous sleep as ``/healthz``'s ``SELECT 1``
    went out (PostgreSQL answering it at once): a 503 saying the loop was about ``BLOCK`` s
    late, and ``/metrics`` as much; the loop punctual again, a 200. PostgreSQL frozen (the
    forwarder passing nothing), then stopped (its connections closed, new ones refused): "cannot
    reach PostgreSQL", as before."""
    async with _served(infrastructure) as served:
        http = served.http
        assert await _lag(http) < BLOCK - 1, "as late before the loop was held"
        held = _hold_the_loop(served.service.db.apart)
        answer = await http.get("/healthz", timeout=BLOCK + 10)
        assert held and held[0].done(), "the loop was not held"
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == str(RETRY_SECONDS)
        said = answer.json()["checks"]["database"]
        late = _late(HEALTH_DB_WITHIN).fullmatch(said)
        assert late is not None, said
        assert BLOCK - 1 <= float(late[1]) < BLOCK + 2, said
        assert answer.json()["down"] == ["database"]
        assert BLOCK - 1 <= await _lag(http) < BLOCK + 2
        assert (await http.get("/healthz")).status_code == 200  # punctual again

        served.passing.clear()  # PostgreSQL frozen, the loop punctual: the timeout is its
        frozen = await http.get("/healthz", timeout=HEALTH_DB_WITHIN + 10)
        assert frozen.status_code == 503, frozen.text
        assert frozen.json()["checks"]["database"] == (
            f"cannot reach PostgreSQL (no answer within {HEALTH_DB_WITHIN:g} s)"
        )
        served.passing.set()
        await _healthy(http)

        served.stop_postgresql()
        stopped = await http.get("/healthz", timeout=HEALTH_DB_WITHIN + 10)
        assert stopped.status_code == 503, stopped.text
        assert stopped.json()["checks"]["database"] == (
            "cannot reach PostgreSQL (Connection refused)"
        )


async def test_a_request_s_503_tells_its_own_late_event_loop_from_postgresql_not_answering(
    infrastructure: system.Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop held ``BLOCK`` s by a task's synchronous sleep as ``GET /stock``'s statement
    went out (PostgreSQL answering it at once): a 503 saying the loop was about ``BLOCK`` s
    late, where it said "the database did not answer within 2 s", and its log line as much;
    the loop punctual again, a 200. PostgreSQL frozen while the loop is punctual: "the
    database did not answer within 2 s", as before."""
    more = {"http_db_timeout_seconds": DEADLINE, "auth_cache_seconds": 10.0}
    async with _served(infrastructure, **more) as served:
        http = served.http
        assert (await http.get("/stock")).status_code == 200  # the token read, kept 10 s
        held = _hold_the_loop(served.service.db.engine)
        with caplog.at_level(logging.WARNING, logger="shared.http"):
            answer = await http.get("/stock", timeout=BLOCK + 10)
        assert held and held[0].done(), "the loop was not held"
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == str(RETRY_SECONDS)
        said = answer.json()["detail"]
        late = _late(DEADLINE, "; retry").fullmatch(said)
        assert late is not None, said
        assert BLOCK - 1 <= float(late[1]) < BLOCK + 2, said
        logged = [r.getMessage() for r in caplog.records if "GET /stock: 503" in r.getMessage()]
        assert logged == [
            f"GET /stock: 503, {said.removesuffix('; retry')} (PostgreSQL at"
            f" {address(served.service.db.engine)})"
        ], logged
        assert (await http.get("/stock")).status_code == 200  # punctual again

        served.passing.clear()  # PostgreSQL frozen, the loop punctual: the timeout is its
        frozen = await http.get("/stock", timeout=DEADLINE + 10)
        assert frozen.status_code == 503, frozen.text
        assert (
            frozen.json()["detail"] == f"the database did not answer within {DEADLINE:g} s; retry"
        )
