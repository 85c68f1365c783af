"""``caravan demo``: storefront orders driven through the running system, with a summary;
optionally marketplace-platform orders too, pushed by the platform simulator."""

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from caravan import output
from caravan.platform_cli import put_mapping
from caravan.system import simulator
from services.platform.simulator import SECRET_VARIABLE
from shared import days
from shared.addresses import local_url
from shared.api import bearer_headers
from shared.events.envelope import CloudEvent, new_event
from shared.events.orders import (
    Buyer,
    OrderLine,
    OrderRequested,
    PaymentRequest,
)
from shared.events.registry import parse_record
from shared.kafka_security import client_kwargs
from shared.messaging import kafka_admin
from shared.messaging.relay import stopped_within
from shared.seed import SeedFile
from shared.settings import Settings
from shared.topics import EventType, Topic

KAFKA_ANSWER_SECONDS = 5.0  # how long the demo waits for Kafka to say it is still there
# Having read nothing for this long while it follows its orders, the demo asks Kafka whether
# it is still there (its consumer reads nothing from a Kafka gone, and says nothing of it).
QUIET_SECONDS = 2.0
# Where the demo was when Kafka went away (its red line says so).
SENDING = "while the demo sent its orders, before it acknowledged them all"
FOLLOWING = "while the demo followed its orders"


@dataclass
class Patience:
    """How long the demo follows its orders: ``seconds`` from when it starts waiting, and
    ``seconds`` again from each order it sees end. A deadline from the start alone (a
    minute) ended a run of 6,000 orders with 1,450 still pending, the system working through
    them all the while; waiting for the orders that still end, it ends when none has ended
    for ``seconds``, at any size of run."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    _ended: int = field(default=0, init=False)
    _until: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._until = self.clock() + self.seconds

    def lasts(self, ended: int) -> bool:
        """Whether to go on waiting, ``ended`` orders seen to end so far."""
        now = self.clock()
        if ended > self._ended:
            self._ended, self._until = ended, now + self.seconds
        return now < self._until


@dataclass(frozen=True)
class Outcome:
    order_ref: str
    status: str
    reason: str | None


def _in_season(seed: SeedFile, today: date) -> set[str]:
    return {lot.sku for lot in seed.lots if lot.available_from <= today <= lot.best_before}


def cannot_drive(seed: SeedFile, today: date) -> str | None:
    """Why demo orders cannot be made from ``seed`` on ``today``, if they cannot."""
    if not seed.buyers:
        return "the seed file has no buyers to place demo orders"
    if not {p.sku for p in seed.products} & _in_season(seed, today):
        return f"no product of the seed file has a lot in season on {today.isoformat()}"
    return None


def demo_orders(seed: SeedFile, count: int, run_id: str, today: date) -> list[OrderRequested]:
    """``count`` orders from the seed's buyers and in-season products, plus one order for an
    out-of-season product (when the seed has one) to show a cancellation. The seed must be
    able to make them (:func:`cannot_drive`)."""
    refused = cannot_drive(seed, today)
    if refused is not None:
        raise ValueError(refused)
    rng = random.Random(run_id)
    in_season = _in_season(seed, today)
    with_lots = {lot.sku for lot in seed.lots}
    sellable = [p.sku for p in seed.products if p.sku in in_season]
    off_season = [p.sku for p in seed.products if p.sku in with_lots - in_season]
    orders = []
    for i in range(count):
        buyer = rng.choice(seed.buyers)
        skus = rng.sample(sellable, k=min(len(sellable), rng.randint(1, 2)))
        if off_season and i == count - 1:
            skus = [off_season[0]]
        microloan = rng.random() < 0.5
        orders.append(
            OrderRequested(
                order_ref=f"DEMO-{run_id}-{i:04d}",
                buyer=Buyer(id=buyer.id, phone=buyer.phone, locale=buyer.locale),
                lines=[OrderLine(sku=s, quantity=rng.randint(1, 3)) for s in skus],
                payment=PaymentRequest(
                    method="microloan" if microloan else "prepaid",
                    term_months=rng.choice([3, 6]) if microloan else None,
                ),
            )
        )
    return orders


async def run_demo(
    bootstrap: str,
    seed: SeedFile,
    count: int = 20,
    timeout: float = 60.0,
    console: Console | None = None,
) -> list[Outcome]:
    """Publish ``count`` orders as a storefront would and follow each to its terminal event,
    until none has ended for ``timeout`` seconds (:class:`Patience`). None (``--orders 0``,
    to push platform orders alone) is no storefront run: no bar of 0/0, no empty summary."""
    if count == 0:
        return []
    console = console or output.console
    run_id = uuid.uuid4().hex[:6]
    source = "storefront/caravan-demo"
    orders = demo_orders(seed, count, run_id, days.today())
    refs = {o.order_ref for o in orders}

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client_kwargs()
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **client_kwargs()
    )
    outcomes: dict[str, Outcome] = {}
    handed: list[asyncio.Future[Any]] = []  # each order's delivery, as the producer took it
    stopped_by: BaseException | None = None
    try:  # both closed, started or not (one that failed to start is still open)
        await consumer.start()
        await producer.start()
        partitions = await kafka_admin.cluster_metadata(consumer)
        tps = [
            TopicPartition(Topic.ORDER_EVENTS.value, p)
            for p in partitions.partitions_for_topic(Topic.ORDER_EVENTS.value) or []
        ]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        for order in orders:
            event = new_event(order, source=source, correlation_id=order.order_ref)
            delivery = await producer.send(
                Topic.ORDER_REQUESTS.value, event.to_json(), key=order.order_ref.encode()
            )
            handed.append(delivery)
        await _flushed(producer, consumer)
        ref_of: dict[str, str] = {}
        columns = (TextColumn("orders"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("orders", total=len(orders))
            patience = Patience(timeout)
            heard = time.monotonic()
            while len(outcomes) < len(orders) and patience.lasts(len(outcomes)):
                batch = await consumer.getmany(timeout_ms=200)
                if batch:
                    heard = time.monotonic()
                elif time.monotonic() - heard >= QUIET_SECONDS:
                    await _kafka_answers(consumer, FOLLOWING)
                    heard = time.monotonic()
                for records in batch.values():
                    for record in records:
                        _follow(record.value, refs, ref_of, outcomes)
                progress.update(task, completed=len(outcomes))
        if len(outcomes) < len(orders):
            await _kafka_answers(consumer, FOLLOWING)
    except (asyncio.CancelledError, KafkaConnectionError) as exc:  # Ctrl-C, SIGTERM; Kafka away
        stopped_by = exc
        raise
    finally:
        # A producer holding orders Kafka has not taken waits for it in its stop: bounded, and
        # not waited for at all once no broker answered (Kafka away: closed at once).
        away = 0.0 if isinstance(stopped_by, KafkaConnectionError) else None
        try:
            await stopped_within({asyncio.ensure_future(producer.stop()): producer}, away)
            await _stop(consumer)
        finally:  # said once stopped: an order its stop delivered is said sent
            if stopped_by is not None:
                sent = _acknowledged(handed)
                unacknowledged = len(handed) - sent
                _stopped(console, "orders", sent, len(orders), outcomes, unacknowledged)
    for order in orders:
        outcomes.setdefault(order.order_ref, Outcome(order.order_ref, "pending", None))
    result = [outcomes[o.order_ref] for o in orders]
    _summary(console, result)
    return result


async def _flushed(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
    """Wait until Kafka has taken the orders ``producer`` holds, asking it every
    :data:`QUIET_SECONDS` meanwhile whether it is still there (:func:`_kafka_answers`).
    aiokafka's idempotent producer never gives up an order, so with Kafka gone before it
    answered (killed as it took them) the demo waited for ever, and stopped (Ctrl-C) it waited
    again in its producer's stop."""
    flushing = asyncio.ensure_future(producer.flush())
    try:
        while not (await asyncio.wait({flushing}, timeout=QUIET_SECONDS))[0]:
            await _kafka_answers(consumer, SENDING)
    finally:
        flushing.cancel()


def _acknowledged(handed: list[asyncio.Future[Any]]) -> int:
    """How many of the orders ``handed`` to the producer Kafka acknowledged (their delivery's
    result): an order handed over is not sent until then, and Kafka gone before it answered
    may or may not have it."""
    return sum(1 for d in handed if d.done() and not d.cancelled() and d.exception() is None)


async def _kafka_answers(consumer: AIOKafkaConsumer, stage: str) -> None:
    """Raise :class:`KafkaConnectionError` if no broker answers ``consumer`` within
    :data:`KAFKA_ANSWER_SECONDS`, saying it went away at ``stage`` (:data:`SENDING`,
    :data:`FOLLOWING`): orders not seen to end because Kafka went away (its consumer reads
    nothing, and says nothing of it), not because a service did not end them. Kafka is asked
    again meanwhile (a broker restarting comes back)."""
    failed: KafkaError | None = None
    try:
        async with asyncio.timeout(KAFKA_ANSWER_SECONDS):
            while True:
                try:
                    await consumer.topics()  # a metadata request
                    return
                except KafkaError as exc:
                    failed = exc  # a broker refused, or none is left to ask
                await asyncio.sleep(0.5)
    except TimeoutError as exc:
        went = f"it went away {stage}: no broker answers"
        raise KafkaConnectionError(went) from failed or exc


async def _stop(consumer: AIOKafkaConsumer) -> None:
    """Stop ``consumer``. aiokafka's stop (0.14) raises CancelledError when Kafka went away: its
    fetcher's close cancels a fetch waiting out its retry backoff and awaits it (not asked for,
    aio-libs/aiokafka#647), and ``caravan demo`` ended in that traceback. Only a cancellation of
    the demo's own (Ctrl-C, SIGTERM) goes on; the stop the error cut short is finished."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        await consumer._client.close()


def _stopped(
    console: Console,
    what: str,
    sent: int,
    total: int,
    outcomes: dict[str, Outcome],
    unacknowledged: int = 0,
    verb: str = "sent",
    by: str = "Kafka",
) -> None:
    """One line for a demo stopped before its summary: what it had sent (or pushed) and seen
    end, and how many more it handed on that were not acknowledged (``by`` Kafka, or the
    platform adapter: its answer to the simulator's push not back yet)."""
    ended = Counter(o.status for o in outcomes.values())
    shown = ", ".join(f"{n} {status}" for status, n in sorted(ended.items())) or "none"
    unsaid = f"; {unacknowledged} not acknowledged by {by}" if unacknowledged else ""
    console.print(f"stopped: {sent} of {total} {what} {verb}{unsaid}; ended so far: {shown}")


def _follow(
    value: bytes | None, refs: set[str], ref_of: dict[str, str], out: dict[str, Outcome]
) -> None:
    try:
        parsed = parse_record(Topic.ORDER_EVENTS, value)
    except Exception:
        return
    data = parsed.data.model_dump()
    kind = parsed.envelope.type
    ref = data.get("order_ref")
    if ref not in refs:
        return
    if kind == EventType.ORDER_CONFIRMED:
        out[ref] = Outcome(ref, "confirmed", None)
    elif kind == EventType.ORDER_CANCELLED:
        out[ref] = Outcome(ref, "cancelled", data["reason"])
    elif kind == EventType.ORDER_REJECTED:
        out[ref] = Outcome(ref, "rejected", "invalid")
    elif kind == EventType.ORDER_PLACED:
        ref_of[data["order_id"]] = ref


async def run_platform_demo(
    settings: Settings,
    seed: SeedFile,
    app: str,
    count: int = 5,
    timeout: float = 60.0,
    console: Console | None = None,
) -> list[Outcome]:
    """Push ``count`` orders from the platform simulator (started here, for the configured
    ``app``) through the running adapter, and follow them until the platform is told (none
    told for ``timeout`` seconds: :class:`Patience`)."""
    console = console or output.console
    config = settings.platform_apps[app]
    port = httpx.URL(config.api_url).port or 80
    adapter = local_url(settings.http_host, settings.platform_http_port)
    run_id = uuid.uuid4().hex[:6]
    orders = demo_orders(seed, count, run_id, days.today())
    args = ["--app", app, "--sign-method", config.sign_method]
    args += ["--callback", f"{adapter}/platform/{app}/push"]
    refs = {o.order_ref.replace("DEMO-", "MKT-") for o in orders}
    outcomes: dict[str, Outcome] = {}
    auth = bearer_headers(settings.api_token())
    pushed = pushing = 0  # pushing: a push sent, its answer not back (the adapter may have it)
    try:
        # The secret in its environment, not its command line: `ps` shows every user that.
        secret = {SECRET_VARIABLE: config.secret.get_secret_value()}
        async with simulator("services.platform.simulator", port, *args, env=secret) as sim:
            # As `caravan platform map-sku --unchecked` and `map-buyer` map them: the seed's
            # products were just loaded.
            for product in seed.products:
                sku = {"sku": product.sku}
                await _map(adapter, app, "sku", f"MKT-{product.sku}", sku, headers=auth)
            for buyer in seed.buyers:
                given = {"buyer_id": buyer.id, "phone": buyer.phone}
                given |= {"locale": buyer.locale} if buyer.locale else {}  # else the seeded
                await _map(adapter, app, "buyer", f"nick-{buyer.id}", given, headers=auth)
            for i, order in enumerate(orders):
                platform_order = {
                    "order_id": order.order_ref.replace("DEMO-", "MKT-"),
                    "status": "paid",
                    "buyer": {"id": f"nick-{order.buyer.id}", "phone": order.buyer.phone},
                    "items": [{"sku": f"MKT-{x.sku}", "quantity": x.quantity} for x in order.lines],
                }
                (await sim.post("/orders", json=platform_order)).raise_for_status()
                path = f"/orders/{platform_order['order_id']}/push"
                pushing = 1
                _unreached(await sim.post(path, json={"kind": "full"}))
                pushed, pushing = pushed + 1, 0  # from its first push's answer on, it may be told
                if i % 2:  # pushed again, an "order changed" notice: told once all the same
                    _unreached(await sim.post(path, json={"kind": "notice"}))
            columns = (
                TextColumn("platform"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("platform", total=len(refs))
                patience = Patience(timeout)
                while len(outcomes) < len(refs) and patience.lasts(len(outcomes)):
                    told = (await sim.get("/callbacks")).json()["callbacks"]
                    for c in told:
                        if c["order_id"] in refs:
                            outcomes[c["order_id"]] = Outcome(
                                c["order_id"], c["status"], c["reason"]
                            )
                    progress.update(task, completed=len(outcomes))
                    await asyncio.sleep(0.3)
    except asyncio.CancelledError:  # Ctrl-C, SIGTERM
        by = "the platform adapter"
        _stopped(console, "platform orders", pushed, len(refs), outcomes, pushing, "pushed", by)
        _untold(console, app, pushed - len(outcomes))
        raise
    result = [outcomes.get(r, Outcome(r, "pending", None)) for r in sorted(refs)]
    _summary(console, result, title=f"Platform orders ({app}) by the outcome it was told")
    _untold(console, app, len(refs) - len(outcomes))
    return result


def _untold(console: Console, app: str, untold: int) -> None:
    """What becomes of the outcomes of the platform orders the demo pushed and did not see
    told: the adapter tells them to the simulator, which stopped with the demo."""
    if untold > 0:
        console.print(
            f"{untold} platform order(s) pushed and not told their outcome yet: the platform"
            f" adapter calls the simulator back for them, which has stopped, so their"
            f" callbacks wait (caravan platform callbacks --app {app} --status pending) and"
            " fail after CARAVAN_PLATFORM_CALLBACK_MAX_ATTEMPTS tries (about two hours);"
            " nothing else waits on them"
        )


async def _map(adapter: str, *args: Any, **kwargs: Any) -> None:
    """A mapping made on the ``adapter`` (:func:`put_mapping`'s ``args``), called in a thread
    of its own that a Ctrl-C does not wait for: its call may wait 10 s for an answer, and
    ``asyncio.run`` waits for ``asyncio.to_thread``'s threads before it returns. The adapter
    unreachable is said so (:func:`_adapter_away`), not as the "platform API" the commands
    call it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():  # cancelled meanwhile
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            put_mapping(adapter, *args, **kwargs)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="caravan-demo-mapping", daemon=True).start()
    try:
        await done
    except output.OperatorError as exc:
        cause = exc.__cause__
        if isinstance(cause, httpx.TransportError):
            raise _adapter_away(adapter, cause) from cause
        raise


def _adapter_away(url: str, error: BaseException | str) -> output.OperatorError:
    """The platform adapter cannot be reached at ``url``: is it up? ``error`` as the
    simulator says it (``ConnectError: All connection attempts failed``)."""
    if not isinstance(error, str):
        error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return output.OperatorError(
        f"the platform adapter cannot be reached at {url} ({error}): is it up (`caravan up`)?", 2
    )


def _unreached(push: httpx.Response) -> None:
    """Raise :class:`~caravan.output.OperatorError` if the simulator's ``push`` did not reach
    the adapter (its 502: the adapter's URL and the error), naming the adapter, not the
    simulator."""
    if push.status_code == 502:
        said = push.json()
        raise _adapter_away(said["url"], said["detail"])


def _summary(
    console: Console, outcomes: list[Outcome], title: str = "Demo orders by outcome"
) -> None:
    counts = Counter((o.status, o.reason or "") for o in outcomes)
    table = output.table("status", "reason", "orders", title=title, right=("orders",))
    for (status, reason), n in sorted(counts.items()):
        table.add_row(status, reason, str(n))
    output.show(table, console)


__all__ = ["CloudEvent", "Outcome", "run_demo"]
