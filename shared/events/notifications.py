"""Events of ``notifications.events.v1`` (public, see CONTRACT.md)."""

from typing import ClassVar, Literal

from shared.events.envelope import EventData
from shared.events.orders import Locale
from shared.topics import EventType, Topic


class SmsSent(EventData):
    topic: ClassVar[Topic] = Topic.NOTIFICATION_EVENTS
    event_type: ClassVar[EventType] = EventType.SMS_SENT

    sms_id: str
    to: str
    locale: Locale
    text: str
    encoding: Literal["GSM-7", "UCS-2"]
    segments: int
    order_id: str | None = None
    purpose: str | None = None

    def partition_key(self) -> str:
        return self.to
