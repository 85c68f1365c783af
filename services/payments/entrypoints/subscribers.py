"""What the payments service consumes."""

from functools import partial

from services.payments import handlers
from shared.messaging.consumer import Subscription
from shared.topics import EventType, Topic


def subscriptions(monthly_rate_bp: int) -> list[Subscription]:
    return [
        Subscription(
            Topic.INVENTORY_EVENTS,
            {
                EventType.STOCK_RESERVED: partial(
                    handlers.on_stock_reserved, monthly_rate_bp=monthly_rate_bp
                )
            },
            prefetch=handlers.prefetch_payments,
        ),
        Subscription(
            Topic.ORDER_EVENTS,
            {EventType.ORDER_CANCELLED: handlers.on_order_cancelled},
            prefetch=handlers.prefetch_payments,
        ),
        Subscription(
            Topic.PLATFORM_EVENTS,
            {EventType.PLATFORM_ORDER_PAID: handlers.on_platform_order_paid},
            prefetch=handlers.prefetch_payments,
        ),
    ]
