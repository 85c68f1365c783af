"""``/healthz`` (shared/http.py) says PostgreSQL and Kafka: a service whose Kafka has not
answered for a while says so (degraded, still 200: what it takes waits in its outbox), where
it said nothing of Kafka; PostgreSQL away is a 503."""

from types import TracebackType
from typing import Any, cast

import httpx

from shared.db import Database
from shared.http import PROBLEM, KafkaContact, create_app
from shared.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """A database that answers ``SELECT 1``, or refuses connections when ``down``."""

    def __init__(self, down: bool = False) -> None:
        self.down = down

    def connect(self) -> "FakeEngine":
        return self

    async def __aenter__(self) -> "FakeEngine":
        if self.down:
            raise ConnectionRefusedError(111, "Connect call failed")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def execute(self, *_: Any) -> None:
        return None


class FakeDatabase:
    def __init__(self, down: bool = False) -> None:
        self.engine = FakeEngine(down)


async def health(
    contact: KafkaContact, database_down: bool = False, method: str = "GET"
) -> httpx.Response:
    app = create_app("orders", cast(Database, FakeDatabase(database_down)), Settings())
    app.state.kafka_contact = contact  # as Service.serve hands it over
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
    assert answer.json() == {"status": "ok", "checks": {"database": "ok", "kafka": "ok"}}


async def test_a_service_kafka_has_not_answered_for_a_while_says_it_is_degraded() -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    clock.now += 42
    answer = await health(contact)
    assert answer.status_code == 200  # what it takes waits in its outbox: not taken away
    assert answer.json() == {
        "status": "degraded",
        "down": ["kafka"],
        "detail": "kafka: no answer for 42 s",
        "checks": {"database": "ok", "kafka": "no answer for 42 s"},
    }


async def test_a_service_whose_database_is_away_answers_503_naming_what_is_down() -> None:
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    answer = await health(contact, database_down=True)
    assert (answer.status_code, answer.headers["content-type"]) == (503, PROBLEM)
    body = answer.json()
    assert (body["title"], body["down"]) == ("Unhealthy", ["database"])
    clock.now += 42
    both = (await health(contact, database_down=True)).json()
    assert both["down"] == ["database", "kafka"]
    assert both["detail"] == "database: ConnectionRefusedError; kafka: no answer for 42 s"


async def test_a_load_balancer_may_check_with_head() -> None:
    """HEAD /healthz was 405 Method Not Allowed: a load balancer checking with HEAD took
    every service away. It answers as GET does, without a body."""
    contact = KafkaContact(silent_after=30, clock=Clock())
    assert (await health(contact, method="HEAD")).status_code == 200
    assert (await health(contact, database_down=True, method="HEAD")).status_code == 503
