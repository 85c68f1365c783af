"""Retention of the outbox and the inbox (shared/messaging/retention.py): on a database of
its own, exactly the rows past their retention go, and never an unpublished one; inbox rows
outlive what the broker keeps of the topics, however short the setting, and so do events
parked for an order not placed yet; in the running system, a service prunes its own tables
when it starts."""

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from string import digits

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select, text

from caravan import db_roles, system
from caravan.checkout import REPO_ROOT
from services.notifications.adapters import tables as notifications
from services.notifications.bootstrap import done_recipients, finished_texts
from services.notifications.dispatch import STATUSES
from services.orders.adapters.tables import inbox, outbox
from services.orders.adapters.tables import orders as orders_table
from services.orders.bootstrap import ended_deliveries
from services.orders.entrypoints.queries import order_view
from shared import days
from shared.db import Database
from shared.db.migrate import migrations_folder, upgrade
from shared.events.envelope import CloudEvent
from shared.events.orders import ConfirmedPayment, Delivery, OrderCancelled, OrderConfirmed
from shared.events.payments import InstalmentDue, PaymentRepaid
from shared.messaging.admin import ensure_topics
from shared.messaging.kafka_admin import longest_kept_hours
from shared.messaging.retention import Expiring, Retention
from shared.settings import Settings
from shared.topics import ALL_TOPICS, DEAD_LETTER_TOPICS, Topic
from tests.e2e.test_saga import order
from tests.harness import (
    System,
    order_events,
    ref,
    scratch_database,
    until,
)

HOUR = timedelta(hours=1)


@asynccontextmanager
async def orders_tables(
    infrastructure: system.Infrastructure, service: str = "orders"
) -> AsyncIterator[Database]:
    """The orders service's tables (or another ``service``'s), migrated, in a database of
    their own."""
    async with scratch_database(infrastructure.database_url, "caravan_retention") as scratch:
        url = db_roles.asyncpg_url(scratch)
        await asyncio.to_thread(upgrade, migrations_folder(service), url)
        db = Database(Settings(database_url=url), schema=service)
        try:
            yield db
        finally:
            await db.dispose()


def retention(
    db: Database,
    outbox_hours: float = 24,
    inbox_hours: float = 360,
    kafka_hours: Callable[[], Awaitable[float]] | None = None,
) -> Retention:
    return Retention(
        db,
        outbox,
        inbox,
        service="orders",
        outbox_hours=outbox_hours,
        inbox_hours=inbox_hours,
        kafka_hours=kafka_hours,
        chunk=2,  # so that a sweep takes several chunks
    )


def expiring_rows(
    db: Database,
    rows: Expiring,
    inbox_hours: float = 912,
    kafka_hours: Callable[[], Awaitable[float]] | None = None,
) -> Retention:
    """The retention of the service whose schema holds ``rows``, on ``db``: its outbox (24
    hours), its inbox (``inbox_hours``) and ``rows``, a row a chunk."""
    schema = str(rows.table.schema)
    tables = rows.table.metadata.tables
    return Retention(
        db,
        tables[f"{schema}.outbox"],
        tables[f"{schema}.inbox"],
        service=schema,
        outbox_hours=24,
        inbox_hours=inbox_hours,
        kafka_hours=kafka_hours,
        expiring=[rows],
        chunk=1,
    )


async def fill(db: Database) -> None:
    """Outbox rows published 2 days and 1 hour ago, unpublished for 30 days; inbox rows
    handled 16 days and 1 hour ago."""
    now = datetime.now(UTC)
    outbox_rows = [
        ("old-sent", now - 48 * HOUR, now - 48 * HOUR),
        ("unsent", now - 720 * HOUR, None),
        ("old-sent", now - 47 * HOUR, now - 47 * HOUR),
        ("new-sent", now - HOUR, now - HOUR),
        ("old-sent", now - 46 * HOUR, now - 46 * HOUR),
    ]
    async with db.transaction() as conn:
        for key, created, sent in outbox_rows:
            await conn.execute(
                insert(outbox).values(
                    topic="t", key=key.encode(), value=b"{}", created_at=created, sent_at=sent
                )
            )
        for i in range(3):
            await conn.execute(
                insert(inbox).values(key=f"old-{i}", topic="t", handled_at=now - 384 * HOUR)
            )
        await conn.execute(insert(inbox).values(key="new", topic="t", handled_at=now - HOUR))


async def left(db: Database) -> tuple[list[bytes], list[str]]:
    async with db.transaction() as conn:
        keys = list((await conn.execute(select(outbox.c.key).order_by(outbox.c.id))).scalars())
        handled = list((await conn.execute(select(inbox.c.key).order_by(inbox.c.key))).scalars())
    return keys, handled


async def test_rows_past_their_retention_go_and_unpublished_rows_stay(
    infrastructure: system.Infrastructure,
) -> None:
    async with orders_tables(infrastructure) as db:
        await fill(db)
        month_ago = datetime.now(UTC) - timedelta(days=30)
        async with db.transaction() as conn:  # Kafka refused it for good: an operator's to clear
            await conn.execute(
                insert(outbox).values(
                    topic="t",
                    key=b"set-aside",
                    value=b"{}",
                    created_at=month_ago,
                    refused_at=month_ago,
                    refusal="MessageSizeTooLargeError",
                )
            )
        assert await retention(db).prune() == {"outbox": 3, "inbox": 3}
        assert await left(db) == ([b"unsent", b"new-sent", b"set-aside"], ["new"])
        assert await retention(db).prune() == {"outbox": 0, "inbox": 0}


def test_the_personal_data_page_says_how_long_outbox_rows_set_aside_stay() -> None:
    """docs/personal-data.md gave the outbox "published rows 24 h" and the erasure "outbox rows
    within a day", while a row Kafka refused for good (its buyer's number, its address) is
    never pruned: it is an event still owed, for an operator to publish again or delete. The
    page says how long such a row stays and how it is cleared, and no longer "within a day"
    of every outbox row."""
    page = (REPO_ROOT / "docs" / "personal-data.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| each schema's `outbox`"))
    assert "set aside" in row and "until an operator publishes it again or deletes it" in row
    assert "### Outbox rows set aside" in page
    assert "set refused_at = null, refusal = null where id" in page
    assert "delete from <schema>.outbox where id = ... and refused_at" in page
    assert ", outbox rows within a day" not in page


async def test_events_parked_for_an_order_never_placed_go_with_the_inbox_rows(
    infrastructure: system.Infrastructure,
) -> None:
    """An event waiting for an ``order.placed`` that never comes is not kept for ever: as
    long as an inbox row, since the ``order.placed`` can come as long as Kafka keeps it."""
    parked = notifications.parked
    now = datetime.now(UTC)
    async with orders_tables(infrastructure, "notifications") as db:
        async with db.transaction() as conn:
            for key, at in (("old", now - 384 * HOUR), ("new", now - 300 * HOUR)):
                row = {"key": key, "order_id": key, "topic": "t", "envelope": {}, "parked_at": at}
                await conn.execute(insert(parked).values(row))
        sweep = Retention(
            db,
            notifications.outbox,
            notifications.inbox,
            service="notifications",
            outbox_hours=24,
            inbox_hours=360,
            kafka_hours=None,
            parked=parked,
        )
        assert await sweep.prune() == {"outbox": 0, "inbox": 0, "parked": 1}
        async with db.transaction() as conn:
            assert list((await conn.execute(select(parked.c.key))).scalars()) == ["new"]


async def test_finished_texts_go_after_their_retention_and_not_before_the_inbox_rows(
    infrastructure: system.Infrastructure,
) -> None:
    """Texts that will not change any more (sent, delivered, failed, suppressed) are deleted,
    number and words with them, once older than ``notifications_sms_retention_days``; one
    still to be sent stays however old, and a finished one stays as long as the inbox rows
    of its age (here Kafka keeps records longer than the inbox setting says)."""
    texts = notifications.sms
    now = datetime.now(UTC)
    ages = [(status, 200) for status in STATUSES] + [("delivered", 100), ("delivered", 10)]
    async with orders_tables(infrastructure, "notifications") as db:
        async with db.transaction() as conn:
            for status, days in ages:
                sms_id = f"{status}-{days}"
                row = {
                    "sms_id": sms_id,
                    "dedup_key": f"{sms_id}|+8613900009999|order_confirmed",
                    "purpose": "order_confirmed",
                    "to": "+8613900009999",
                    "locale": "en",
                    "text": "Caravan: order T-1 confirmed",
                    "encoding": "GSM-7",
                    "segments": 1,
                    "status": status,
                    "created_at": now - days * 24 * HOUR,
                }
                await conn.execute(insert(texts).values(row))

        def sweep(days: float, inbox_hours: float, kafka_hours: float | None = None) -> Retention:
            async def kept() -> float:
                assert kafka_hours is not None
                return kafka_hours

            settings = Settings(notifications_sms_retention_days=days, inbox_retention_hours=24)
            kafka = kept if kafka_hours is not None else None
            return expiring_rows(db, finished_texts(settings), inbox_hours, kafka)

        async def left() -> list[str]:
            async with db.transaction() as conn:
                found = await conn.execute(select(texts.c.sms_id).order_by(texts.c.sms_id))
                return list(found.scalars())

        assert await sweep(180, 912).prune() == {"outbox": 0, "inbox": 0, "sms": 4}
        assert await left() == ["delivered-10", "delivered-100", "pending-200", "sending-200"]
        # A day's setting, but Kafka keeps records 2,000 hours: texts 2,024 hours (84 days).
        assert await sweep(1, 24, kafka_hours=2000).prune() == {"outbox": 0, "inbox": 0, "sms": 1}
        assert await left() == ["delivered-10", "pending-200", "sending-200"]
        assert await sweep(0, 24).prune() == {"outbox": 0, "inbox": 0, "sms": 0}


async def test_delivery_addresses_of_ended_orders_are_erased_after_their_retention(
    infrastructure: system.Infrastructure,
) -> None:
    """An order confirmed or cancelled more than ``orders_delivery_retention_days`` ago
    loses its delivery address, and the API says when; a pending order keeps its own however
    old, and so does an order that ended more recently; an order placed without one is not
    said to have lost one."""
    now = datetime.now(UTC)
    address = {"county": "Shawan", "address": "Village 3"}
    ages = [
        ("confirmed-200", "confirmed", 200, address),
        ("cancelled-200", "cancelled", 200, address),
        ("pending-200", "pending", 200, address),
        ("confirmed-100", "confirmed", 100, address),
        ("confirmed-10", "confirmed", 10, address),
        ("none-200", "confirmed", 200, None),  # JSON null, as an order without one is stored
    ]
    async with orders_tables(infrastructure) as db:
        async with db.transaction() as conn:
            for order_id, status, days, delivery in ages:
                at = now - days * 24 * HOUR
                row = {
                    "order_id": order_id,
                    "source": "storefront/test",
                    "order_ref": order_id,
                    "request_hash": "h",
                    "buyer_id": "b",
                    "lines": [{"sku": "T-PEPPER", "quantity": 1}],
                    "payment_method": "prepaid",
                    "status": status,
                    "stock": "done",
                    "payment": "done",
                    "delivery": delivery,
                    "placed_at": at,
                    "deadline_at": at,
                    "updated_at": at,
                }
                await conn.execute(insert(orders_table).values(row))

        def sweep(days: float) -> Retention:
            settings = Settings(orders_delivery_retention_days=days)
            return expiring_rows(db, ended_deliveries(settings))

        async def views() -> dict[str, tuple[object, bool]]:
            async with db.engine.connect() as conn:
                found = [await order_view(conn, order_id) for order_id, *_ in ages]
            return {v.order_id: (v.delivery, v.delivery_erased_at is not None) for v in found if v}

        assert await sweep(180).prune() == {"outbox": 0, "inbox": 0, "orders": 2}
        kept = Delivery.model_validate(address)
        assert await views() == {
            "confirmed-200": (None, True),
            "cancelled-200": (None, True),
            "pending-200": (kept, False),
            "confirmed-100": (kept, False),
            "confirmed-10": (kept, False),
            "none-200": (None, False),
        }
        assert await sweep(180).prune() == {"outbox": 0, "inbox": 0, "orders": 0}
        assert await sweep(0).prune() == {"outbox": 0, "inbox": 0, "orders": 0}
        # Never before the inbox rows of their age (912 hours, 38 days), however short.
        assert await sweep(1).prune() == {"outbox": 0, "inbox": 0, "orders": 1}
        erased = await views()
        assert erased["confirmed-100"] == (None, True) and erased["confirmed-10"] == (kept, False)


async def test_recipients_nothing_can_text_go_after_their_retention(
    infrastructure: system.Infrastructure,
) -> None:
    """A buyer whom nothing can text about their order any more (``done_at``) is deleted,
    number with them, ``notifications_recipient_retention_days`` after that; one of an order
    in flight or with a loan to repay (no ``done_at``) stays however old, and so does one
    with a text of the order still to be sent."""
    now = datetime.now(UTC)
    ages = [("done-200", 200), ("done-100", 100), ("loan", None), ("texting-200", 200)]
    async with orders_tables(infrastructure, "notifications") as db:
        async with db.transaction() as conn:
            for order_id, days in ages:
                done = None if days is None else now - days * 24 * HOUR
                row = {
                    "order_id": order_id,
                    "order_ref": order_id,
                    "phone": "+8613900009999",
                    "locale": "en",
                    "done_at": done,
                }
                await conn.execute(insert(notifications.recipients).values(row))
            text_row = {
                "sms_id": "s-1",
                "dedup_key": "s-1|+8613900009999|instalment_today",
                "purpose": "instalment_today",
                "to": "+8613900009999",
                "locale": "en",
                "text": "Caravan: instalment 1 of order T-1 is due today",
                "encoding": "GSM-7",
                "segments": 1,
                "order_id": "texting-200",
                "status": "sending",
            }
            await conn.execute(insert(notifications.sms).values(text_row))

        def sweep(days: float) -> Retention:
            settings = Settings(notifications_recipient_retention_days=days)
            return expiring_rows(db, done_recipients(settings))

        async def left() -> list[str]:
            async with db.transaction() as conn:
                query = select(notifications.recipients.c.order_id).order_by("order_id")
                return list((await conn.execute(query)).scalars())

        assert await sweep(180).prune() == {"outbox": 0, "inbox": 0, "recipients": 1}
        assert await left() == ["done-100", "loan", "texting-200"]
        assert await sweep(0).prune() == {"outbox": 0, "inbox": 0, "recipients": 0}
        async with db.transaction() as conn:
            await conn.execute(notifications.sms.update().values(status="delivered", sent_at=now))
        assert await sweep(30).prune() == {"outbox": 0, "inbox": 0, "recipients": 2}
        assert await left() == ["loan"]


async def test_zero_keeps_a_table_for_ever_and_a_shorter_retention_takes_more(
    infrastructure: system.Infrastructure,
) -> None:
    async with orders_tables(infrastructure) as db:
        await fill(db)
        assert await retention(db, outbox_hours=0, inbox_hours=0).prune() == {
            "outbox": 0,
            "inbox": 0,
        }
        assert await retention(db, outbox_hours=0.5, inbox_hours=0.5).prune() == {
            "outbox": 4,
            "inbox": 4,
        }
        assert await left(db) == ([b"unsent"], [])


async def test_rows_locked_by_another_transaction_are_skipped_without_waiting(
    infrastructure: system.Infrastructure,
) -> None:
    async with orders_tables(infrastructure) as db:
        await fill(db)
        async with db.transaction() as holder:
            await holder.execute(select(inbox).where(inbox.c.key == "old-1").with_for_update())
            pruned = await asyncio.wait_for(retention(db).prune(), timeout=10)
        assert pruned == {"outbox": 3, "inbox": 2}
        assert (await left(db))[1] == ["new", "old-1"]


async def test_a_service_prunes_its_own_tables_when_it_starts(caravan: System) -> None:
    """The orders service, restarted, deletes one order's outbox and inbox rows once they
    are made older than their retention, and leaves another order's alone."""
    requests, ids = [], []
    for req in (order(), order()):
        requests.append(await caravan.request(req))
        ids.append(await caravan.placed(req.order_ref))
    for order_id in ids:
        assert (await caravan.outcome(order_id)).type == "order.confirmed"

    def inbox_keys(i: int) -> list[str]:
        """The orders service's inbox keys of order ``i``'s request and of the inventory and
        payment events about it (those it handled are in its inbox)."""
        consumed = [requests[i]] + [
            e
            for topic in (Topic.INVENTORY_EVENTS, Topic.PAYMENT_EVENTS)
            for e in caravan.log.events(topic, order_id=ids[i])
        ]
        return [f"{e.source}|{e.id}" for e in consumed]

    async def rows(i: int, age: timedelta = timedelta(0)) -> tuple[set[int], set[str]]:
        """Order ``i``'s published outbox rows and inbox rows in the orders schema, made
        ``age`` older."""
        assert caravan.engine is not None
        async with caravan.engine.begin() as conn:
            published = await conn.execute(
                text(
                    "update orders.outbox set sent_at = sent_at - cast(:age as interval)"
                    " where key = :k and sent_at is not null returning id"
                ),
                {"k": ids[i].encode(), "age": age},
            )
            handled = await conn.execute(
                text(
                    "update orders.inbox set handled_at = handled_at - cast(:age as interval)"
                    " where key = any(:keys) returning key"
                ),
                {"keys": inbox_keys(i), "age": age},
            )
            return set(published.scalars()), set(handled.scalars())

    # The relay marks a row sent after Kafka has it: the log may have read order.confirmed
    # before its row was marked.
    keys = [order_id.encode() for order_id in ids]
    await until(
        lambda: caravan.scalar(
            "select count(*) from orders.outbox where key = any(:keys) and sent_at is null",
            keys=keys,
        ),
        "every outbox row of the orders to be sent",
        every=0.2,
        ready=lambda unsent: not unsent,
    )
    kept = await rows(1)
    # Past the default retention: 24 hours after publishing, 912 hours after handling (the
    # dead-letter topics' 30 days, a segment of 7 and a day).
    pruned = await rows(0, age=913 * HOUR)
    assert all(len(found) >= 2 for found in (*kept, *pruned)), (kept, pruned)
    await caravan.restart(("orders",))
    await until(
        lambda: rows(0),
        "the aged outbox and inbox rows of order 0 to be pruned",
        every=0.2,
        ready=lambda left: not (left[0] & pruned[0]) and not (left[1] & pruned[1]),
    )
    outbox_kept, inbox_kept = await rows(1)
    assert kept[0] <= outbox_kept and kept[1] <= inbox_kept


async def test_notifications_prunes_its_old_texts_and_their_event_again_texts_no_one(
    caravan: System,
) -> None:
    """Notifications, restarted, deletes a text sent more than 180 days ago (made so here)
    and leaves a newer one; the event that asked for the deleted text, delivered again while
    its inbox row is there (it is for as long as Kafka may deliver the event), texts no one."""
    phones = ["+86136" + "".join(random.choices(digits, k=8)) for _ in range(2)]
    orders = [order_events(ref("TEXTED"), phone) for phone in phones]
    confirmed = []
    for events in orders:
        await caravan.publish(events.placed)
        confirmed.append(await caravan.publish(events.confirmed))

    def sent(phone: str) -> list[CloudEvent]:
        return caravan.log.events(Topic.NOTIFICATION_EVENTS, type="sms.sent", to=phone)

    for phone in phones:
        await caravan.wait_for(partial(sent, phone))
    ids = [events.placed.order_id for events in orders]

    async def texts(order_id: str) -> int:
        query = "select count(*) from notifications.sms where order_id = :o"
        return int(await caravan.scalar(query, o=order_id))

    assert [await texts(order_id) for order_id in ids] == [1, 1]
    await caravan.execute(
        "update notifications.sms set created_at = created_at - interval '181 days'"
        " where order_id = :o",
        o=ids[0],
    )
    await caravan.restart(("notifications",))
    await until(
        lambda: texts(ids[0]), "the aged text to be pruned", every=0.2, ready=lambda n: n == 0
    )
    assert await texts(ids[1]) == 1
    async with caravan.api("notifications") as client:
        page = (await client.get("/metrics")).text
    pruned = [
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "caravan_messaging_rows_pruned_total"
        and sample.labels == {"service": "notifications", "table": "sms"}
    ]
    assert pruned and pruned[0] >= 1, pruned

    again = await caravan.publish_raw(
        Topic.ORDER_EVENTS.value, confirmed[0].to_json(), ids[0].encode()
    )
    await caravan.consumed("notifications", again)
    assert await texts(ids[0]) == 0
    assert len(sent(phones[0])) == 1


async def test_orders_erases_an_old_delivery_address_and_the_api_says_so(caravan: System) -> None:
    """The orders service, restarted, erases the delivery address of an order confirmed more
    than 180 days ago (made so here) and not another's; GET /orders/{id} says when, and the
    same request again (a client's retry, a replay) finds the order and brings nothing back."""
    http = caravan.client
    body = {
        "buyer": {"id": "t-rich", "phone": "+8613900000001", "locale": "en"},
        "lines": [{"sku": "T-PEPPER", "quantity": 1}],
        "payment": {"method": "prepaid"},
        "delivery": {"county": "Shawan", "address": "Village 3"},
    }
    keys, ids = [ref("ERASED"), ref("KEPT")], []
    for key in keys:
        placed = await http.post("/orders", json=body, headers={"Idempotency-Key": key})
        assert placed.status_code == 202, placed.text
        ids.append(placed.json()["order_id"])
    for order_id in ids:
        assert (await caravan.outcome(order_id)).type == "order.confirmed"

    async def view(order_id: str) -> dict[str, object]:
        answer: dict[str, object] = (await http.get(f"/orders/{order_id}")).json()
        return answer

    assert (await view(ids[0]))["delivery"] == body["delivery"]
    await caravan.execute(
        "update orders.orders set updated_at = updated_at - interval '181 days'"
        " where order_id = :o",
        o=ids[0],
    )
    await caravan.restart(("orders",))
    erased = await until(
        lambda: view(ids[0]),
        "the aged order's delivery address to be erased",
        every=0.2,
        ready=lambda seen: seen["delivery"] is None,
    )
    assert erased["delivery_erased_at"] is not None and erased["status"] == "confirmed"
    kept = await view(ids[1])
    assert kept["delivery"] == body["delivery"] and kept["delivery_erased_at"] is None
    again = await http.post("/orders", json=body, headers={"Idempotency-Key": keys[0]})
    assert again.status_code == 202 and again.json()["order_id"] == ids[0]
    assert await view(ids[0]) == erased


async def test_notifications_forgets_buyers_it_cannot_text_any_more_and_texts_no_one_after(
    caravan: System,
) -> None:
    """Notifications, restarted, deletes the buyer of an order confirmed without a loan, of
    one whose loan was repaid, and of one cancelled, once 180 days have passed since (made so
    here); the buyer
    of an order whose loan is still being repaid stays, however old. A reminder of an order
    whose buyer is gone (which payments no longer sends: its loan was repaid) texts no one,
    and nothing fails."""
    phones = ["+86137" + "".join(random.choices(digits, k=8)) for _ in range(4)]
    orders = [order_events(ref("FORGOT"), phone) for phone in phones]
    ids = [events.placed.order_id for events in orders]
    loans = {ids[1]: f"loan-{ids[1]}"[:36], ids[2]: f"loan-{ids[2]}"[:36]}  # a loan id: 36 at most
    for events in orders:
        order_id = events.placed.order_id
        await caravan.publish(events.placed)
        ended: OrderConfirmed | OrderCancelled = events.confirmed
        if order_id in loans:
            payment = ConfirmedPayment(method="microloan", loan_id=loans[order_id])
            ended = events.confirmed.model_copy(update={"payment": payment})
        elif order_id == ids[3]:
            ended = events.cancelled
        await caravan.publish(ended)

    def sent(phone: str) -> list[CloudEvent]:
        return caravan.log.events(Topic.NOTIFICATION_EVENTS, type="sms.sent", to=phone)

    for phone in phones:
        await caravan.wait_for(partial(sent, phone))
    # Its buyer known (the confirmation sent), the loan of the second order is repaid.
    repaid = PaymentRepaid(
        order_id=ids[1],
        loan_id=loans[ids[1]],
        buyer_id="t-rich",
        repayment_id="r-1",
        amount_fen=3500,
        principal_fen=3500,
        interest_fen=0,
        outstanding_fen=0,
        remaining_fen=0,
        fully_repaid=True,
    )
    await caravan.handled("notifications", await caravan.publish(repaid, "caravan/payments"))

    async def buyers() -> list[str]:
        rows = await caravan.sql(
            "select order_id from notifications.recipients where order_id = any(:o)", o=ids
        )
        return sorted(r.order_id for r in rows)

    assert await buyers() == sorted(ids)
    await caravan.execute(
        "update notifications.recipients set done_at = done_at - interval '181 days'"
        " where order_id = any(:o)",
        o=ids,
    )
    await caravan.restart(("notifications",))
    await until(buyers, "three buyers to be forgotten", every=0.2, ready=[ids[2]].__eq__)

    due = InstalmentDue(
        order_id=ids[1],
        loan_id=loans[ids[1]],
        buyer_id="t-rich",
        number=1,
        due=days.today() + timedelta(days=3),
        amount_fen=3500,
        stage="upcoming",
    )
    late = await caravan.publish(due, "caravan/payments")
    await caravan.handled("notifications", late)
    texts = await caravan.scalar(
        "select count(*) from notifications.sms where order_id = :o and purpose like 'inst%'",
        o=ids[1],
    )
    assert texts == 0
    assert not caravan.log.events(Topic.NOTIFICATION_EVENTS, type="sms.failed", order_id=ids[1])
    assert len(sent(phones[1])) == 1


DAY_MS = 24 * 3_600_000


async def topics_with(bootstrap: str, **configs: dict[str, str]) -> dict[str, str]:
    """A new topic per keyword, with those configurations; their names by keyword."""
    names = {key: f"test-retention-{key}-{uuid.uuid4().hex[:8]}" for key in configs}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(names[k], 1, 1, topic_configs=c) for k, c in configs.items()]
        )
    finally:
        await admin.close()
    return names


@pytest.fixture(scope="module")
async def kept(infrastructure: system.Infrastructure) -> dict[str, str]:
    return await topics_with(
        infrastructure.kafka_bootstrap,
        month={"retention.ms": str(30 * DAY_MS), "segment.ms": str(DAY_MS)},
        default={},  # the broker's: 7 days, segments of 7 days
        forever={"retention.ms": "-1"},
        compacted={"cleanup.policy": "compact"},
        both={"cleanup.policy": "compact,delete", "retention.ms": str(DAY_MS)},
    )


async def test_how_long_kafka_keeps_records_is_read_from_the_topics_configuration(
    infrastructure: system.Infrastructure, kept: dict[str, str]
) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    assert await longest_kept_hours(bootstrap, [kept["default"]]) == 14 * 24
    assert await longest_kept_hours(bootstrap, [kept["default"], kept["month"]]) == 31 * 24
    assert await longest_kept_hours(bootstrap, [kept["month"], kept["forever"]]) == math.inf
    assert await longest_kept_hours(bootstrap, [kept["compacted"]]) == math.inf
    # compacted and deleted by age: a day, and the broker's segments of 7 days
    assert await longest_kept_hours(bootstrap, [kept["both"]]) == 8 * 24


async def test_inbox_rows_outlive_what_kafka_keeps_however_short_the_setting(
    infrastructure: system.Infrastructure, kept: dict[str, str]
) -> None:
    """The month topic keeps records up to 744 hours: with a setting of 360, inbox rows are
    kept 768 (a day more); one handled 800 hours ago goes, those of 384 hours stay."""
    bootstrap = infrastructure.kafka_bootstrap

    def kafka(topic: str) -> Callable[[], Awaitable[float]]:
        return lambda: longest_kept_hours(bootstrap, [topic])

    async with orders_tables(infrastructure) as db:
        await fill(db)
        async with db.transaction() as conn:
            await conn.execute(
                insert(inbox).values(
                    key="older", topic="t", handled_at=datetime.now(UTC) - 800 * HOUR
                )
            )
        month = retention(db, kafka_hours=kafka(kept["month"]))
        assert await month.inbox_keep_hours() == 768
        assert await month.prune() == {"outbox": 3, "inbox": 1}
        assert (await left(db))[1] == ["new", "old-0", "old-1", "old-2"]
        forever = retention(db, inbox_hours=0.5, kafka_hours=kafka(kept["forever"]))
        assert await forever.prune() == {"outbox": 0, "inbox": 0}
        # The broker's defaults (336 hours and a day) are within the setting: 360 it is.
        default = retention(db, kafka_hours=kafka(kept["default"]))
        assert await default.inbox_keep_hours() == 360
        assert await default.prune() == {"outbox": 0, "inbox": 3}
        assert (await left(db))[1] == ["new"]


async def test_no_inbox_row_is_pruned_when_the_broker_does_not_say(
    infrastructure: system.Infrastructure,
) -> None:
    async def unreachable() -> float:
        raise ConnectionError("no broker")

    async with orders_tables(infrastructure) as db:
        await fill(db)
        assert await retention(db, kafka_hours=unreachable).prune() == {"outbox": 3, "inbox": 0}


async def retention_ms(bootstrap: str, topics: list[str]) -> dict[str, str]:
    """Each topic's ``retention.ms``, as the broker describes it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    return {
        topic: dict(entry[:2] for entry in entries)["retention.ms"]
        for response in responses
        for _code, _message, _type, topic, entries in response.resources
    }


async def test_prepared_dead_letter_topics_keep_letters_as_long_as_the_settings_say(
    caravan: System,
) -> None:
    """The session's `caravan prepare` (the settings' default, 30 days): the dead-letter
    topics had the broker's 7 days, after which `caravan dlq list` found none of the letters
    caravan_dead_letters_total counted. Prepared again with another setting, it says which
    topics keep another retention and leaves them so."""
    bootstrap = caravan.infra.kafka_bootstrap
    month = str(30 * DAY_MS)
    topics = await retention_ms(bootstrap, list(ALL_TOPICS))
    assert topics == {t: month if t in DEAD_LETTER_TOPICS else str(7 * DAY_MS) for t in ALL_TOPICS}
    week = Settings(dlq_retention_hours=7 * 24)
    said = await ensure_topics(bootstrap, 3, 1, settings=week)
    assert said.other_retention == dict.fromkeys(DEAD_LETTER_TOPICS, 30 * DAY_MS)
    assert await retention_ms(bootstrap, list(DEAD_LETTER_TOPICS)) == dict.fromkeys(
        DEAD_LETTER_TOPICS, month
    )
