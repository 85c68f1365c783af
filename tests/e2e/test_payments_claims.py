"""The claim fence of the prepaid gateway loop (``services/payments/prepaid.py``), on real
PostgreSQL. The payments service is stopped meanwhile, so that its own loop claims nothing;
payments left due by other tests may be claimed here too, leased a minute at most.
"""

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Insert, delete, event, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.payments.adapters import ledger as ledger_store
from services.payments.adapters.gateway import ChargeResult, GatewayUnreached, NoSuchCharge
from services.payments.adapters.tables import outbox, payables, payments
from services.payments.domain import ledger
from services.payments.entrypoints.subscribers import subscriptions
from services.payments.handlers import charge_txn, void_txn
from services.payments.prepaid import (
    GATEWAY_STUCK,
    Work,
    claim_due,
    hand_back,
    mark_lost,
    payments_by_status,
    perform,
    record_voided,
)
from shared.events.envelope import new_event
from shared.events.orders import OrderCancelled
from shared.events.platform import PlatformOrderPaid
from shared.events.registry import Parsed, parse_record
from shared.logs import FAULT
from shared.messaging.uow import Tx, UnitOfWork
from shared.topics import Topic
from tests.e2e.test_payments_gateway import MALL, _reserved
from tests.harness import System, backend_pid, ref, started_waiting, until


@pytest.fixture
async def uow(caravan: System) -> AsyncIterator[UnitOfWork]:
    async with caravan.alone("payments") as uow:
        yield uow


DECADE = timedelta(days=3650)


def prepaid_row(order_id: str, status: str, **values: object) -> Insert:
    """The insert of ``order_id``'s prepaid payment of 35 yuan in ``status`` (its row as
    ``values`` say)."""
    return insert(payments).values(
        order_id=order_id,
        buyer_id="claims-buyer",
        method="prepaid",
        amount_fen=3500,
        status=status,
        **values,
    )


async def prepaid(uow: UnitOfWork, status: str, **values: object) -> str:
    """A prepaid payment of 35 yuan in ``status`` (its row as ``values`` say); its order id."""
    order_id = str(uuid.uuid4())
    async with uow.begin() as tx:
        await tx.conn.execute(prepaid_row(order_id, status, **values))
    return order_id


async def test_a_charge_one_loop_is_claiming_is_passed_over_by_another_at_once(
    caravan: System, uow: UnitOfWork
) -> None:
    """Two instances' gateway loops claiming at once: the charge the first is claiming (its
    claim not yet committed) is skipped by the second, not claimed by it too once the first
    commits: claimed twice, the buyer's card would be charged under two claims (twice, by a
    gateway that does not deduplicate). Nor does the second wait for the first to commit."""
    # Due before any other, so that a claim of one takes it first.
    order_id = await prepaid(uow, "charging", next_attempt_at=datetime.now(UTC) - DECADE)

    async def other_claim() -> list[str]:
        async with uow.begin() as tx:
            return [w.order_id for w in await claim_due(tx, 60, limit=1)]

    try:
        async with uow.begin() as tx:
            first = [w.order_id for w in await claim_due(tx, 60, limit=1)]
            ours = await backend_pid(tx.conn)
            second, without_waiting = await caravan.beside(ours, other_claim())
        assert first == [order_id]
        assert order_id not in await second
        assert without_waiting, "the other claim waited for the first's lock"
        async with uow.db.engine.connect() as conn:
            query = select(payments.c.status, payments.c.attempts)
            row = (await conn.execute(query.where(payments.c.order_id == order_id))).one()
        assert tuple(row) == ("charging", 1)
    finally:
        # Left charging, the payments service would charge it once its lease lapsed: a
        # payment of no order, money the ledger check at the session's end finds unaccounted.
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id == order_id))


async def test_a_void_answered_twice_is_recorded_once(uow: UnitOfWork) -> None:
    # A void call that outlived its lease was made again; both calls are answered: the
    # second finds the payment voided already, and says nothing more.
    order_id = await prepaid(uow, "voiding", attempts=2)
    work = Work(order_id, "voiding", "claims-buyer", 3500, 2)
    recorded = []
    for _ in range(2):
        async with uow.begin() as tx:
            recorded.append(await record_voided(tx, work))
    assert recorded == [True, False]
    async with uow.db.engine.connect() as conn:
        status = await conn.scalar(select(payments.c.status).where(payments.c.order_id == order_id))
        values = (
            await conn.execute(
                select(outbox.c.value).where(outbox.c.topic == Topic.PAYMENT_EVENTS.value)
            )
        ).scalars()
    events = [orjson.loads(value) for value in values]
    voided = [e for e in events if e["data"].get("order_id") == order_id]
    assert status == "voided"
    assert [e["type"] for e in voided] == ["payment.voided"]


class Slow:
    """A gateway that takes each key's first charge and holds its answer until ``answer`` is
    set (a slow gateway's call in flight), and answers a key asked again at once with the
    first charge's outcome (declined: no money moves), as a gateway deduplicating by key does;
    the keys it was asked to charge, in order."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.asked: list[str] = []

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        self.asked.append(key)
        if self.asked.count(key) == 1:
            await self.answer.wait()
        return ChargeResult("declined", reason="test card")

    async def void(self, key: str) -> None:
        raise AssertionError(f"void {key}: not asked for here")

    async def close(self) -> None:
        pass


async def test_a_charge_in_flight_when_payments_stops_is_charged_by_another_at_once(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """An instance stopped gracefully (SIGTERM: a deploy, a scale-down) while its gateway
    call was in flight exited, and left the charge to its lease: another instance charged it
    once the lease ran out, the buyer kept waiting for nothing. Now the call is handed back
    as the loop is cancelled: due at once, and the next claim, another instance's, makes it
    again with the same key, which the gateway answers once. The lease here is a minute."""
    order_id = await prepaid(uow, "charging", next_attempt_at=datetime.now(UTC) - DECADE)
    gateway = Slow()
    try:
        async with uow.begin() as tx:
            claimed = await claim_due(tx, 60, limit=1)
        assert [w.order_id for w in claimed] == [order_id]
        call = asyncio.create_task(perform(uow, gateway, claimed, 1.0))
        await until(lambda: gateway.asked, "the gateway asked to charge")
        with caplog.at_level(logging.INFO, logger="services.payments"):
            call.cancel()  # as a graceful stop cancels the service's loops
            with pytest.raises(asyncio.CancelledError):
                await call
        # Rows other tests left due may be claimed here too (leased a minute, not called).
        async with uow.begin() as tx:
            again = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id == order_id]
        assert [w.attempts for w in again] == [2]
        said = [r.getMessage() for r in caplog.records if "handed back" in r.getMessage()]
        assert said == [
            f"the gateway calls (charging) of order {order_id} unfinished as the service"
            " stops: handed back, due again now"
        ]
        await perform(uow, gateway, again, 1.0)
        assert gateway.asked == [order_id, order_id]
        async with uow.db.engine.connect() as conn:
            query = select(payments.c.status, payments.c.attempts, payments.c.next_attempt_at)
            row = (await conn.execute(query.where(payments.c.order_id == order_id))).one()
        assert tuple(row) == ("declined", 2, None)
    finally:
        gateway.answer.set()
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id == order_id))


async def test_a_claim_handed_back_late_leaves_a_newer_claim_alone(uow: UnitOfWork) -> None:
    # Its lease ran out and another instance claimed the charge (attempt 2) before the
    # stopping one handed back its claim (attempt 1): the newer claim keeps its lease.
    leased = datetime.now(UTC) + timedelta(minutes=1)
    order_id = await prepaid(uow, "charging", attempts=2, next_attempt_at=leased)
    try:
        async with uow.begin() as tx:
            handed = await hand_back(tx, [Work(order_id, "charging", "claims-buyer", 3500, 1)])
        async with uow.db.engine.connect() as conn:
            query = select(payments.c.next_attempt_at).where(payments.c.order_id == order_id)
            assert (handed, await conn.scalar(query)) == (False, leased)
    finally:
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id == order_id))


class Asked:
    """A gateway that declines each charge at once (no money moves) and voids each key; the
    calls it was asked to make, in order."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        self.asked.append(("charge", key))
        return ChargeResult("declined", reason="test card")

    async def void(self, key: str) -> None:
        self.asked.append(("void", key))

    async def close(self) -> None:
        pass


async def test_a_charge_the_gateway_never_saw_is_not_made_once_its_hold_lapsed(
    uow: UnitOfWork,
) -> None:
    """Whether a claimed charge is made, by the hold's time on the database's clock (the one
    ``next_attempt_at`` is due by) and by what its earlier calls did: one whose hold lapsed and
    whose every call so far never reached the gateway (or none was made) is declined
    ``expired``, not sent; one the gateway may have taken (a call not known unreached) is made
    again with its key, as is one whose hold has not lapsed, or said no time; a void is always
    made. (Every charge was made, however late.)"""
    due = datetime.now(UTC) - DECADE
    lapsed, later = datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC) + DECADE
    rows: dict[str, dict[str, object]] = {
        "never claimed": {"held_until": lapsed},
        "every call unreached": {"held_until": lapsed, "attempts": 3, "unreached": 3},
        "a call maybe taken": {"held_until": lapsed, "attempts": 3, "unreached": 2},
        "hold not lapsed": {"held_until": later, "attempts": 1, "unreached": 1},
        "no hold's time": {"attempts": 1, "unreached": 1},
    }
    ids = {
        what: await prepaid(uow, "charging", next_attempt_at=due, **row)
        for what, row in rows.items()
    }
    ids["void"] = await prepaid(
        uow, "voiding", next_attempt_at=due, held_until=lapsed, attempts=1, unreached=1
    )
    what_of = {order_id: what for what, order_id in ids.items()}
    gateway = Asked()
    try:
        # Rows other tests left due may be claimed here too (leased a minute, not called).
        async with uow.begin() as tx:
            claimed = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id in what_of]
        assert {what_of[w.order_id]: w.unsent for w in claimed} == {
            "never claimed": True,
            "every call unreached": True,
            "a call maybe taken": False,
            "hold not lapsed": False,
            "no hold's time": False,
            "void": False,
        }
        for work in sorted(claimed, key=lambda w: list(ids.values()).index(w.order_id)):
            await perform(uow, gateway, [work], 1.0)
        assert [(call, what_of[key]) for call, key in gateway.asked] == [
            ("charge", "a call maybe taken"),
            ("charge", "hold not lapsed"),
            ("charge", "no hold's time"),
            ("void", "void"),
        ]
        async with uow.db.engine.connect() as conn:
            query = select(
                payments.c.order_id, payments.c.status, payments.c.attempts, payments.c.unreached
            )
            found = await conn.execute(query.where(payments.c.order_id.in_(what_of)))
            values = (
                await conn.execute(
                    select(outbox.c.value).where(outbox.c.topic == Topic.PAYMENT_EVENTS.value)
                )
            ).scalars()
        assert {what_of[r.order_id]: (r.status, r.attempts, r.unreached) for r in found} == {
            "never claimed": ("declined", 1, 1),  # its claim's call not made: unreached too
            "every call unreached": ("declined", 4, 4),
            "a call maybe taken": ("declined", 4, 2),
            "hold not lapsed": ("declined", 2, 1),
            "no hold's time": ("declined", 2, 1),
            "void": ("voided", 2, 1),
        }
        events = [orjson.loads(value) for value in values]
        said = {
            what_of[e["data"]["order_id"]]: e["data"].get("reason")
            for e in events
            if e["type"] == "payment.declined" and e["data"]["order_id"] in what_of
        }
        assert said == {
            "never claimed": "expired",
            "every call unreached": "expired",
            "a call maybe taken": "payment_failed",
            "hold not lapsed": "payment_failed",
            "no hold's time": "payment_failed",
        }
    finally:
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id.in_(what_of)))


class Failing:
    """A gateway each of whose calls fails with ``error`` of its path: the connection refused
    (:func:`away`), no such charge (:func:`unknown`); the keys it was asked about."""

    def __init__(self, error: Callable[[str], Exception]) -> None:
        self.error = error
        self.asked: list[str] = []

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        self.asked.append(key)
        raise self.error("/charges")

    async def void(self, key: str) -> None:
        self.asked.append(key)
        raise self.error(f"/charges/{key}/void")

    async def close(self) -> None:
        pass


def away(path: str) -> Exception:
    return GatewayUnreached(f"{path}: ConnectError")


def unknown(path: str) -> Exception:
    return NoSuchCharge(f'{path}: HTTP 404: {{"title": "no such charge"}}')


async def test_a_charge_the_gateway_never_saw_is_due_again_by_its_holds_lapse(
    uow: UnitOfWork,
) -> None:
    """A charge none of whose calls reached the gateway is asked again after its backoff, but
    no later than its hold's lapse, when it is declined ``expired`` rather than sent: on time
    (it was due a backoff after the call, up to 30 s past the lapse, the buyer's order
    waiting). One the gateway may have seen waits its whole backoff: the lapse changes nothing
    for it."""
    due = datetime.now(UTC) - DECADE
    held_until = datetime.now(UTC) + timedelta(seconds=10)
    rows: dict[str, dict[str, object]] = {
        "none seen": {},
        "one maybe seen": {"attempts": 1, "unreached": 0},
    }
    ids = {
        what: await prepaid(uow, "charging", next_attempt_at=due, held_until=held_until, **row)
        for what, row in rows.items()
    }
    what_of = {order_id: what for what, order_id in ids.items()}
    try:
        async with uow.begin() as tx:
            claimed = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id in what_of]
        for work in claimed:
            await perform(uow, Failing(away), [work], 30.0)  # a backoff of 30 s
        async with uow.db.engine.connect() as conn:
            query = select(payments.c.order_id, payments.c.status, payments.c.next_attempt_at)
            found = await conn.execute(query.where(payments.c.order_id.in_(what_of)))
            due_again = {what_of[r.order_id]: (r.status, r.next_attempt_at) for r in found}
        assert due_again["none seen"] == ("charging", held_until)
        status, later = due_again["one maybe seen"]
        assert status == "charging" and later > held_until + timedelta(seconds=15)
    finally:
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id.in_(what_of)))


async def test_a_void_of_a_charge_the_gateway_never_approved_nor_knows_is_voided(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """An order cancelled while its charge had not been answered (here every call unreached),
    and the gateway answers its void 404, no such charge: nothing to void, the payment
    ``voided`` (``payment.voided``, nothing charged), not asked again, said in an info line
    true of a void by ``caravan payments void-unplaced`` too (it said "cancelled order"). (A
    404 was asked again every 30 s for ever, the payment ``voiding``, no operator told.) One
    whose charge the gateway approved is asked again: tests/e2e/test_payments_gateway.py."""
    due = datetime.now(UTC) - DECADE
    order_id = await prepaid(uow, "voiding", next_attempt_at=due, attempts=2, unreached=2)
    gateway = Failing(unknown)
    try:
        async with uow.begin() as tx:
            [work] = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id == order_id]
        with caplog.at_level(logging.INFO, logger="services.payments.prepaid"):
            await perform(uow, gateway, [work], 1.0)
        assert gateway.asked == [order_id]
        [line] = [r.getMessage() for r in caplog.records if order_id in r.getMessage()]
        assert line.startswith(f"the gateway knows no charge of voided order {order_id} ("), line
        assert line.endswith("): nothing to void"), line
        async with uow.db.engine.connect() as conn:
            query = select(payments.c.status, payments.c.next_attempt_at)
            row = (await conn.execute(query.where(payments.c.order_id == order_id))).one()
            values = (
                await conn.execute(
                    select(outbox.c.value).where(outbox.c.topic == Topic.PAYMENT_EVENTS.value)
                )
            ).scalars()
        assert tuple(row) == ("voided", None)
        events = [orjson.loads(value) for value in values]
        said = [e for e in events if e["data"].get("order_id") == order_id]
        assert [(e["type"], e["data"]["amount_fen"]) for e in said] == [("payment.voided", 0)]
    finally:
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id == order_id))


async def test_a_call_made_again_for_long_is_said_as_such_and_gauged(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """A void made again for an hour (the gateway away, or refusing us): its payment's age
    is on ``/metrics`` (``caravan_payments_gateway_oldest_seconds``, the alert's), and its
    retry is a warning of its own fault (said once a minute whatever other calls the gateway
    answers meanwhile), naming the order, how long and how many attempts. (Nothing told an
    operator of a call retried for ever.)"""
    due = datetime.now(UTC) - DECADE
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    order_id = await prepaid(
        uow, "voiding", next_attempt_at=due, updated_at=hour_ago, attempts=40, unreached=40
    )
    try:
        await payments_by_status(uow.db.engine).sample()
        oldest = REGISTRY.get_sample_value("caravan_payments_gateway_oldest_seconds")
        assert oldest is not None and oldest >= 3600
        async with uow.begin() as tx:
            [work] = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id == order_id]
        with caplog.at_level(logging.WARNING, logger="services.payments.prepaid"):
            await perform(uow, Failing(away), [work], 1.0)
        [line] = [r for r in caplog.records if order_id in r.getMessage()]
        assert getattr(line, FAULT) == GATEWAY_STUCK
        said = re.sub(r"for 36\d\d s", "for 36.. s", line.getMessage())
        assert said == (
            f"gateway: /charges/{order_id}/void: ConnectError for order {order_id}, voiding for"
            " 36.. s (41 attempts); retrying in 30.0s"
        )
    finally:
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id == order_id))


class Refusing(Asked):
    """:class:`Asked`, but a charge of ``refused`` is declined with a charge id the database
    will not hold (a NUL: no text column takes it), so its outcome cannot be recorded."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        await super().charge(key, amount_fen, buyer_id)
        charge_id = "c-\x00" if key == self.refused else None
        return ChargeResult("declined", charge_id=charge_id, reason="test card")


@dataclass
class Ran:
    """What an engine did meanwhile (:func:`ran_on`)."""

    done: list[str] = field(default_factory=list)
    """"checkout" for each connection taken from its pool (or opened), "commit" for each
    transaction committed."""
    sent: list[tuple[str, Any]] = field(default_factory=list)
    """The statements sent, each with its parameters, through SQLAlchemy or on the driver
    (:mod:`shared.db.driver`: its connection's query logger), BEGIN and COMMIT aside."""


@contextlib.contextmanager
def ran_on(engine: AsyncEngine) -> Iterator[Ran]:
    ran = Ran()
    pool = engine.sync_engine.pool

    def on_driver(query: Any) -> None:
        if query.query.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            ran.sent.append((query.query, query.args))

    def checkout(dbapi: Any, *_: object) -> None:
        ran.done.append("checkout")
        dbapi.driver_connection.add_query_logger(on_driver)

    def checkin(dbapi: Any, *_: object) -> None:
        dbapi.driver_connection.remove_query_logger(on_driver)

    def commit(*_: object) -> None:
        ran.done.append("commit")

    def through_sqlalchemy(
        _conn: object, _cursor: object, statement: str, params: Any, *_: object
    ) -> None:
        ran.sent.append((statement, params))

    listening: list[tuple[Any, str, Callable[..., None]]] = [
        (pool, "checkout", checkout),
        (pool, "checkin", checkin),
        (engine.sync_engine, "commit", commit),
        (engine.sync_engine, "before_cursor_execute", through_sqlalchemy),
    ]
    for target, name, listener in listening:
        event.listen(target, name, listener)
    try:
        yield ran
    finally:
        for target, name, listener in listening:
            event.remove(target, name, listener)


async def rows_of(uow: UnitOfWork, order_ids: list[str]) -> list[Any]:
    """The payment rows of ``order_ids``."""
    async with uow.db.engine.connect() as conn:
        query = select(payments).where(payments.c.order_id.in_(order_ids))
        return list((await conn.execute(query)).all())


async def forget(uow: UnitOfWork, order_ids: list[str]) -> None:
    """The payments of ``order_ids`` deleted: left charging, the payments service would charge
    them once their lease lapsed, money of no order."""
    async with uow.begin() as tx:
        await tx.conn.execute(delete(payments).where(payments.c.order_id.in_(order_ids)))


async def declined_in_outbox(uow: UnitOfWork, order_ids: list[str]) -> list[str]:
    """The orders of ``order_ids`` said ``payment.declined`` in the outbox, in order."""
    async with uow.db.engine.connect() as conn:
        query = select(outbox.c.value).where(outbox.c.topic == Topic.PAYMENT_EVENTS.value)
        values = (await conn.execute(query.order_by(outbox.c.id))).scalars()
    events = [orjson.loads(value) for value in values]
    return [
        e["data"]["order_id"]
        for e in events
        if e["type"] == "payment.declined" and e["data"]["order_id"] in order_ids
    ]


async def test_a_claimed_batch_of_charges_is_recorded_in_one_commit(uow: UnitOfWork) -> None:
    """A Singles' Day drill left payments behind with its pool full: the gateway loop claims
    20 calls at once, and each call's outcome took a connection and a commit of its own, 20
    connections where the pool keeps 10 (the others opened and closed again for each batch,
    with the type queries of a new connection), the consumers waiting for one. Now the
    claim's outcomes are recorded together: one connection, one commit, each payment as
    before (declined, ``payment.declined`` in the outbox, its call counted once)."""
    due = datetime.now(UTC) - DECADE
    ids = [await prepaid(uow, "charging", next_attempt_at=due) for _ in range(20)]
    gateway = Asked()
    try:
        # Rows other tests left due may be claimed here too (leased a minute, not called).
        async with uow.begin() as tx:
            claimed = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id in ids]
        assert len(claimed) == 20
        with ran_on(uow.db.engine) as ran:
            await perform(uow, gateway, claimed, 1.0)
        assert sorted(key for _, key in gateway.asked) == sorted(ids)
        assert ran.done == ["checkout", "commit"]
        found = await rows_of(uow, ids)
        assert (
            sorted((r.status, r.attempts, r.next_attempt_at) for r in found)
            == [("declined", 1, None)] * 20
        )
        assert sorted(await declined_in_outbox(uow, ids)) == sorted(ids)
    finally:
        await forget(uow, ids)


async def test_a_claimed_batch_is_recorded_in_a_few_statements(uow: UnitOfWork) -> None:
    """A claim's outcomes recorded in one transaction still sent two or three statements
    each, one after the other (the payment's status, its payables, a void's charge read):
    about 40 for a claim of 20, the step that kept payments behind in a burst of prepaid
    orders. Now a few for the claim, whatever its size: each payment as before (declined or
    voided, its payables cancelled, its event in the outbox)."""
    due = datetime.now(UTC) - DECADE
    charges = [await prepaid(uow, "charging", next_attempt_at=due) for _ in range(10)]
    voids = [await prepaid(uow, "voiding", next_attempt_at=due) for _ in range(10)]
    ids = charges + voids
    async with uow.begin() as tx:
        sellers = [{"order_id": o, "amount_fen": 1750} for o in ids]
        await tx.conn.execute(
            insert(payables),
            [
                {**s, "seller_id": f"seller-{n}", "status": "pending"}
                for s in sellers
                for n in (1, 2)
            ],
        )
    try:
        async with uow.begin() as tx:
            claimed = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id in ids]
        assert len(claimed) == 20
        with ran_on(uow.db.engine) as ran:
            await perform(uow, Asked(), claimed, 1.0)
        found = {r.order_id: r.status for r in await rows_of(uow, ids)}
        assert [found[o] for o in ids] == ["declined"] * 10 + ["voided"] * 10
        async with uow.db.engine.connect() as conn:
            query = select(payables.c.status).where(payables.c.order_id.in_(ids))
            assert sorted((await conn.execute(query)).scalars()) == ["cancelled"] * 40
        assert sorted(await declined_in_outbox(uow, ids)) == sorted(charges)
        # Their payments locked, ended (the declined and the voided: one statement each),
        # their payables set, the voids' charges read; at commit the outbox written. (A
        # connection's first statements of a kind have asyncpg read their types: not counted.)
        sent = [" ".join(sql.split())[:60] for sql, _ in ran.sent if "payments" in sql]
        assert len(sent) == 6, sent
    finally:
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payables).where(payables.c.order_id.in_(ids)))
        await forget(uow, ids)


async def test_an_outcome_the_database_refuses_keeps_none_of_its_batch_from_being_recorded(
    uow: UnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    """Recorded together, one outcome the database will not take would roll back the
    batch's others, and each be called again once their lease ran out, for good: the batch
    is then recorded one call at a time. The others are recorded; the one refused keeps its
    lease (``charging``, asked again with its key once it runs out)."""
    due = datetime.now(UTC) - DECADE
    ids = [await prepaid(uow, "charging", next_attempt_at=due) for _ in range(3)]
    gateway = Refusing(ids[1])
    try:
        async with uow.begin() as tx:
            claimed = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id in ids]
        with caplog.at_level(logging.WARNING, logger="services.payments"):
            await perform(uow, gateway, sorted(claimed, key=lambda w: ids.index(w.order_id)), 1.0)
        said = [r.getMessage() for r in caplog.records]
        assert any("recording 3 gateway calls at once failed" in line for line in said), said
        found = {
            r.order_id: (r.status, r.next_attempt_at is not None and r.next_attempt_at > due)
            for r in await rows_of(uow, ids)
        }
        assert [found[order_id] for order_id in ids] == [
            ("declined", False),
            ("charging", True),  # leased: asked again once its lease runs out
            ("declined", False),
        ]
        assert sorted(await declined_in_outbox(uow, ids)) == sorted([ids[0], ids[2]])
    finally:
        await forget(uow, ids)


class Gated:
    """A gateway whose void calls each wait for their own gate (``gates[n]``, the n-th call)
    before they are answered: 404, no such charge, where ``lost``, else voided; the keys it
    was asked to void, in order."""

    def __init__(self, lost: bool) -> None:
        self.lost = lost
        self.gates = [asyncio.Event(), asyncio.Event()]
        self.asked: list[str] = []

    async def charge(self, key: str, amount_fen: int, buyer_id: str) -> ChargeResult:
        raise AssertionError(f"charge {key}: not asked for here")

    async def void(self, key: str) -> None:
        self.asked.append(key)
        await self.gates[len(self.asked) - 1].wait()
        if self.lost:
            raise unknown(f"/charges/{key}/void")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("lost", [True, False], ids=["gateway-lost-it", "gateway-voids"])
@pytest.mark.parametrize("first", [0, 1], ids=["held-answered-first", "new-answered-first"])
async def test_a_void_said_lost_while_one_is_in_flight_ends_once(
    uow: UnitOfWork, lost: bool, first: int
) -> None:
    """``caravan payments charge-lost`` makes the void due now (:func:`mark_lost`) while the
    claim of an earlier void may still be leased, its call in flight: another loop claims it
    at once and the two voids are made together, answered in either order. The payment ends
    once, as the gateway answered: refused for good (``void_refused``, owed back by hand) if
    it lost the charge, ``voided`` (the word cleared) if it voided it after all; one
    ``payment.voided``, one ledger void, one count of a void refused, never both a void made
    and a refund owed by hand."""
    order_id = str(uuid.uuid4())
    buyer, seller = f"pay-lost-{uuid.uuid4().hex[:8]}", "claims-seller"
    due = datetime.now(UTC) - DECADE
    async with uow.begin() as tx:
        values = {"order_id": order_id, "buyer_id": buyer, "method": "prepaid"}
        await tx.conn.execute(
            insert(payments).values(
                **values, amount_fen=3500, status="voiding", next_attempt_at=due, attempts=3
            )
        )
        await tx.conn.execute(
            insert(payables).values(
                order_id=order_id, seller_id=seller, amount_fen=3500, status="owed"
            )
        )
        charged = ledger.prepaid_charged({seller: 3500})
        ledger_store.post(tx, charge_txn(order_id), "prepaid_charged", charged, order_id=order_id)
    refused_before = REGISTRY.get_sample_value("caravan_payments_void_refused_total") or 0.0
    gateway = Gated(lost)

    async def claim() -> Work:
        # Rows other tests left due may be claimed here too (leased a minute, not called).
        async with uow.begin() as tx:
            return next(w for w in await claim_due(tx, 60, limit=1000) if w.order_id == order_id)

    held = asyncio.create_task(perform(uow, gateway, [await claim()], 1.0))
    await until(lambda: gateway.asked, "the first void in flight")
    async with uow.begin() as tx:
        said = await mark_lost(tx, order_id, "the gateway lost the charge, said desk: purged")
    assert said is not None and said.after["gateway_refusal"] is not None
    again = await claim()  # due now, though the first claim's lease runs a minute
    assert again.attempts == 5
    other = asyncio.create_task(perform(uow, gateway, [again], 1.0))
    await until(lambda: len(gateway.asked) == 2, "the second void in flight")
    calls = [held, other]
    gateway.gates[first].set()
    await calls[first]
    gateway.gates[1 - first].set()
    await calls[1 - first]

    [row] = await rows_of(uow, [order_id])
    async with uow.db.engine.connect() as conn:
        query = select(outbox.c.value).where(outbox.c.topic == Topic.PAYMENT_EVENTS.value)
        events = [orjson.loads(v) for v in (await conn.execute(query)).scalars()]
        voids = await ledger_store.entries_of(conn, void_txn(order_id))
        payable = await conn.scalar(
            select(payables.c.status).where(payables.c.order_id == order_id)
        )
    voided = [e["data"] for e in events if e["data"].get("order_id") == order_id]
    refused = REGISTRY.get_sample_value("caravan_payments_void_refused_total") or 0.0
    assert (row.status, row.next_attempt_at, payable) == (
        "void_refused" if lost else "voided",
        None,
        "cancelled",
    )
    assert (row.refund_owed_fen, row.gateway_refusal is None) == (
        (3500, False) if lost else (None, True)
    )
    assert [(d["amount_fen"], d.get("refund_owed_fen")) for d in voided] == [
        (3500, 3500 if lost else None)
    ]
    assert sorted(e.account for e in voids) == sorted(
        ["buyer_refund_payable", f"seller_payable:{seller}"]
        if lost
        else ["gateway_clearing", f"seller_payable:{seller}"]
    )
    assert refused - refused_before == (1 if lost else 0)


@contextlib.contextmanager
def commit_answer_lost(uow: UnitOfWork) -> Iterator[list[str]]:
    """The next commit on ``uow``'s engine is made, and its answer lost (the connection
    reset as PostgreSQL's acknowledgement came): the commit raises, though it committed."""
    lost: list[str] = []
    dialect = uow.db.engine.sync_engine.dialect
    commit = dialect.do_commit

    def committed_then_reset(dbapi_connection: Any) -> None:
        commit(dbapi_connection)
        if not lost:
            lost.append("commit")
            raise ConnectionResetError("connection reset after COMMIT was sent")

    dialect.do_commit = committed_then_reset  # type: ignore[method-assign]
    try:
        yield lost
    finally:
        del dialect.do_commit  # the class's again


async def test_a_batch_committed_whose_answer_was_lost_is_not_recorded_again(
    uow: UnitOfWork,
) -> None:
    """A claim's batch of outcomes committed, but the commit's answer lost (the connection
    reset): the calls were recorded one at a time again, and a retry's count of calls that
    never reached the gateway (``unreached``) went up twice. A charge whose first call
    timed out (the gateway may have taken it) and whose second was unreached then read as
    one the gateway had seen none of (``seen`` False): once its hold lapsed it would be
    declined without a call, no void ever made for a charge the gateway may hold. A retry
    is now recorded only on its claim's lease, so the second recording changes nothing."""
    due = datetime.now(UTC) - DECADE
    held_until = datetime.now(UTC) + timedelta(minutes=10)
    # Each: its first call timed out (attempts 1, none unreached): the gateway may have it.
    ids = [
        await prepaid(uow, "charging", next_attempt_at=due, attempts=1, held_until=held_until)
        for _ in range(2)
    ]
    try:
        async with uow.begin() as tx:
            claimed = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id in ids]
        assert [(w.attempts, w.seen) for w in claimed] == [(2, True)] * 2
        with commit_answer_lost(uow) as lost:
            await perform(uow, Failing(away), claimed, 1.0)
        assert lost == ["commit"]
        found = await rows_of(uow, ids)
        assert (
            sorted((r.status, r.attempts, r.unreached) for r in found) == [("charging", 2, 1)] * 2
        )
        async with uow.begin() as tx:
            await tx.conn.execute(
                update(payments).where(payments.c.order_id.in_(ids)).values(next_attempt_at=due)
            )
            again = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id in ids]
        assert [(w.attempts, w.seen) for w in again] == [(3, True)] * 2
    finally:
        await forget(uow, ids)


async def test_a_charge_not_made_for_its_lapsed_hold_is_not_declined_once_claimed_again(
    uow: UnitOfWork,
) -> None:
    """A claim of a charge the gateway had seen none of, its hold lapsed, is to decline it
    without a call (``unsent``); but its recording came after the lease ran out (the claim's
    other calls took the gateway's timeout, its batch refused and recorded again one at a
    time), and another instance had claimed it again meanwhile. That claim counts the first
    as a call the gateway may have seen (not known unreached), so it makes the charge: the
    first recording then declined the payment under it, the gateway's approval arriving to a
    payment no longer charging, ignored, a charge standing with its order cancelled and
    nothing to void it. The decline is made on its claim's lease alone: the newer claim's
    call decides."""
    due = datetime.now(UTC) - DECADE
    lapsed = datetime.now(UTC) - timedelta(minutes=1)
    order_id = await prepaid(
        uow, "charging", next_attempt_at=due, held_until=lapsed, attempts=1, unreached=1
    )
    try:
        async with uow.begin() as tx:
            first = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id == order_id]
        assert [(w.attempts, w.unsent) for w in first] == [(2, True)]
        async with uow.begin() as tx:  # its lease ran out: claimed again
            await tx.conn.execute(
                update(payments).where(payments.c.order_id == order_id).values(next_attempt_at=due)
            )
            again = [w for w in await claim_due(tx, 60, limit=1000) if w.order_id == order_id]
        assert [(w.attempts, w.unsent) for w in again] == [(3, False)]
        gateway = Asked()
        await perform(uow, gateway, first, 1.0)  # the first claim's recording, late
        [row] = await rows_of(uow, [order_id])
        assert (row.status, row.attempts, row.unreached) == ("charging", 3, 1)
        await perform(uow, gateway, again, 1.0)  # the newer claim's call, answered
        assert gateway.asked == [("charge", order_id)]
        [row] = await rows_of(uow, [order_id])
        assert (row.status, row.attempts, row.unreached) == ("declined", 3, 1)
        assert await declined_in_outbox(uow, [order_id]) == [order_id]
    finally:
        await forget(uow, [order_id])


def cancelled(order_id: str) -> Parsed:
    """``order.cancelled`` of ``order_id``, as the payments consumer parses it."""
    data = OrderCancelled(order_id=order_id, order_ref=f"REF-{order_id[:8]}", reason="expired")
    return parse_record(Topic.ORDER_EVENTS, new_event(data, source="caravan/orders").to_json())


async def test_a_batch_of_cancellations_locks_payments_in_the_gateway_loops_order(
    uow: UnitOfWork,
) -> None:
    """The gateway loop records a claim with its payments locked in order id order; a batch
    of cancellations locked each payment as it came to it, in its records' order. A batch
    cancelling B then A, while the loop held A and was to lock B, held B waiting for A: a
    deadlock, one of the two rolled back (and the batch then done one record at a time). Now
    the batch locks its payments first, in order id order, as the loop does: waiting for A,
    it holds none, and the loop goes on."""
    a, b = sorted([await prepaid(uow, "charging") for _ in range(2)])
    batch = [cancelled(b), cancelled(a)]
    locked = select(payments.c.order_id).with_for_update()
    try:
        async with uow.begin() as loop:
            await loop.conn.execute(locked.where(payments.c.order_id == a))
            holder = await backend_pid(loop.conn)
            [batch_done] = await started_waiting(uow, holder, [partial(handled, batch=batch)])
            await loop.conn.execute(text("set local lock_timeout = '500ms'"))
            # Without: LockNotAvailableError, the batch holding B (a deadlock, but for this).
            await loop.conn.execute(locked.where(payments.c.order_id == b))
        await batch_done
        found = {r.order_id: r.status for r in await rows_of(uow, [a, b])}
        assert found == {a: "voiding", b: "voiding"}
    finally:
        await forget(uow, [a, b])


async def test_a_hand_back_locks_payments_in_a_batchs_order(uow: UnitOfWork) -> None:
    """A stopping gateway loop handed back its claim's calls in one UPDATE, locking their
    payments as it met them (in the table's order, not by order id); a batch of cancellations
    locks its payments in order id order. The hand-back holding B and waiting for C (held
    meanwhile by another transaction), then for A, which the batch held, waiting for B: a
    deadlock, one of the two rolled back (the calls left to their lease, or the batch done
    again one record at a time). Now the hand-back locks them in order id order first."""
    # C after A and B by id: the hand-back, locking them in id order, holds both while it
    # waits for C. A C before them, it held neither, and the cancellations took them and
    # committed without waiting: one transaction waiting, never two (a third of the runs).
    a, b, c = sorted(str(uuid.uuid4()) for _ in range(3))
    leased = datetime.now(UTC) + timedelta(minutes=1)
    async with uow.begin() as tx:
        for order_id in (b, c, a):  # the table's order, which the UPDATE met them in
            await tx.conn.execute(
                prepaid_row(order_id, "charging", attempts=1, next_attempt_at=leased)
            )
    claimed = [Work(order_id, "charging", "claims-buyer", 3500, 1) for order_id in (a, b, c)]

    async def handing_back(tx: Tx) -> bool:
        return await hand_back(tx, claimed)

    async def cancelling(tx: Tx) -> None:
        await handled(tx, [cancelled(b), cancelled(a)])

    try:
        async with uow.begin() as other:
            await other.conn.execute(
                select(payments.c.order_id).where(payments.c.order_id == c).with_for_update()
            )
            holder = await backend_pid(other.conn)
            running = await started_waiting(uow, holder, [handing_back, cancelling])
        # Without: asyncpg.exceptions.DeadlockDetectedError: deadlock detected
        handed, _ = await asyncio.gather(*running)
        found = {
            r.order_id: (r.status, r.next_attempt_at < leased)
            for r in await rows_of(uow, [a, b, c])
        }
        assert (handed, found) == (
            True,
            {a: ("voiding", True), b: ("voiding", True), c: ("charging", True)},
        )
    finally:
        await forget(uow, [a, b, c])


DL_BUYER = f"pay-dl-{uuid.uuid4().hex[:8]}"
"""The buyer of the platform orders below: a payments test's (their payments are left, for
orders the orders service never had, as such tests' are: tests.harness.PAYMENTS_BUYERS)."""


def reserved_by_platform(order_id: str, order_ref: str) -> Parsed:
    """``stock.reserved`` of a prepaid order of 35 yuan test-mall placed as ``order_ref``."""
    data = _reserved(order_id, DL_BUYER, source=MALL, order_ref=order_ref)
    return parse_record(
        Topic.INVENTORY_EVENTS, new_event(data, source="caravan/inventory").to_json()
    )


def paid_on_platform(order_ref: str) -> Parsed:
    """``platform.order_paid`` of test-mall's ``order_ref``, as the platform adapter says it."""
    data = PlatformOrderPaid(order_ref=order_ref, source=MALL)
    return parse_record(Topic.PLATFORM_EVENTS, new_event(data, source=MALL).to_json())


async def handled(tx: Tx, batch: list[Parsed]) -> None:
    """``batch`` handled in ``tx`` as payments' consumer handles one (Consumer._handle_batch):
    each prefetch once, with the records of every subscription sharing it, then each handler
    in turn, the rows written at commit before another subscription's."""
    service = subscriptions(0)  # once: a subscription is another's if it is another object
    subs = [next(s for s in service if s.handler_for(p) is not None) for p in batch]
    prefetches: dict[Any, list[Parsed]] = {}
    for sub, parsed in zip(subs, batch, strict=True):
        if sub.prefetch is not None:
            prefetches.setdefault(sub.prefetch, []).append(parsed)
    for prefetch, records in prefetches.items():
        await prefetch(tx, records)
    for i, (sub, parsed) in enumerate(zip(subs, batch, strict=True)):
        if i and sub is not subs[i - 1]:
            await tx.flush()
        handler = sub.handler_for(parsed)
        assert handler is not None
        await handler(tx.caused_by(parsed.envelope), parsed)


async def batches_meeting_on_platform_orders(
    uow: UnitOfWork, held: list[Parsed], first: list[Parsed], second: list[Parsed]
) -> None:
    """``held`` handled in a transaction kept open (it holds its platform orders' locks)
    while the batch ``first`` starts and waits for a lock, then ``second`` too; then committed,
    and both batches let go on. Each commits, or raises what stopped it (a deadlock)."""
    async with uow.begin() as tx:
        await handled(tx, held)
        batches = [partial(handled, batch=first), partial(handled, batch=second)]
        running = await started_waiting(uow, await backend_pid(tx.conn), batches)
    await asyncio.gather(*running)


async def platform_payments(uow: UnitOfWork, order_ids: list[str]) -> dict[str, str]:
    """The status of the payment of each of ``order_ids``."""
    return {r.order_id: r.status for r in await rows_of(uow, order_ids)}


async def test_a_reservation_read_again_and_the_platforms_word_lock_in_one_order(
    uow: UnitOfWork,
) -> None:
    """A ``stock.reserved`` of a platform's order read again (its payment awaiting the
    platform's word) locked the payment, then the platform order's lock; the platform's
    ``platform.order_paid`` took that lock, then the payment: each waiting for the other, a
    deadlock, one of the two batches rolled back (then handled one record at a time). Now
    every batch takes its platform orders' locks first, then its payments: the reservation
    waits for the lock holding nothing. Here the lock is held meanwhile by a copy of the
    order's reservation under another order id, so that the platform's word waits for it
    first and the reservation read again after it."""
    order_ref, order_id, copy = ref("DL"), str(uuid.uuid4()), str(uuid.uuid4())
    async with uow.begin() as tx:  # read once: its payment awaiting the platform's word
        await handled(tx, [reserved_by_platform(order_id, order_ref)])
    # Without: asyncpg.exceptions.DeadlockDetectedError: deadlock detected
    await batches_meeting_on_platform_orders(
        uow,
        [reserved_by_platform(copy, order_ref)],
        [paid_on_platform(order_ref)],
        [reserved_by_platform(order_id, order_ref)],
    )
    found = await platform_payments(uow, [order_id, copy])
    assert found == {order_id: "authorized", copy: "authorized"}


async def test_batches_take_their_platform_orders_locks_in_one_order(uow: UnitOfWork) -> None:
    """Two batches took their platform orders' locks in their records' order: reservations
    of the orders placed as A then B, and the platform's word for B then A, each holding one
    and waiting for the other's: a deadlock. Now each batch takes them all at once, in one
    order. B's lock is held meanwhile by a copy of B's reservation, so that the platform's
    word waits for B and the reservations, holding A, for B after it."""
    ref_a, ref_b = ref("DL"), ref("DL")
    a, b, copy = (str(uuid.uuid4()) for _ in range(3))
    # Without: asyncpg.exceptions.DeadlockDetectedError: deadlock detected
    await batches_meeting_on_platform_orders(
        uow,
        [reserved_by_platform(copy, ref_b)],
        [paid_on_platform(ref_b), paid_on_platform(ref_a)],
        [reserved_by_platform(a, ref_a), reserved_by_platform(b, ref_b)],
    )
    found = await platform_payments(uow, [a, b, copy])
    assert found == {a: "authorized", b: "authorized", copy: "authorized"}


LAPSED = datetime(2026, 1, 1, tzinfo=UTC)
"""A hold's end long past: a reservation read after it (payments back from an outage longer than
the saga's deadline) is declined ``expired``, nothing charged or lent."""


def reserved_lapsed(order_id: str) -> Parsed:
    """``stock.reserved`` of a prepaid order of 35 yuan whose hold had lapsed when read."""
    data = _reserved(order_id, DL_BUYER).model_copy(update={"held_until": LAPSED})
    return parse_record(
        Topic.INVENTORY_EVENTS, new_event(data, source="caravan/inventory").to_json()
    )


async def batches_meeting_on_new_payments(
    uow: UnitOfWork, held: list[str], first: list[Parsed], second: list[Parsed]
) -> None:
    """The payments of ``held`` inserted by a transaction kept open, standing for the moment
    between two rows of one batch's insert: the batch ``first`` starts and waits (for one of
    them, or for a lock), then ``second`` too; then it is rolled back, and both batches let
    go on. Each commits, or raises what stopped it (a deadlock)."""
    async with uow.db.engine.connect() as conn:
        for order_id in held:
            await conn.execute(prepaid_row(order_id, "charging"))
        batches = [partial(handled, batch=first), partial(handled, batch=second)]
        running = await started_waiting(uow, await backend_pid(conn), batches)
        await conn.rollback()
    await asyncio.gather(*running)


Records = list[tuple[Callable[[str], Parsed], str]]
"""A batch: each record's maker and the name of its order."""
# Per case: the names of its orders in the order of their ids, the two batches, and each
# order's payment once both committed.
NEW_PAYMENTS: dict[str, tuple[str, Records, Records, dict[str, str]]] = {
    # An instance's batch of reservations, another's of cancellations, the orders in opposite
    # orders: reservations of A then B, cancellations of B then A (C and D held meanwhile).
    "one-topic-each": (
        "abcd",
        [(reserved_lapsed, "a"), (reserved_lapsed, "c"), (reserved_lapsed, "b")],
        [(cancelled, "b"), (cancelled, "d"), (cancelled, "a")],
        {"a": "declined", "b": "declined", "c": "declined", "d": "cancelled"},
    ),
    # Each instance reading reservations of some partitions and cancellations of others: one
    # reserving A and cancelling B, the other reserving B and cancelling A. A batch writes its
    # reservations' new payments before it handles its cancellations (a subscription's rows
    # are written before the next one's handlers run), so this one deadlocked in whatever order
    # each write took its rows (C and D first here, as sorted by id).
    "both-topics-each": (
        "cdab",
        [(reserved_lapsed, "a"), (cancelled, "c"), (cancelled, "b")],
        [(reserved_lapsed, "b"), (cancelled, "d"), (cancelled, "a")],
        {"a": "declined", "b": "cancelled", "c": "cancelled", "d": "cancelled"},
    ),
}


@pytest.mark.parametrize("case", list(NEW_PAYMENTS))
async def test_new_payments_of_two_batches_are_made_in_one_order(
    uow: UnitOfWork, case: str
) -> None:
    """Payments back from an outage longer than the saga's deadline, in two instances: one
    reads the orders' reservations (their holds lapsed: declined ``expired``), the other their
    cancellations (``expired``): with three partitions a topic, Kafka's round-robin assignor
    gives two instances an order's two topics apart for two partitions of three. Each batch
    makes the payments that do not exist yet, and wrote them in its records' order, each
    holding one and waiting for the other's: a deadlock, one batch rolled back (then handled
    one record at a time). Now each batch first takes its orders' locks, in one order: the
    second waits, holding none, and then finds the first's payments."""
    named, first, second, expected = NEW_PAYMENTS[case]
    ids = dict(zip(named, sorted(str(uuid.uuid4()) for _ in named), strict=True))

    def batch(records: Records) -> list[Parsed]:
        return [make(ids[name]) for make, name in records]

    # Without: asyncpg.exceptions.DeadlockDetectedError: deadlock detected
    await batches_meeting_on_new_payments(uow, [ids["c"], ids["d"]], batch(first), batch(second))
    found = await platform_payments(uow, list(ids.values()))
    assert found == {ids[name]: status for name, status in expected.items()}
