"""Loading and saving orders; saving also hands the events they recorded to the outbox.

Orders loaded in a transaction are kept in its identity map (``Tx.identity``): a batch that
brings several events of one order changes one ``Order``, and a batch's orders are loaded
and locked in one statement (:meth:`OrderRepository.load`). Adding and saving are written at
commit, one statement for all the orders of the transaction.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import ARRAY, String, and_, bindparam, func, select

from services.orders.adapters.tables import orders, outbox, timeline
from services.orders.domain.order import Order
from shared.db import driver
from shared.events.orders import OrderLine, ScheduledInstalment
from shared.messaging.uow import Tx
from shared.telemetry import current_trace_headers
from shared.topics import EventType, Topic

ORDER = "orders.order"
REF = "orders.ref"

ByRef = tuple[str, str, str]
"""(order_id, status, request_hash) of the order with an idempotency key."""


# The statements that load a batch's orders run on the driver (driver.fetch).
_ORDERS = driver.locked_by_key(select(orders), orders.c.order_id)
_refs = (
    func.unnest(bindparam("sources", type_=ARRAY(String)), bindparam("refs", type_=ARRAY(String)))
    .table_valued("source", "order_ref")
    .render_derived()
)
_REFS = select(
    orders.c.order_id, orders.c.status, orders.c.request_hash, orders.c.source, orders.c.order_ref
).join(_refs, and_(orders.c.source == _refs.c.source, orders.c.order_ref == _refs.c.order_ref))


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

    async def add(self, order: Order, request_hash: str) -> None:
        """Insert a new order when the transaction commits. Its idempotency key was looked up
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
            },
        )
        self.tx.identity[REF, (order.source, order.order_ref)] = (
            order.order_id,
            order.status,
            request_hash,
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
        found = {(r.source, r.order_ref): (r.order_id, r.status, r.request_hash) for r in rows}
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
                "updated_at": datetime.now(order.placed_at.tzinfo),
            },
        )
        await self._flush_events(order)

    async def emitted(self, order_id: str, event_type: EventType) -> Emitted | None:
        """The latest ``event_type`` event of the order in the outbox (None: none, it was
        pruned past ``outbox_retention_hours``, or set aside, Kafka refusing it for good).
        Read by the order's key, without an index: for the rare order whose end a consumer
        never applied, not for every order."""
        rows = await self.tx.conn.execute(
            select(outbox.c.key, outbox.c.value, outbox.c.headers, outbox.c.sent_at)
            .where(
                outbox.c.topic == Topic.ORDER_EVENTS.value,
                outbox.c.key == order_id.encode(),
                outbox.c.refused_at.is_(None),  # set aside: Kafka refused it, it never goes
            )
            .order_by(outbox.c.id.desc())
        )
        for row in rows:
            if orjson.loads(row.value).get("type") == event_type.value:
                return Emitted(row.key, row.value, row.headers, row.sent_at is not None)
        return None

    async def record(self, order_id: str, event_type: str) -> None:
        """Add a step (an event that reached this order) to its timeline."""
        self.tx.insert_later(timeline, {"order_id": order_id, "type": event_type})

    async def _flush_events(self, order: Order) -> None:
        for event in order.events:
            await self.tx.emit(event)
            await self.record(order.order_id, event.event_type.value)
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
    )


def _schedule(schedule: list[ScheduledInstalment] | None) -> list[dict[str, object]] | None:
    return None if schedule is None else [i.model_dump(mode="json") for i in schedule]
