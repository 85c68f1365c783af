"""Events of ``platform.events.v1`` (internal: what the platform adapter vouches for).

Only the adapter may write this topic (its ACLs). The ``source`` of a record is what its
publisher says, and anyone who may publish ``orders.requests.v1`` (a storefront) could say
``platform/<app>``: so an order of a platform's source is placed only from here, and its
payment authorised only with the adapter's word that the platform was paid.
"""

from typing import ClassVar

from pydantic import Field

from shared.events.envelope import EventData
from shared.events.orders import ORDER_REF_PATTERN, OrderRef, OrderRequested
from shared.topics import EventType, Topic


class PlatformOrderRequested(OrderRequested):
    """A paid order of a marketplace platform, as the adapter asks the orders service to
    place it (``source`` ``platform/<app>``, ``order_ref`` the platform's order id): an
    ``order.requested`` in every field. The orders service refuses a ``platform/`` source on
    ``orders.requests.v1``, where it could be anyone's: a storefront that named a platform
    order before the adapter did would have had the platform's payment for its own lines."""

    topic: ClassVar[Topic] = Topic.PLATFORM_EVENTS
    event_type: ClassVar[EventType] = EventType.PLATFORM_ORDER_REQUESTED


class PlatformOrderPaid(EventData):
    """A marketplace platform took the buyer's money for the order the adapter placed as
    (``source``, ``order_ref``), in the same transaction. Payments authorises a prepaid order
    of a ``platform/<app>`` source only with this event."""

    topic: ClassVar[Topic] = Topic.PLATFORM_EVENTS
    event_type: ClassVar[EventType] = EventType.PLATFORM_ORDER_PAID

    order_ref: OrderRef = Field(pattern=ORDER_REF_PATTERN)
    source: str

    def partition_key(self) -> str:
        return self.order_ref
