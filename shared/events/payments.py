"""Events of ``payments.events.v1`` (internal: the payment step of the saga)."""

from datetime import date
from typing import ClassVar, Literal

from pydantic import Field

from shared.events.envelope import EventData, Fen, Frozen, LoanId, OrderId
from shared.events.orders import PaymentMethod, ScheduledInstalment
from shared.topics import EventType, Topic


class PaymentAuthorized(EventData):
    topic: ClassVar[Topic] = Topic.PAYMENT_EVENTS
    event_type: ClassVar[EventType] = EventType.PAYMENT_AUTHORIZED

    order_id: OrderId
    buyer_id: str
    method: PaymentMethod
    amount_fen: Fen
    loan_id: LoanId | None = None
    term_months: int | None = None
    interest_fen: Fen | None = None
    schedule: list[ScheduledInstalment] | None = None


class PaymentDeclined(EventData):
    topic: ClassVar[Topic] = Topic.PAYMENT_EVENTS
    event_type: ClassVar[EventType] = EventType.PAYMENT_DECLINED

    order_id: OrderId
    # expired: the order's hold had lapsed when payments read its stock.reserved (held_until),
    # so nothing was charged or lent: the order ends expired, as its deadline ended it.
    reason: Literal["credit_declined", "payment_failed", "expired"]


class PaymentVoided(EventData):
    """An order's payment was voided (its order cancelled; or by an operator, for an order the
    orders service never had, ``caravan payments void-unplaced``, or for a confirmed order
    whose buyer was refunded after the sale, ``caravan payments void-sold``, the order staying
    confirmed): a loan, or a prepaid charge; also a prepaid charge whose void the gateway
    refused for good (settled already: payments' ``void_refused``), undone in our books, what
    the buyer paid owed back by hand (``refund_owed_fen``)."""

    topic: ClassVar[Topic] = Topic.PAYMENT_EVENTS
    event_type: ClassVar[EventType] = EventType.PAYMENT_VOIDED

    order_id: OrderId
    loan_id: LoanId | None = None
    amount_fen: Fen
    refund_owed_fen: Fen | None = Field(
        None,
        description=(
            "a voided loan: what the buyer had repaid on it (principal and interest), now"
            " owed back to them (0: nothing); a prepaid charge whose void the gateway refused"
            " (settled already): what the buyer paid, owed back to them, for operations to"
            " refund by hand; none for a prepaid charge voided, which the gateway or the"
            " platform gives back itself"
        ),
    )
    unplaced: bool | None = Field(
        None,
        description=(
            "true: voided by an operator for an order the orders service never had (`caravan"
            " payments void-unplaced`): no `order.placed` of it is to come, so a reader that"
            " waits for one (notifications) does not; none: any other void"
        ),
    )


class PaymentRefunded(EventData):
    """What a buyer was owed back was paid to them, by hand: the refund of a prepaid charge
    whose void the gateway refused, or of what they had repaid on a loan since voided (its
    ``payment.voided`` with ``refund_owed_fen``), recorded by an operator
    (``POST /orders/{id}/payment/refund``), in the transaction that records it.
    Said once per refund: the same refund recorded again says nothing. A type added on
    2026-12-06: a refund recorded before then has none."""

    topic: ClassVar[Topic] = Topic.PAYMENT_EVENTS
    event_type: ClassVar[EventType] = EventType.PAYMENT_REFUNDED

    order_id: OrderId
    loan_id: LoanId | None = Field(
        None, description="the voided loan whose repayments were given back; none: a charge's"
    )
    amount_fen: Fen = Field(description="what was paid back to the buyer")
    reference: str = Field(description="the transfer's reference (the bank's or the gateway's)")
    reason: str = Field(description="the operator's note: how it was paid, or why")
    recorded_by: str = Field(description="the name of the token that recorded it")
    unplaced: bool | None = Field(
        None,
        description=(
            "true: the payment was voided as of an order the orders service never had (its"
            " `payment.voided` said `unplaced`): no `order.placed` of it is to come; none:"
            " any other refund"
        ),
    )


class InstalmentLeft(Frozen):
    """What is still owed on an instalment a repayment paid into (0: paid off)."""

    number: int
    remaining_fen: Fen


class PaymentRepaid(EventData):
    """A repayment was recorded on a microloan: how it was split, and what is left."""

    topic: ClassVar[Topic] = Topic.PAYMENT_EVENTS
    event_type: ClassVar[EventType] = EventType.PAYMENT_REPAID

    order_id: OrderId
    loan_id: LoanId
    buyer_id: str
    repayment_id: str
    amount_fen: Fen
    principal_fen: Fen
    interest_fen: Fen
    outstanding_fen: Fen
    remaining_fen: Fen
    fully_repaid: bool
    # The instalments (numbers) this repayment paid off: a reminder of one of them that is
    # still waiting to be sent (out of quiet hours) is not sent.
    settled_instalments: list[int] = Field(default_factory=list)
    # Every instalment this repayment paid into, and what is still owed on it (an optional
    # field added in v1): a reminder of one partly repaid that is still waiting to be sent
    # says what is left, not what was owed when it was announced.
    instalments_left: list[InstalmentLeft] = Field(default_factory=list)


class InstalmentDue(EventData):
    """An instalment of a microloan is coming due, due today, or overdue (for reminders)."""

    topic: ClassVar[Topic] = Topic.PAYMENT_EVENTS
    event_type: ClassVar[EventType] = EventType.INSTALMENT_DUE

    order_id: OrderId
    loan_id: LoanId
    buyer_id: str
    number: int
    due: date
    amount_fen: Fen
    stage: Literal["upcoming", "today", "overdue"]
