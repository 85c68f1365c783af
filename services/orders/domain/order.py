"""The order aggregate: a state machine over the saga's outcomes.

An order is ``pending`` until stock and payment are both settled. It is ``confirmed`` when
all lines are reserved and payment is authorised, ``cancelled`` as soon as either step
fails, the deadline passes, or the buyer or an operator cancels. Facts arrive late, twice, or in any
order; once terminal, an order records them but never emits a second terminal event.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from shared.events.envelope import EventData
from shared.events.orders import (
    CancelReason,
    ConfirmedPayment,
    Delivery,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRequested,
    PaymentMethod,
    ScheduledInstalment,
)

Status = Literal["pending", "confirmed", "cancelled"]
StepState = Literal["pending", "done", "failed"]
Canceller = Literal["buyer", "operator"]
"""Who cancels a pending order by hand: its buyer (through a storefront or a platform, or an
operator at the buyer's word) or operations of their own accord."""
_CANCELLED_BY: dict[Canceller, CancelReason] = {
    "buyer": "cancelled_by_buyer",
    "operator": "cancelled_by_operator",
}


class OrderAlreadyConfirmed(Exception):
    """A buyer or an operator asked to cancel an order that is already confirmed."""


@dataclass
class Order:
    order_id: str
    order_ref: str
    source: str
    buyer_id: str
    lines: list[OrderLine]
    payment_method: PaymentMethod
    term_months: int | None
    placed_at: datetime
    deadline_at: datetime
    status: Status = "pending"
    stock: StepState = "pending"
    payment: StepState = "pending"
    total_fen: int | None = None
    loan_id: str | None = None
    schedule: list[ScheduledInstalment] | None = None
    reason: CancelReason | None = None
    skus: list[str] | None = None  # the products it was cancelled for (its reason's)
    delivery: Delivery | None = None  # as placed (read back by the HTTP API, not here)
    events: list[EventData] = field(default_factory=list)

    @classmethod
    def place(
        cls,
        order_id: str,
        request: OrderRequested,
        source: str,
        now: datetime,
        deadline: timedelta,
    ) -> "Order":
        order = cls(
            order_id=order_id,
            order_ref=request.order_ref,
            source=source,
            buyer_id=request.buyer.id,
            lines=list(request.lines),
            payment_method=request.payment.method,
            term_months=request.payment.term_months,
            placed_at=now,
            deadline_at=now + deadline,
            delivery=request.delivery,
        )
        order.events.append(
            OrderPlaced(
                order_id=order_id,
                order_ref=request.order_ref,
                source=source,
                buyer_id=request.buyer.id,
                lines=request.lines,
                buyer=request.buyer,
                payment=request.payment,
                placed_at=now,
                delivery=request.delivery,
                deadline_at=order.deadline_at,
            )
        )
        return order

    @property
    def terminal(self) -> bool:
        return self.status != "pending"

    def stock_reserved(self, total_fen: int) -> None:
        if self.terminal:
            return
        self.stock = "done"
        self.total_fen = total_fen
        self._maybe_confirm()

    def stock_rejected(self, reason: CancelReason, skus: Sequence[str] = ()) -> None:
        """Cancel for ``reason``, naming the products it is of: those of ``skus`` (what
        inventory named) that are the order's, so that a stray name, not one of its lines,
        is never said to its buyer nor kept."""
        if self.terminal:
            return
        self.stock = "failed"
        ordered = {line.sku for line in self.lines}
        self._cancel(reason, [sku for sku in skus if sku in ordered] or None)

    def payment_authorized(
        self,
        amount_fen: int,
        loan_id: str | None,
        schedule: list[ScheduledInstalment] | None = None,
    ) -> None:
        if self.terminal:
            return
        self.payment = "done"
        self.loan_id = loan_id
        self.schedule = schedule
        if self.total_fen is None:
            self.total_fen = amount_fen
        self._maybe_confirm()

    def payment_declined(self, reason: CancelReason) -> None:
        if self.terminal:
            return
        self.payment = "failed"
        self._cancel(reason)

    def expire(self, now: datetime) -> None:
        if not self.terminal and now >= self.deadline_at:
            self._cancel("expired")

    def hold_expired(self) -> None:
        """Inventory's hold on the stock ran out: a pending order can no longer be settled."""
        if not self.terminal:
            self._cancel("expired")

    def cancel_by(self, who: Canceller) -> None:
        """Cancel on ``who``'s word (``cancelled_by_buyer`` or ``cancelled_by_operator``); an
        order cancelled before keeps its first reason."""
        if self.status == "confirmed":
            raise OrderAlreadyConfirmed(self.order_id)
        if not self.terminal:
            self._cancel(_CANCELLED_BY[who])

    @property
    def loan_term(self) -> int | None:
        """The months of the order's loan: as many as its instalments, fewer than asked for
        a loan of fewer fen than months (payments' credit.schedule); None when nothing was
        lent (a microloan order of 0 fen, a prepaid one)."""
        if self.loan_id is None:
            return None
        return len(self.schedule) if self.schedule else self.term_months

    def _maybe_confirm(self) -> None:
        if self.stock == "done" and self.payment == "done":
            assert self.total_fen is not None
            self.status = "confirmed"
            self.events.append(
                OrderConfirmed(
                    order_id=self.order_id,
                    order_ref=self.order_ref,
                    total_fen=self.total_fen,
                    payment=ConfirmedPayment(
                        method=self.payment_method, loan_id=self.loan_id, schedule=self.schedule
                    ),
                    term_months=self.loan_term,
                    source=self.source,
                )
            )

    def _cancel(self, reason: CancelReason, skus: list[str] | None = None) -> None:
        self.status = "cancelled"
        self.reason = reason
        self.skus = skus
        self.events.append(
            OrderCancelled(
                order_id=self.order_id,
                order_ref=self.order_ref,
                reason=reason,
                source=self.source,
                skus=skus,
            )
        )
