"""The SMS gateway port, and its local default: a sink that accepts every message.

A gateway either accepts a message (and names it: ``Accepted.provider_id``, which its
delivery receipts refer to) or raises :class:`GatewayError`, saying whether trying again may
help and, for rate limits, after how long. A gateway MUST treat two messages with the same
``dedup_key`` as one (returning the first one's id): the dispatcher resends with the same key
when it cannot know whether an earlier send went through.
"""

import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingSms:
    sms_id: str
    dedup_key: str
    to: str
    text: str


@dataclass(frozen=True)
class Accepted:
    provider_id: str


@dataclass(frozen=True)
class Receipt:
    """A delivery receipt: the message ``provider_id`` reached the phone, or never will."""

    provider_id: str
    delivered: bool
    detail: str = ""


class GatewayError(Exception):
    """A send that did not go through. ``transient``: another attempt may succeed (timeouts,
    5xx, 429, our account refused until it is put right); ``retry_after``: seconds the
    gateway asked us to wait."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class SmsGateway(Protocol):
    """Sends SMS and understands its own delivery receipts."""

    async def send(self, message: OutgoingSms) -> Accepted:
        """Hand one message over; raises :class:`GatewayError`. Idempotent by ``dedup_key``."""
        ...

    def parse_receipts(self, body: bytes) -> list[Receipt]:
        """The receipts in a callback body this gateway posted; ValueError when malformed."""
        ...

    async def close(self) -> None: ...


class SinkGateway:
    """Accepts every message and keeps nothing but a log line (the local default)."""

    async def send(self, message: OutgoingSms) -> Accepted:
        # The number comes out masked: shared.logs masks every phone number in a log line.
        log.info("sms %s to %s: %s", message.sms_id, message.to, message.text)
        return Accepted("sink-" + hashlib.sha256(message.dedup_key.encode()).hexdigest()[:24])

    def parse_receipts(self, body: bytes) -> list[Receipt]:
        raise ValueError("the sink gateway sends no receipts")

    async def close(self) -> None:
        return None
