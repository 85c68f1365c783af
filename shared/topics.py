"""Every Kafka topic and event type, named once.

Public topics are part of ``CONTRACT.md``; internal ones are the project's own.
Each consumed topic has a dead-letter twin, ``<topic>.dlq``.
"""

from enum import StrEnum


class Topic(StrEnum):
    ORDER_REQUESTS = "orders.requests.v1"
    ORDER_EVENTS = "orders.events.v1"
    INVENTORY_EVENTS = "inventory.events.v1"
    PAYMENT_EVENTS = "payments.events.v1"
    NOTIFICATION_EVENTS = "notifications.events.v1"
    PLATFORM_EVENTS = "platform.events.v1"

    @property
    def dlq(self) -> str:
        return f"{self.value}.dlq"


SERVICES = ("orders", "inventory", "payments", "notifications", "platform")
"""The services, in the order the saga reaches them (the platform adapter last)."""


def consumer_group(service: str) -> str:
    """The Kafka consumer group of ``service``: one per service, its instances all in it."""
    return f"caravan-{service}"


def principal(service: str) -> str:
    """The Kafka user name ``service`` logs in with (on a SASL broker)."""
    return f"caravan-{service}"


class EventType(StrEnum):
    ORDER_REQUESTED = "order.requested"
    ORDER_PLACED = "order.placed"
    ORDER_CONFIRMED = "order.confirmed"
    ORDER_CANCELLED = "order.cancelled"
    ORDER_REJECTED = "order.rejected"
    STOCK_RESERVED = "stock.reserved"
    STOCK_REJECTED = "stock.rejected"
    STOCK_RELEASED = "stock.released"
    STOCK_SOLD = "stock.sold"
    STOCK_EXPIRED = "stock.expired"
    PAYMENT_AUTHORIZED = "payment.authorized"
    PAYMENT_DECLINED = "payment.declined"
    PAYMENT_VOIDED = "payment.voided"
    PAYMENT_REPAID = "payment.repaid"
    PAYMENT_REFUNDED = "payment.refunded"
    INSTALMENT_DUE = "payment.instalment_due"
    SMS_SENT = "sms.sent"
    SMS_DELIVERED = "sms.delivered"
    SMS_FAILED = "sms.failed"
    PLATFORM_ORDER_REQUESTED = "platform.order_requested"
    PLATFORM_ORDER_PAID = "platform.order_paid"


DEAD_LETTER_TOPICS: tuple[str, ...] = tuple(t.dlq for t in Topic)
ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic) + DEAD_LETTER_TOPICS
