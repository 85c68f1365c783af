"""What the inventory service consumes."""

from services.inventory import handlers
from shared.messaging.consumer import Subscription
from shared.topics import EventType, Topic

SUBSCRIPTIONS = [
    Subscription(
        Topic.ORDER_EVENTS,
        {
            EventType.ORDER_PLACED: handlers.on_order_placed,
            EventType.ORDER_CANCELLED: handlers.on_order_cancelled,
            EventType.ORDER_CONFIRMED: handlers.on_order_confirmed,
        },
    )
]
