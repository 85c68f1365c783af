"""Loading and saving orders; saving also hands the events they recorded to the outbox.

Orders loaded in a transaction are kept in its identity map (``Tx.identity``): a batch that
brings several events of one order changes one ``Order``, and a batch's orders are loaded
and locked in one statement (:meth:`OrderRepository.load`). Adding and saving are written at
commit, one statement for all the orders of the transaction.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import get_args

import orjson
from prometheus_client import Counter
from sqlalchemy import ARRAY, BigInteger, String, and_, bindparam, func, select, true

from services.orders.adapters.tables import order_sellers, orders, outbox, timeline
from services.orders.domain.order import Order
from shared.db import driver
from shared.events.orders import (
    CancelReason,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    ScheduledInstalment,
)
from shared.messaging.uow import Tx
from shared.metrics import owned_by, start_at_zero
from shared.telemetry import current_trace_headers
from shared.topics import EventType, Topic

ORDER = "orders.order"
REF = "orders.ref"

ENDED = Counter(
    "caravan_orders_ended",
    "Orders that ended, by status (confirmed, cancelled) and reason (a cancelled order's:"
    " expired, payment_failed, out_of_stock, ...; none for a confirmed one), counted as the"
    " transaction that ended each commits",
    ["status", "reason"],
)
owned_by("orders", ENDED)
start_at_zero(ENDED, ("confirmed",), ("",))
start_at_zero(ENDED, ("cancelled",), get_args(CancelReason))

ByRef = tuple[str, str, str, str | None]
"""(order_id, status, request_hash, placed_by) of the order with an idempotency key."""


# The statements that load a batch's orders run on the driver (driver.fetch).
_ORDERS = driver.locked_by_key(select(orders), orders.c.order_id)
_refs = (
    func.unnest(bindparam("sources", type_=ARRAY(String)), bindparam("refs", type_=ARRAY(String)))
    .table_valued("source", "order_ref")
    .render_derived()
)
_REFS = select(
    orders.c.order_id,
    orders.c.status,
    orders.c.request_hash,
    orders.c.placed_by,
    orders.c.source,
    orders.c.order_ref,
).join(_refs, and_(orders.c.source == _refs.c.source, orders.c.order_ref == _refs.c.order_ref))


PROBES = 32
_ats = func.unnest(bindparam("ats", type_=ARRAY(BigInteger))).table_valued("at").render_derived()
_first = (
    select(outbox.c.id, outbox.c.created_at, outbox.c.sent_at)
    .where(outbox.c.id >= _ats.c.at)
    .order_by(outbox.c.id)
    .limit(1)
    .lateral()
)
_PROBE = (
    select(_ats.c.at, _first.c.id, _first.c.created_at, _first.c.sent_at)
    .select_from(_ats.outerjoin(_first, true()))
    .order_by(_ats.c.at)
)
"""The first outbox row at or after each of the ids ``ats``, if any."""


@dataclass(frozen=True)
class Probe:
    """The times of an outbox row that :meth:`OrderRepository._bisect` found."""

    created_at: datetime
    sent_at: datetime | None


SAME_STATEMENT = timedelta(seconds=30)
"""More than lies between two rows of one statement of a transaction's commit (an outbox
row and its timeline step), or between the start of the relay's transaction and the rows
it sees."""


@dataclass(frozen=True)
class Emitted:
    """An order's event as its outbox row holds it: the very record that went, or goes, to
    Kafka (``sent``: the relay has published it)."""

    key: bytes | None
    value: bytes
    headers: dict[str, str]
    sent: bool


class OrderRepository:
    """Orders of one transaction. ``get`` and ``load`` lock the rows until it ends."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx

    async def add(self, order: Order, request_hash: str, placed_by: str | None = None) -> None:
        """Insert a new order when the transaction commits (``placed_by``: the name of the
        token that placed it over HTTP). Its idempotency key was looked up
        (:meth:`find_by_ref`) and not found; if a concurrent transaction commits an order with
        the same key first, this one fails to commit (a unique violation), and handling the
        request again finds that order."""
        self.tx.insert_later(
            orders,
            {
                "order_id": order.order_id,
                "source": order.source,
                "order_ref": order.order_ref,
                "request_hash": request_hash,
                "buyer_id": order.buyer_id,
                "lines": [line.model_dump() for line in order.lines],
                "delivery": order.delivery.model_dump() if order.delivery else None,
                "payment_method": order.payment_method,
                "term_months": order.term_months,
                "status": order.status,
                "stock": order.stock,
                "payment": order.payment,
                "placed_at": order.placed_at,
                "deadline_at": order.deadline_at,
                # The trace of the request placing it: the expiry sweep continues it.
                "trace_headers": current_trace_headers() or None,
                "placed_by": placed_by,
            },
        )
        self.tx.identity[REF, (order.source, order.order_ref)] = (
            order.order_id,
            order.status,
            request_hash,
            placed_by,
        )
        await self._flush_events(order)

    async def get(self, order_id: str) -> Order | None:
        if (ORDER, order_id) not in self.tx.identity:
            await self.load([order_id])
        order: Order | None = self.tx.identity[ORDER, order_id]
        return order

    async def load(self, order_ids: Iterable[str]) -> None:
        """Load and lock these orders (those not loaded yet), in one statement."""
        todo = self.tx.unknown(ORDER, order_ids)
        if not todo:
            return
        rows = await driver.fetch(self.tx.conn, _ORDERS, keys=todo)
        self.tx.remember(ORDER, todo, {r.order_id: _to_order(r) for r in rows})

    async def find_by_ref(self, source: str, order_ref: str) -> ByRef | None:
        """The order with this idempotency key (None: none committed, nor added here)."""
        if (REF, (source, order_ref)) not in self.tx.identity:
            await self.load_refs([(source, order_ref)])
        found: ByRef | None = self.tx.identity[REF, (source, order_ref)]
        return found

    async def load_refs(self, keys: Iterable[tuple[str, str]]) -> None:
        """Look these idempotency keys up, in one statement."""
        todo = self.tx.unknown(REF, keys)
        if not todo:
            return
        sources, refs = [source for source, _ in todo], [ref for _, ref in todo]
        rows = await driver.fetch(self.tx.conn, _REFS, sources=sources, refs=refs)
        found = {
            (r.source, r.order_ref): (r.order_id, r.status, r.request_hash, r.placed_by)
            for r in rows
        }
        self.tx.remember(REF, todo, found)

    async def due_for_expiry(
        self, now: datetime, limit: int = 100
    ) -> list[tuple[str, dict[str, str] | None]]:
        """Pending orders past their deadline, row-locked (others' locked rows skipped): each
        with the trace context of the request that placed it (None before 2026-12-04)."""
        rows = await self.tx.conn.execute(
            select(orders.c.order_id, orders.c.trace_headers)
            .where(orders.c.status == "pending", orders.c.deadline_at <= now)
            .order_by(orders.c.deadline_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [(r.order_id, r.trace_headers) for r in rows]

    async def save(self, order: Order) -> None:
        """Write ``order`` (loaded by :meth:`get`) when the transaction commits."""
        self.tx.update_later(
            orders,
            "order_id",
            {
                "order_id": order.order_id,
                "status": order.status,
                "stock": order.stock,
                "payment": order.payment,
                "total_fen": order.total_fen,
                "loan_id": order.loan_id,
                "schedule": _schedule(order.schedule),
                "reason": order.reason,
                "skus": order.skus,
                "updated_at": datetime.now(order.placed_at.tzinfo),
            },
        )
        await self._flush_events(order)

    async def emitted(self, order_id: str, event_type: EventType) -> Emitted | None:
        """The latest ``event_type`` event of the order in the outbox (None: none, it was
        pruned past ``outbox_retention_hours``, or set aside, Kafka refusing it for good).
        For the rare order whose end a consumer never applied, not for every order: read by
        the order's key in the few ids around when its timeline says the event was written
        (:meth:`_ids_around`), without an index of its own, which every insert would pay."""
        query = (
            select(outbox.c.key, outbox.c.value, outbox.c.headers, outbox.c.sent_at)
            .where(
                outbox.c.topic == Topic.ORDER_EVENTS.value,
                outbox.c.key == order_id.encode(),
                outbox.c.refused_at.is_(None),  # set aside: Kafka refused it, it never goes
            )
            .order_by(outbox.c.id.desc())
        )
        written = await self.tx.conn.scalar(
            select(func.max(timeline.c.time)).where(
                timeline.c.order_id == order_id, timeline.c.type == event_type.value
            )
        )
        if written is not None:  # else a scan of the whole outbox, as good as any bound
            low, high = await self._ids_around(written)
            query = query.where(outbox.c.id > low)
            if high is not None:
                query = query.where(outbox.c.id < high)
        for row in await self.tx.conn.execute(query):
            if orjson.loads(row.value).get("type") == event_type.value:
                return Emitted(row.key, row.value, row.headers, row.sent_at is not None)
        return None

    async def _ids_around(self, written: datetime) -> tuple[int, int | None]:
        """Ids between which lies that of every outbox row inserted by the statement that
        wrote a timeline step at ``written``, found by bisecting the primary key (the times
        have no index). Below: a row the relay marked sent (``sent_at``, the start of its
        transaction) before ``written`` less :data:`SAME_STATEMENT`, so committed before
        that statement and numbered before its rows. Above (None: no such row yet): a row
        whose transaction began (``created_at``) after ``written`` and the margin, so
        numbered after them. Times ascend with ids only roughly (rows are unsent, or dated
        when their transaction began), which makes the range wider, never wrong."""
        low, _ = await self._bisect(
            lambda row: row.sent_at is None or row.sent_at >= written - SAME_STATEMENT
        )
        _, high = await self._bisect(
            lambda row: row.created_at > written + SAME_STATEMENT, start=low
        )
        return low, high

    async def _bisect(
        self, beyond: Callable[[Probe], bool], start: int = 0
    ) -> tuple[int, int | None]:
        """The id of the last outbox row after ``start`` found not ``beyond`` (``start``:
        none) and of the first found ``beyond`` (None: none): index lookups of the primary
        key, :data:`PROBES` a statement, each statement narrowing the ids between them
        that many times."""
        conn = self.tx.conn
        low, high = start, None
        lo, hi = start + 1, (await conn.scalar(select(func.max(outbox.c.id))) or 0) + 1
        while lo < hi:
            step = -(-(hi - lo) // PROBES)
            probed = await conn.execute(_PROBE, {"ats": list(range(lo, hi, step))})
            for at, row_id, created_at, sent_at in probed:
                if row_id is None or beyond(Probe(created_at, sent_at)):
                    hi, high = at, high if row_id is None else row_id
                    break
                lo, low = row_id + 1, row_id
        return low, high

    async def record(
        self,
        order_id: str,
        event_type: str,
        amount_fen: int | None = None,
        reference: str | None = None,
    ) -> None:
        """Add a step (an event that reached this order) to its timeline, with what it names
        that an operator reads there (a refund's amount and transfer reference)."""
        step = {"order_id": order_id, "type": event_type}
        self.tx.insert_later(timeline, step | {"amount_fen": amount_fen, "reference": reference})

    def sold_by(self, order_id: str, sellers: Iterable[str]) -> None:
        """Keep the sellers whose goods the order holds (``GET /orders?seller=``); those kept
        before, by a reservation read again, are left as they are."""
        for seller_id in sorted(sellers):
            row: dict[str, object] = {"seller_id": seller_id, "order_id": order_id}
            self.tx.insert_later(order_sellers, row, skip_existing=True)

    async def _flush_events(self, order: Order) -> None:
        for event in order.events:
            await self.tx.emit(event)
            await self.record(order.order_id, event.event_type.value)
            if isinstance(event, OrderConfirmed):
                self.tx.after_commit(ENDED.labels("confirmed", "").inc)
            elif isinstance(event, OrderCancelled):
                self.tx.after_commit(ENDED.labels("cancelled", event.reason).inc)
        order.events.clear()


def _to_order(m: driver.Row) -> Order:
    return Order(
        order_id=m["order_id"],
        order_ref=m["order_ref"],
        source=m["source"],
        buyer_id=m["buyer_id"],
        lines=[OrderLine.model_validate(x) for x in m["lines"]],
        payment_method=m["payment_method"],
        term_months=m["term_months"],
        placed_at=m["placed_at"],
        deadline_at=m["deadline_at"],
        status=m["status"],
        stock=m["stock"],
        payment=m["payment"],
        total_fen=m["total_fen"],
        loan_id=m["loan_id"],
        schedule=None
        if m["schedule"] is None
        else [ScheduledInstalment.model_validate(x) for x in m["schedule"]],
        reason=m["reason"],
        skus=m["skus"],
    )


def _schedule(schedule: list[ScheduledInstalment] | None) -> list[dict[str, object]] | None:
    return None if schedule is None else [i.model_dump(mode="json") for i in schedule]
