"""``caravan demo`` stopped (Ctrl-C, or a supervisor's SIGTERM) while it follows its orders:
it ended saying nothing (SIGTERM at once, Ctrl-C with exit 130), so whoever stopped it did not
know what it had sent. It says so in one line, and still stops at once."""

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from rich.console import Console

from caravan import demo as demo_module
from caravan import system
from caravan.checkout import REPO_ROOT
from caravan.demo import KAFKA_ANSWER_SECONDS, QUIET_SECONDS, run_demo
from caravan.infra.kafka import LocalKafka
from shared.messaging.admin import ensure_topics
from shared.messaging.relay import STOP_SECONDS
from shared.topics import Topic
from tests.conftest import own_port
from tests.e2e.test_relay_stop import is_closed
from tests.harness import System, until
from tests.unit.test_demo_seed import seed

ORDERS = 5
STOPPED_WITHIN = 10.0  # seconds: at once, on a machine shared by other runs


def demo_requests(caravan: System, before: set[str]) -> set[str]:
    """The refs of the demo's order requests in Kafka, but ``before``."""
    refs = {str(e.data.get("order_ref")) for e in caravan.log.events(Topic.ORDER_REQUESTS)}
    return {r for r in refs if r.startswith("DEMO-")} - before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_demo_stopped_says_what_it_sent_and_saw_end(
    caravan: System, sig: signal.Signals
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": caravan.infra.kafka_bootstrap,
        "DATABASE_URL": caravan.infra.database_url,
        "CARAVAN_TOKEN": caravan.token,
    }
    before = demo_requests(caravan, set())
    # The orders service stopped: no order of the demo ends, and it waits for them.
    await asyncio.to_thread(caravan.procs.stop, ["orders"])
    try:
        demo = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "caravan", "demo", "--orders", str(ORDERS)),
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        await caravan.until(
            lambda: demo_requests(caravan, before),
            "the demo's orders in Kafka",
            timeout=60,
            ready=lambda sent: len(sent) == ORDERS or demo.returncode is not None,
        )
        demo.send_signal(sig)
        out, err = await asyncio.wait_for(demo.communicate(), STOPPED_WITHIN)
    finally:
        caravan.procs.start(("orders",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)
    said = out.decode().splitlines()
    assert f"stopped: {ORDERS} of {ORDERS} orders sent; ended so far: none" in said, (
        said,
        err.decode(),
    )
    assert demo.returncode == 130, err.decode()


OWN_KAFKA_PORT = own_port("kafka", __name__)  # a broker of the test's own, to kill
DEMO_TOPICS = (Topic.ORDER_REQUESTS, Topic.ORDER_EVENTS)
# Kafka gone, the demo notices once it has read nothing for QUIET_SECONDS and no broker
# answered for KAFKA_ANSWER_SECONDS: 7 s, on a machine shared by other runs.
NOTICED_WITHIN = 30.0
# Then it closes its producer at once: it gave the producer STOP_SECONDS more to deliver to
# the Kafka it had found gone (12 s in all, where Kafka went away as it took the orders).
ENDED_WITHIN = QUIET_SECONDS + KAFKA_ANSWER_SECONDS + STOP_SECONDS


class DemoProducer:
    """The demo's producer as the test sees it (made in its place): the producers made and the
    delivery of each order handed to them; ``send`` says it is ``sending``, and then waits for
    ``go`` when given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, go: asyncio.Event | None = None) -> None:
        self.made: list[AIOKafkaProducer] = []
        self.deliveries: list[asyncio.Future[Any]] = []
        self.sending = asyncio.Event()
        watch = self

        class Watched(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                watch.made.append(self)

            async def send(self, *args: Any, **kwargs: Any) -> Any:
                watch.sending.set()
                if go is not None:
                    await go.wait()
                delivery = await super().send(*args, **kwargs)
                watch.deliveries.append(delivery)
                return delivery

        monkeypatch.setattr(demo_module, "AIOKafkaProducer", Watched)


async def test_a_demo_whose_kafka_went_away_says_what_it_sent_and_that_kafka_went_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka gone while the demo followed its orders, it ended in a traceback of
    CancelledError (aiokafka's consumer stop, its fetch cancelled in its retry backoff) and
    nothing else. It says what it sent, then that Kafka went away (the command's red line)
    as it followed them; within seconds, not at its deadline (a minute, from `caravan demo`).
    Kafka is killed once the demo has its acknowledgements (else it went away as it sent)."""
    producer = DemoProducer(monkeypatch)
    async with own_kafka(tmp_path) as (kafka, bootstrap):
        reader = AIOKafkaConsumer(
            Topic.ORDER_REQUESTS.value, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await reader.start()
        async with demo_running(bootstrap) as (demo, console):
            try:
                requests, deadline = 0, time.monotonic() + 60
                while requests < 3:
                    assert time.monotonic() < deadline, f"the demo sent {requests} of 3 in 60 s"
                    fetched = await reader.getmany(timeout_ms=1000)
                    requests += sum(len(records) for records in fetched.values())
            finally:
                await reader.stop()
            await asyncio.wait_for(asyncio.gather(*producer.deliveries), 30)  # acknowledged
            await asyncio.to_thread(kafka.kill, 0)
            killed = time.monotonic()
            line = "stopped: 3 of 3 orders sent; ended so far: none"
            await went_away(demo, console, killed, line, "while the demo followed its orders")


async def test_a_demo_whose_kafka_went_away_before_it_took_its_orders_says_so_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka gone before it acknowledged the demo's orders (killed as it took them), the demo
    waited for them to be delivered for ever, aiokafka's idempotent producer never giving one
    up, and cancelled it waited again in its producer's stop (a way for the test above to
    meet pytest's timeout: CI, once, under load). It asks Kafka meanwhile, and ends as above,
    its producer closed, but saying that Kafka acknowledged none of the orders it was handed
    (it said "3 of 3 orders sent") and went away as the demo sent them, not as it followed
    them; and without then waiting for its producer to deliver to the Kafka it found gone.
    The demo's producer here hands aiokafka its orders once Kafka is killed."""
    go = asyncio.Event()
    producer = DemoProducer(monkeypatch, go)
    async with own_kafka(tmp_path) as (kafka, bootstrap):
        async with demo_running(bootstrap) as (demo, console):
            try:
                await asyncio.wait_for(producer.sending.wait(), 60)
            finally:
                await asyncio.to_thread(kafka.kill, 0)
                killed = time.monotonic()
                go.set()
            line = "stopped: 0 of 3 orders sent; 3 not acknowledged by Kafka; ended so far: none"
            stage = "while the demo sent its orders, before it acknowledged them all"
            await went_away(demo, console, killed, line, stage)
        assert is_closed(producer.made[0])


@asynccontextmanager
async def own_kafka(tmp_path: Path) -> AsyncIterator[tuple[LocalKafka, str]]:
    """A broker of the test's own (to kill) and its bootstrap, the demo's topics made and in
    the broker's metadata; stopped after."""
    kafka = LocalKafka(tmp_path / "kafka", first_port=OWN_KAFKA_PORT)
    bootstrap = await asyncio.to_thread(kafka.start)
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await ensure_topics(bootstrap, partitions=1)
        asker = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await asker.start()
        try:
            await until(
                asker._client.fetch_all_metadata,
                "the demo's topics in the broker's metadata",
                ready=lambda known: all(known.partitions_for_topic(t.value) for t in DEMO_TOPICS),
                timeout=60,
            )
        finally:
            await asker.stop()
        yield kafka, bootstrap
    finally:
        await asyncio.to_thread(kafka.stop)


@asynccontextmanager
async def demo_running(bootstrap: str) -> AsyncIterator[tuple[asyncio.Task[object], Console]]:
    """The demo's task and what it says: no service runs, so it follows its three orders,
    none of which ends, until its deadline (far off) or until it notices Kafka gone. Still
    running after, it is cancelled (its failure said by the test, not as pytest's timeout)."""
    console = Console(file=io.StringIO(), width=200)
    demo = asyncio.create_task(run_demo(bootstrap, seed(), count=3, timeout=600, console=console))
    try:
        yield demo, console
    finally:
        if not demo.done():
            demo.cancel()
            await asyncio.wait([demo], timeout=NOTICED_WITHIN)


async def went_away(
    demo: asyncio.Task[object], console: Console, killed: float, line: str, stage: str
) -> None:
    """``demo`` ended within ``NOTICED_WITHIN`` of Kafka ``killed`` (and within
    ``ENDED_WITHIN``), saying ``line`` of what it sent and saw end, then that Kafka went away
    at ``stage``."""
    done, _ = await asyncio.wait([demo], timeout=NOTICED_WITHIN)
    assert done, (
        f"the demo still runs {NOTICED_WITHIN:g} s after Kafka went away, at:\n" + _stack_of(demo)
    )
    took = time.monotonic() - killed
    said = console.file.getvalue()  # type: ignore[attr-defined]
    failed = None if demo.cancelled() else demo.exception()
    assert (demo.cancelled(), type(failed)) == (False, KafkaConnectionError), said
    assert line in said.splitlines(), said
    assert str(failed) == f"KafkaConnectionError: it went away {stage}: no broker answers"
    assert took < ENDED_WITHIN, f"the demo ended {took:.1f} s after Kafka went away"


def _stack_of(task: asyncio.Task[object]) -> str:
    """Where ``task`` waits, each coroutine it awaits through down to what it waits for (a hang
    said where it is: pytest-timeout's stacks of the threads show only the loop's select)."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            lines.append(repr(awaited))
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)
