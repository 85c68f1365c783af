"""The SMS gateway port and its local default, a sink that accepts every message."""

import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingSms:
    dedup_key: str
    to: str
    text: str


class SmsGateway(Protocol):
    """Sends one SMS. ``dedup_key`` lets the gateway drop a message sent twice."""

    async def send(self, message: OutgoingSms) -> None: ...


class SinkGateway:
    """Accepts every message and keeps nothing but a log line (the local default)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def send(self, message: OutgoingSms) -> None:
        if message.dedup_key in self.seen:
            return
        self.seen.add(message.dedup_key)
        log.info("sms to %s: %s", message.to, message.text)
