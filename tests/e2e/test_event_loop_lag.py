"""A service whose own event loop was too busy to hear PostgreSQL's answer in time (a long
synchronous step, a load of 25 on two cores): its ``/healthz`` said "cannot reach PostgreSQL
(no answer within 2 s)" of a database that had answered in a millisecond, and operations
looked at a healthy database. It now says how late its loop was, and ``/metrics`` shows that
lateness (``caravan_event_loop_lag_seconds``: shared/loop_lag.py); a PostgreSQL that does not
answer, or is stopped, while the loop is punctual, is said as before.

The service (inventory) runs in this process, its loop the test's; it reaches PostgreSQL
through a forwarder (tests/harness.py) the test freezes or stops, and Kafka not at all (a port
nothing listens on: it waits for it, its HTTP API served meanwhile), so that it joins no
consumer group of the session's."""

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.engine import make_url

from caravan import system
from caravan.tokens_cli import issue_token
from services.inventory.bootstrap import bootstrap
from shared.api import bearer_headers
from shared.http import HEALTH_DB_WITHIN, RETRY_SECONDS
from shared.settings import Settings
from tests.harness import forwarder, free_port

BLOCK = 3.0  # seconds the loop is held, past /healthz's bound on its SELECT 1
LATE = re.compile(
    r"this service's event loop was (\d+\.\d) s late; PostgreSQL's answer may not have been"
    rf" heard within {HEALTH_DB_WITHIN:g} s"
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


async def test_healthz_tells_its_own_late_event_loop_from_postgresql_not_answering(
    infrastructure: system.Infrastructure,
) -> None:
    """The loop held ``BLOCK`` s by a task's synchronous sleep as ``/healthz``'s ``SELECT 1``
    went out (PostgreSQL answering it at once): a 503 saying the loop was about ``BLOCK`` s
    late, and ``/metrics`` as much; the loop punctual again, a 200. PostgreSQL frozen (the
    forwarder passing nothing), then stopped (its connections closed, new ones refused): "cannot
    reach PostgreSQL", as before."""
    infra = infrastructure
    await system.prepare(infra.kafka_bootstrap, infra.database_url)
    token = await issue_token(infra.database_url, f"lag-{uuid.uuid4().hex[:6]}", ["metrics"])
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
    )
    service = bootstrap(settings)
    service.http_port = free_port()
    stop = asyncio.Event()
    serving = asyncio.create_task(service.serve(stop))
    held: list[asyncio.Task[None]] = []

    async def blocked() -> None:
        time.sleep(BLOCK)  # noqa: ASYNC251  # a long synchronous step: the loop held

    def hold_the_loop(*_: Any) -> None:  # as /healthz's SELECT 1 goes out
        held.append(asyncio.get_running_loop().create_task(blocked()))

    base = f"http://127.0.0.1:{service.http_port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers=bearer_headers(token)) as http:
            await _healthy(http)
            assert await _lag(http) < BLOCK - 1, "as late before the loop was held"
            apart = service.db.apart.sync_engine
            event.listen(apart, "before_cursor_execute", hold_the_loop, once=True)
            answer = await http.get("/healthz", timeout=BLOCK + 10)
            assert held and held[0].done(), "the loop was not held"
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == str(RETRY_SECONDS)
            said = answer.json()["checks"]["database"]
            late = LATE.fullmatch(said)
            assert late is not None, said
            assert BLOCK - 1 <= float(late[1]) < BLOCK + 2, said
            assert answer.json()["down"] == ["database"]
            assert BLOCK - 1 <= await _lag(http) < BLOCK + 2
            assert (await http.get("/healthz")).status_code == 200  # punctual again

            passing.clear()  # PostgreSQL frozen, the loop punctual: the timeout is its
            frozen = await http.get("/healthz", timeout=HEALTH_DB_WITHIN + 10)
            assert frozen.status_code == 503, frozen.text
            assert frozen.json()["checks"]["database"] == (
                f"cannot reach PostgreSQL (no answer within {HEALTH_DB_WITHIN:g} s)"
            )
            passing.set()
            await _healthy(http)

            pg.close()  # PostgreSQL stopped: its sessions ended, new ones refused
            for client in clients:
                client.close()
            stopped = await http.get("/healthz", timeout=HEALTH_DB_WITHIN + 10)
            assert stopped.status_code == 503, stopped.text
            assert stopped.json()["checks"]["database"] == (
                "cannot reach PostgreSQL (Connection refused)"
            )
    finally:
        stop.set()
        await asyncio.wait_for(serving, 60)
        pg.close()
