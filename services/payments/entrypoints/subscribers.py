"""What the payments service consumes."""

from services.payments import handlers
from shared.messaging.consumer import Subscription
from shared.topics import EventType, Topic

SUBSCRIPTIONS = [
    Subscription(Topic.INVENTORY_EVENTS, {EventType.STOCK_RESERVED: handlers.on_stock_reserved}),
    Subscription(Topic.ORDER_EVENTS, {EventType.ORDER_CANCELLED: handlers.on_order_cancelled}),
]
