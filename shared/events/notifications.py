"""Events of ``notifications.events.v1`` (public, see CONTRACT.md). Key: the recipient's phone."""

from typing import ClassVar, Literal

from shared.events.envelope import EventData, OrderId
from shared.events.orders import Locale
from shared.topics import EventType, Topic


class SmsSent(EventData):
    """The gateway accepted an SMS (once per message, whatever the retries)."""

    topic: ClassVar[Topic] = Topic.NOTIFICATION_EVENTS
    event_type: ClassVar[EventType] = EventType.SMS_SENT

    sms_id: str
    to: str
    locale: Locale
    text: str
    encoding: Literal["GSM-7", "UCS-2"]
    segments: int
    order_id: OrderId | None = None
    purpose: str | None = None
    attempts: int | None = None

    def partition_key(self) -> str:
        return self.to


class SmsDelivered(EventData):
    """The gateway's delivery receipt says the SMS reached the phone."""

    topic: ClassVar[Topic] = Topic.NOTIFICATION_EVENTS
    event_type: ClassVar[EventType] = EventType.SMS_DELIVERED

    sms_id: str
    to: str
    order_id: OrderId | None = None
    purpose: str | None = None

    def partition_key(self) -> str:
        return self.to


SmsFailReason = Literal["invalid_phone", "rejected", "retries_exhausted", "undelivered"]


class SmsFailed(EventData):
    """An SMS will not reach the phone: the number is invalid, the gateway refused it, every
    bounded attempt failed, or the delivery receipt reported a failure."""

    topic: ClassVar[Topic] = Topic.NOTIFICATION_EVENTS
    event_type: ClassVar[EventType] = EventType.SMS_FAILED

    sms_id: str
    to: str
    reason: SmsFailReason
    detail: str = ""
    attempts: int = 0
    order_id: OrderId | None = None
    purpose: str | None = None

    def partition_key(self) -> str:
        return self.to
