"""Events of ``platform.events.v1`` (internal: what the platform adapter vouches for)."""

from typing import ClassVar

from pydantic import Field

from shared.events.envelope import EventData
from shared.events.orders import ORDER_REF_PATTERN, OrderRef
from shared.topics import EventType, Topic


class PlatformOrderPaid(EventData):
    """A marketplace platform took the buyer's money for the order the adapter placed as
    (``source``, ``order_ref``), in the same transaction. Payments authorises a prepaid order
    of a ``platform/<app>`` source only with this event: the source of an
    ``order.requested`` is what its publisher says, and anyone who may publish orders could
    say ``platform/...``; only the adapter may write this topic."""

    topic: ClassVar[Topic] = Topic.PLATFORM_EVENTS
    event_type: ClassVar[EventType] = EventType.PLATFORM_ORDER_PAID

    order_ref: OrderRef = Field(pattern=ORDER_REF_PATTERN)
    source: str

    def partition_key(self) -> str:
        return self.order_ref
