"""Events of ``inventory.events.v1`` (internal: the inventory step of the saga)."""

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from shared.events.envelope import EventData, Fen, Frozen, OrderId
from shared.events.orders import PaymentRequest
from shared.topics import EventType, Topic

StockRejectReason = Literal["unknown_sku", "out_of_stock", "out_of_season"]


class LotTake(Frozen):
    lot_id: str
    quantity: int


class ReservedLine(Frozen):
    sku: str
    quantity: int
    unit_price_fen: Fen
    seller_id: str
    lots: list[LotTake]


class StockReserved(EventData):
    """All lines of an order are held; carries what payments needs to charge for them."""

    topic: ClassVar[Topic] = Topic.INVENTORY_EVENTS
    event_type: ClassVar[EventType] = EventType.STOCK_RESERVED

    order_id: OrderId
    buyer_id: str
    payment: PaymentRequest
    lines: list[ReservedLine]
    total_fen: Fen
    source: str | None = None
    """The order's ``source`` and ``order_ref``: a marketplace platform's (``platform/<app>``)
    prepaid order, once the adapter vouches that the platform was paid for it
    (``platform.order_paid``), is not charged again."""
    order_ref: str | None = None
    held_until: AwareDatetime | None = Field(
        None,
        description=(
            "when the hold lapses: the order's deadline (order.placed's deadline_at), or the"
            " hold's own time (CARAVAN_INVENTORY_HOLD_SECONDS) if that is sooner. Payments,"
            " reading the reservation at or after it, charges and lends nothing: the order can"
            " no longer be confirmed. None in events of before 2026-12-05"
        ),
    )


class StockRejected(EventData):
    topic: ClassVar[Topic] = Topic.INVENTORY_EVENTS
    event_type: ClassVar[EventType] = EventType.STOCK_REJECTED

    order_id: OrderId
    reason: StockRejectReason
    skus: list[str]


class StockReleased(EventData):
    topic: ClassVar[Topic] = Topic.INVENTORY_EVENTS
    event_type: ClassVar[EventType] = EventType.STOCK_RELEASED

    order_id: OrderId
    returned: int
    spoiled: int


class StockSold(EventData):
    topic: ClassVar[Topic] = Topic.INVENTORY_EVENTS
    event_type: ClassVar[EventType] = EventType.STOCK_SOLD

    order_id: OrderId


class StockExpired(EventData):
    """An order's hold ran out before the order was settled. Inventory keeps the stock held:
    orders decides (a pending order is cancelled ``expired``, whose cancellation releases it)."""

    topic: ClassVar[Topic] = Topic.INVENTORY_EVENTS
    event_type: ClassVar[EventType] = EventType.STOCK_EXPIRED

    order_id: OrderId
