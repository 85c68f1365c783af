"""``/healthz`` (shared/http.py) says PostgreSQL and Kafka: a service whose Kafka has not
answered for a while says so (degraded, still 200: what it takes waits in its outbox), where
it said nothing of Kafka; PostgreSQL away is a 503. It says a consumer or an outbox relay
stalled (shared/stall.py) as degraded too, where it said "ok" whatever waited."""

from types import TracebackType
from typing import Any, cast

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url

from shared.db import Database
from shared.db.engine import REFUSALS, REFUSED_LATELY_SECONDS, connecting, retried_fault
from shared.http import PROBLEM, RETRY_SECONDS, KafkaContact, create_app
from shared.settings import Settings
from shared.stall import OUTBOX, Stalls
from tests.unit.conftest import Clock, said

ALL_OK = {"database": "ok", "kafka": "ok", "consumer": "ok", "relay": "ok"}


def degraded(check: str, said: str) -> dict[str, Any]:
    """The body of a 200 naming ``check`` alone, saying ``said``."""
    return {
        "status": "degraded",
        "down": [check],
        "detail": f"{check}: {said}",
        "checks": ALL_OK | {check: said},
    }


class FakeEngine:
    """A database that answers ``SELECT 1``, or refuses connections when ``down``."""

    url = make_url("postgresql+asyncpg://caravan@db.example:5433/caravan")

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.error: Exception | None = None  # what it raises when down, if not a refusal

    def connect(self) -> "FakeEngine":
        return self

    async def __aenter__(self) -> "FakeEngine":
        if self.down and self.error is not None:
            raise self.error
        if self.down:
            raise connecting(ConnectionRefusedError(111, "Connect call failed"), "db.example:5433")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def execute(self, *_: Any) -> None:
        return None


class FakeDatabase:
    """A database whose ``SELECT 1`` answers as ``engine`` does, its pool ``full`` or not,
    and some of the service's sessions waiting for a lock (``waits``) or none."""

    def __init__(self, down: bool = False) -> None:
        self.engine = FakeEngine(down)
        self.full: str | None = None
        self.waits: str | None = None  # what lock_waits says: none of its sessions waits

    async def answers(self, within: float) -> None:
        async with self.engine.connect() as conn:
            await conn.execute("SELECT 1")

    async def lock_waits(self, within: float) -> str | None:
        return self.waits

    def busy(self) -> str | None:
        return self.full


async def health(
    contact: KafkaContact,
    database_down: bool = False,
    method: str = "GET",
    consumer: Stalls | None = None,
    outbox: Stalls | None = None,
) -> httpx.Response:
    app = serving(contact, FakeDatabase(database_down), consumer, outbox)
    return await ask(app, method)


def serving(
    contact: KafkaContact,
    database: FakeDatabase,
    consumer: Stalls | None = None,
    outbox: Stalls | None = None,
) -> FastAPI:
    app = create_app("orders", cast(Database, database), Settings())
    # As Service.serve hands them over.
    app.state.kafka_contact = contact
    app.state.consumer_stalls = consumer or Stalls(contact.clock)
    app.state.outbox_stalls = outbox or Stalls(contact.clock)
    return app


async def ask(app: FastAPI, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        return await client.request(method, "/healthz")


def test_kafka_is_silent_only_past_the_limit_and_until_it_answers_again() -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    clock.now += 30
    assert contact.silence() is None
    clock.now += 12
    assert contact.silence() == 42
    contact.heard()
    assert contact.silence() is None


async def test_a_service_that_heard_from_kafka_lately_is_healthy() -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    clock.now += 29  # a quiet service: no order, but its lag samples answered
    answer = await health(contact)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "checks": ALL_OK}


async def test_a_service_kafka_has_not_answered_for_a_while_says_it_is_degraded() -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    clock.now += 42
    answer = await health(contact)
    assert answer.status_code == 200  # what it takes waits in its outbox: not taken away
    assert answer.json() == degraded("kafka", "no answer for 42 s")


class Late:
    """A service's event loop that was ``seconds`` late lately (as ``LoopLag`` says)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def lately(self) -> float:
        return self.seconds

    def since(self, began: float) -> float:
        return self.seconds


async def test_kafka_unheard_while_the_service_itself_was_held_is_said_its_own() -> None:
    """A service frozen a minute (``kill -STOP``) and thawed said ``kafka: no answer for 66
    s`` for seconds, of a Kafka that had answered all along: its samples could not run. Its
    own loop late by most of the silence, it says so; late a little, Kafka's silence stands."""
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    clock.now += 66
    app = serving(contact, FakeDatabase())
    app.state.loop_lag = Late(60.0)
    said = (
        "not asked for 66 s: this service's event loop was 60 s late (the process held:"
        " stopped, swapped out or short of CPU), not Kafka silent"
    )
    assert (await ask(app)).json() == degraded("kafka", said)
    app.state.loop_lag = Late(5.0)
    assert (await ask(app)).json() == degraded("kafka", "no answer for 66 s")


async def test_a_service_whose_database_is_away_answers_503_naming_what_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    answer = await health(contact, database_down=True)
    assert (answer.status_code, answer.headers["content-type"]) == (503, PROBLEM)
    body = answer.json()
    assert (body["title"], body["down"]) == ("Unhealthy", ["database"])
    clock.now += 42
    both = (await health(contact, database_down=True)).json()
    assert both["down"] == ["database", "kafka"]
    # It said "database: ConnectionRefusedError", naming neither PostgreSQL nor why; where
    # is for the logs, not for anyone who asks.
    away = "cannot reach PostgreSQL (Connection refused)"
    assert both["detail"] == f"database: {away}; kafka: no answer for 42 s"
    assert both["checks"]["database"] == away
    logged = [r.getMessage() for r in caplog.records if r.name == "shared.http"]
    assert "/healthz: cannot reach PostgreSQL at db.example:5433 (Connection refused)" in logged


async def test_a_load_balancer_polling_in_an_outage_gets_a_line_a_minute_not_one_a_poll(
    caplog: pytest.LogCaptureFixture, faults: Clock
) -> None:
    """Each failing check logged its warning: a load balancer polling every few seconds
    through an outage wrote a line a poll, in every service. It is PostgreSQL away, the
    retried fault the loops and requests meet (shared/logs.py Faults): said once, then once
    a minute saying how many were not; PostgreSQL answering ends it in one line, and the
    next outage is said at once."""
    database = FakeDatabase(down=True)
    app = serving(KafkaContact(silent_after=30, clock=faults), database)
    for _ in range(5):
        assert (await ask(app)).status_code == 503
        faults.now += 15
    database.engine.down = False
    assert (await ask(app)).status_code == 200
    assert (await ask(app)).status_code == 200
    database.engine.down = True
    assert (await ask(app)).status_code == 503
    away = "/healthz: cannot reach PostgreSQL at db.example:5433 (Connection refused)"
    assert said(caplog, "shared.http") == [
        ("WARNING", away),
        ("WARNING", f"{away} (3 more like it not logged; the first 60 s ago)"),
        (
            "INFO",
            "PostgreSQL at db.example:5433 answers again, 75 s after it was first found away"
            " (0 warnings of it not logged since the last that was)",
        ),
        ("WARNING", away),
    ]


async def test_a_fault_that_is_not_transient_is_a_line_a_minute_too(
    caplog: pytest.LogCaptureFixture, faults: Clock
) -> None:
    """A login refused is no retried fault of the loops' (each said, as a bug's): polled by a
    load balancer, it is one line a minute all the same, keyed by its words."""
    database = FakeDatabase(down=True)
    refused = asyncpg.InvalidPasswordError('password authentication failed for user "caravan"')
    database.engine.error = refused
    app = serving(KafkaContact(silent_after=30, clock=faults), database)
    for _ in range(3):
        assert (await ask(app)).status_code == 503
    assert len(said(caplog, "shared.http")) == 1, said(caplog, "shared.http")


async def test_postgresql_away_says_when_to_ask_again_a_login_refused_does_not() -> None:
    """The 503 of PostgreSQL away gave no ``Retry-After``, as the requests' 503 did: a client
    of /healthz had no word of when to ask again. One that no wait mends (a login refused)
    gives none."""
    contact = KafkaContact(silent_after=30, clock=Clock())
    away = await health(contact, database_down=True)
    assert (away.status_code, away.headers.get("retry-after")) == (503, str(RETRY_SECONDS))
    database = FakeDatabase(down=True)
    refused = asyncpg.InvalidPasswordError('password authentication failed for user "caravan"')
    database.engine.error = refused
    answer = await ask(serving(contact, database))
    assert (answer.status_code, answer.headers.get("retry-after")) == (503, None)
    assert answer.json()["down"] == ["database"]


async def test_a_load_balancer_may_check_with_head() -> None:
    """HEAD /healthz was 405 Method Not Allowed: a load balancer checking with HEAD took
    every service away. It answers as GET does, without a body."""
    contact = KafkaContact(silent_after=30, clock=Clock())
    assert (await health(contact, method="HEAD")).status_code == 200
    assert (await health(contact, database_down=True, method="HEAD")).status_code == 503


def stalled(clock: Clock, queue: str, position: int, waiting: int, seconds: float) -> Stalls:
    """Stalls whose ``queue`` has had ``waiting`` at ``position`` for ``seconds``, sampled
    every 5 s meanwhile."""
    stalls = Stalls(clock)
    start = clock.now
    clock.now -= seconds
    while clock.now < start:
        stalls.sampled({queue: (position, waiting)})
        clock.now += 5
    clock.now = start
    return stalls


async def test_a_consumer_with_records_waiting_and_none_handled_is_named_degraded() -> None:
    """A handler blocked on a lock, a member that stopped fetching: the records wait in
    Kafka, lost to nobody, and the HTTP API works (200)."""
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    consumer = stalled(clock, "orders.events.v1[1]", 40, 3, 75)
    answer = await health(contact, consumer=consumer)
    assert answer.status_code == 200
    said = "3 records waiting on orders.events.v1[1], none handled for 75 s"
    assert answer.json() == degraded("consumer", said)
    consumer.sampled({"orders.events.v1[1]": (41, 2)})  # one handled
    assert (await health(contact, consumer=consumer)).json()["status"] == "ok"


async def test_a_stall_of_a_handler_waiting_for_a_lock_names_who_holds_it() -> None:
    """A handler waiting for a lock logs nothing: the check says the service's sessions
    waiting and the holder's pid, where it sent operations to a silent log."""
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    database = FakeDatabase()
    database.waits = "1 of its sessions waits for a lock (for 74 s), held by PostgreSQL session 42"
    app = serving(contact, database, stalled(clock, "orders.events.v1[1]", 40, 3, 75))
    answer = await ask(app)
    said = f"3 records waiting on orders.events.v1[1], none handled for 75 s; {database.waits}"
    assert answer.json() == degraded("consumer", said)
    database.waits = None  # the lock released, the stall not yet moved: the stall alone
    assert (await ask(app)).json()["checks"]["consumer"] == said.split("; ")[0]


async def test_an_outbox_whose_oldest_row_waits_with_none_published_is_named_degraded() -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    outbox = stalled(clock, OUTBOX, 1001, 12, 61)
    answer = await health(contact, outbox=outbox)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["status"], body["down"]) == ("degraded", ["relay"])
    assert body["checks"]["relay"] == "12 outbox rows unsent, none published for 61 s"


async def test_a_backlog_younger_than_the_setting_or_moving_is_healthy() -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    young = stalled(clock, "orders.events.v1[1]", 40, 3, 55)  # the default is 60 s
    assert (await health(contact, consumer=young)).json()["status"] == "ok"
    moving = Stalls(clock)
    for position in range(1000, 2000, 50):  # 100 s of a backlog the relay works through
        moving.sampled({OUTBOX: (position, 5000)})
        clock.now += 5
    contact.heard()
    assert (await health(contact, outbox=moving)).json()["status"] == "ok"


async def test_stalls_are_not_said_while_kafka_or_postgresql_is_away() -> None:
    """Nothing moves without them, and what was sampled before is not live: only what is
    away is named."""
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    consumer = stalled(clock, "orders.events.v1[1]", 40, 3, 75)
    outbox = stalled(clock, OUTBOX, 1001, 12, 75)
    clock.now += 42
    silent = (await health(contact, consumer=consumer, outbox=outbox)).json()
    assert silent["down"] == ["kafka"]
    contact.heard()
    away = (await health(contact, database_down=True, consumer=consumer, outbox=outbox)).json()
    assert away["down"] == ["database"]
    both = (await health(contact, consumer=consumer, outbox=outbox)).json()
    assert both["down"] == ["consumer", "relay"]


async def test_the_thresholds_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARAVAN_CONSUMER_STALL_SECONDS", "2")
    monkeypatch.setenv("CARAVAN_OUTBOX_STALL_SECONDS", "100")
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    consumer = stalled(clock, "orders.events.v1[1]", 40, 3, 75)
    outbox = stalled(clock, OUTBOX, 1001, 12, 75)
    assert (await health(contact, consumer=consumer, outbox=outbox)).json()["down"] == ["consumer"]


async def test_a_database_refusing_the_work_that_lasts_is_said_degraded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session 49's drill filled PostgreSQL's disk: every service's /healthz said ok (its
    SELECT 1 answered) while every write failed, and the page with it. A refusal that lasts,
    met by the service's work (every retried database fault goes through retried_fault), is
    said degraded (a 200: it reads, and every instance shares the database), until
    REFUSED_LATELY_SECONDS pass without one; a lock not granted passes with its request."""
    clock = Clock()
    monkeypatch.setattr(REFUSALS, "clock", clock)
    contact = KafkaContact(silent_after=30, clock=clock)
    retried_fault(asyncpg.LockNotAvailableError("could not obtain lock on row in relation"))
    assert (await health(contact)).json() == {"status": "ok", "checks": ALL_OK}
    retried_fault(asyncpg.DiskFullError('could not extend file "base/1/2": No space left'))
    clock.now += 3
    answer = await health(contact)
    words = "PostgreSQL refuses the work for now: its disk is full (SQLSTATE 53100), last met"
    assert answer.status_code == 200
    assert answer.json() == degraded("database", f"{words} 3 s ago")
    clock.now += REFUSED_LATELY_SECONDS - 3
    assert (await health(contact)).json()["checks"]["database"] == f"{words} 15 s ago"
    clock.now += 1
    assert (await health(contact)).json() == {"status": "ok", "checks": ALL_OK}


async def test_a_pool_all_in_use_is_said_degraded_not_postgresql_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its SELECT 1 answered apart from the work's pool, every connection of the pool in use
    (a busy service: requests wait for one) is a 200 naming it, not the 503 a load balancer
    takes an instance away for (tests/e2e/test_db_black_hole.py has it on PostgreSQL); a
    refusal that lasts is said before it, and PostgreSQL away is a 503 whatever the pool."""
    clock = Clock()
    monkeypatch.setattr(REFUSALS, "clock", clock)
    contact = KafkaContact(silent_after=30, clock=clock)
    database = FakeDatabase()
    database.full = "all 20 connections of the pool in use"
    app = serving(contact, database)
    answer = await ask(app)
    assert answer.status_code == 200
    assert answer.json() == degraded("database", "busy: all 20 connections of the pool in use")
    # Held by statements waiting for a lock (a console's LOCK TABLE, session 62's drill): the
    # holder said, where the pool looked too small and the log said PostgreSQL did not answer.
    database.waits = "20 of its sessions wait for a lock (for 31 s), held by PostgreSQL session 42"
    said = f"busy: all 20 connections of the pool in use; {database.waits}"
    assert (await ask(app)).json() == degraded("database", said)
    database.waits = None
    retried_fault(asyncpg.DiskFullError('could not extend file "base/1/2": No space left'))
    refused = (await ask(app)).json()["checks"]["database"]
    assert refused.startswith("PostgreSQL refuses the work for now: its disk is full"), refused
    clock.now += REFUSED_LATELY_SECONDS + 1
    database.engine.down = True
    assert (await ask(app)).status_code == 503
