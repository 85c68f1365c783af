"""What the orders HTTP API accepts and answers, as documented in its OpenAPI document."""

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.orders.domain.order import Canceller, Status
from shared import http as shared_http
from shared.events.envelope import NoNul
from shared.events.orders import (
    ORDER_REF_PATTERN,
    CancelReason,
    Delivery,
    OrderLine,
    OrderRequested,
)

TOTAL_FEN = (
    "the order's total in fen, as inventory priced its lines (stock.reserved); null until"
    " orders has read the order's stock.reserved or payment.authorized (a pending order's"
    " may be either), and for good on an order cancelled before that: always on one cancelled"
    " unknown_sku, out_of_stock or out_of_season (nothing was reserved), and on one cancelled"
    " by the buyer or an operator, expired or declined before its reservation was read; a"
    " confirmed order always has it"
)


SKUS = (
    "the SKUs of the order's lines a cancelled order's reason is of, when it is a product's"
    " (unknown_sku, out_of_stock, out_of_season), as order.cancelled names them; null for"
    " another reason, for an order not cancelled, and for one cancelled before orders"
    " migration 0013"
)


class OrderBody(OrderRequested):
    """The body of ``POST /orders``: the ``data`` of ``order.requested``. The
    ``Idempotency-Key`` header is the ``order_ref``; a body ``order_ref`` must equal it."""

    order_ref: str | None = Field(None, pattern=ORDER_REF_PATTERN)  # type: ignore[assignment]


class Accepted(BaseModel):
    order_id: str
    status: Status
    ignored: list[str] = Field(
        default_factory=list,
        description="what the body held that Caravan ignored, each field by its path as a"
        " 422's errors name one (delivry, lines.0.colour, payment.term_months): names no"
        " field of the body has, at any depth (unknown fields are ignored, not refused), and"
        " fields meaning nothing for what was sent (term_months of a prepaid payment);"
        " empty when it took everything. Of the body sent: the same body again, the same",
    )


class Step(BaseModel):
    """Something that happened to the order: an event it emitted or one that reached it."""

    type: str
    time: str
    amount_fen: int | None = Field(
        None,
        description="payment.refunded: what was paid back to the buyer, in fen;"
        " payment.voided: what the buyer is owed back (its refund_owed_fen, when more than"
        " 0); null on the other steps, on a refund recorded before orders migration 0012 and"
        " on a void recorded before 2026-12-06",
    )
    reference: str | None = Field(
        None,
        description="payment.refunded: the transfer's reference (the bank's or the"
        " gateway's); null as amount_fen is",
    )
    skus: list[str] | None = Field(
        None,
        description="order.cancelled: the products the order was cancelled for, as the"
        " order's skus; null on the other steps, and where the order has none",
    )
    after_sale: bool = Field(
        False,
        description="payment.voided of a confirmed order: true, an operator voided its"
        " payment after the sale, its buyer refunded (`caravan payments void-sold`); the order"
        " stays confirmed, nothing cancels a confirmed order",
    )


def step_said(step: Mapping[str, Any]) -> str:
    """A step of ``GET /orders/{id}``'s timeline as ``caravan orders show`` and the operations
    page say it: its type, then what it names (``payment.refunded: 3500 fen under reference
    BANK-20261206-0001``, ``payment.voided: 1000 fen owed back``, ``payment.voided after the
    sale``, ``order.cancelled: for SKU HTN-WALNUT-1KG``)."""
    amount, reference = step.get("amount_fen"), step.get("reference")
    skus = step.get("skus") or []
    owed = " owed back" if step["type"] == "payment.voided" else ""
    named = [
        f"{amount} fen{owed}" if amount is not None else "",
        f"under reference {reference}" if reference else "",
        f"for SKU{'s' if len(skus) > 1 else ''} {', '.join(skus)}" if skus else "",
    ]
    said = " ".join(n for n in named if n)
    kind = f"{step['type']} after the sale" if step.get("after_sale") else str(step["type"])
    return f"{kind}: {said}" if said else kind


class OrderView(BaseModel):
    order_id: str
    order_ref: str
    buyer_id: str = Field(
        description="whose order it is: the key of the buyer's credit line and orders"
        " (GET /orders?buyer_id=)"
    )
    source: str = Field(
        description="who placed it: http for POST /orders, platform/<app> for a marketplace"
        " platform's order, else the storefront's own source on orders.requests.v1"
        " (storefront/shawan-center)"
    )
    status: Status
    total_fen: int | None = Field(description=TOTAL_FEN)
    reason: CancelReason | None
    skus: list[str] | None = Field(None, description=SKUS)
    lines: list[OrderLine] = Field(
        default_factory=list,
        description="what was ordered, as the request said it: each SKU and its quantity",
    )
    sellers: list[str] | None = Field(
        None,
        description="the sellers whose goods the order holds (their ids, as its stock.reserved"
        " named them; orders keeps no seller's name: inventory's GET /stock says it); null"
        " for an order never reserved, or reserved before orders migration 0015",
    )
    delivery: Delivery | None = None  # where to send the goods, as the request said
    delivery_erased_at: str | None = Field(
        None,
        description="when the delivery address was erased, its retention past (delivery is"
        " null then); null while it is kept, or when the order never had one",
    )
    timeline: list[Step]


class CancelBody(NoNul):
    """What the caller of ``POST /orders/{id}/cancel`` says of the cancellation: who asked for
    it (the order's reason) and why (for the audit trail)."""

    model_config = ConfigDict(extra="forbid")  # a field misspelt would be recorded as nothing

    by: Canceller = Field(
        "buyer",
        description="who asked for it: buyer (the buyer, through a storefront, a platform or"
        " an operator they asked; the order's reason cancelled_by_buyer, their text saying"
        " they asked) or operator (operations, of their own accord: cancelled_by_operator,"
        " the text saying so); left out, buyer",
    )
    reason: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="why it is cancelled, as the buyer or the operator said it (the buyer"
        " changed their mind, ordered twice, the produce spoiled...): kept in the audit trail's"
        " order.cancel entry (caravan audit --target ORDER_ID), not on the order, whose reason"
        " says who asked (by)",
    )


class CancelAnswer(OrderView):
    """``POST /orders/{id}/cancel``'s answer: the order, and whether this request cancelled
    it."""

    applied: bool = Field(
        description="true: cancelled by this request; false: it was cancelled before (by an"
        " earlier request, or for another reason: its reason says) and is answered as it is,"
        " nothing changed"
    )


class OrderSummary(BaseModel):
    order_id: str
    order_ref: str
    buyer_id: str = Field(description="whose order it is (an operator's list is every buyer's)")
    source: str
    status: Status
    total_fen: int | None = Field(description=TOTAL_FEN)
    reason: CancelReason | None
    skus: list[str] | None = Field(None, description=SKUS)
    placed_at: str


class OrderPage(BaseModel):
    """One page of a listing; ``next_cursor`` fetches the next one (null on the last page)."""

    items: list[OrderSummary]
    next_cursor: str | None


class Problem(shared_http.Problem):
    """An RFC 9457 problem (``application/problem+json``) of the orders API."""

    order_id: str | None = Field(None, description="the order the problem is about")
