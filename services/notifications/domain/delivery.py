"""Delivery rules: when a message may go out (quiet hours) and when to try again. Pure.

Quiet hours apply to reminders only, never to order outcomes: a buyer is told at once that
an order is confirmed or cancelled, but not woken up about an instalment.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

REMINDER_PURPOSES: Final = frozenset(
    {"instalment_upcoming", "instalment_today", "instalment_overdue"}
)


@dataclass(frozen=True)
class QuietHours:
    """A daily window in the recipient's local time, ``start`` inclusive, ``end`` exclusive.

    A window may wrap midnight (21:00-08:00). ``start == end`` means no quiet hours.
    """

    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, at: datetime, zone: ZoneInfo) -> datetime:
        """``at`` itself when outside the window, else the window's end in ``zone``."""
        local = at.astimezone(zone)
        if not self.contains(local.time().replace(tzinfo=None)):
            return at
        day = local.date()
        if self.start > self.end and local.time().replace(tzinfo=None) >= self.start:
            day += timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=zone)


def parse_clock(value: str) -> time:
    """``"21:00"`` as a time of day."""
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by ``max_attempts`` sends in all."""

    max_attempts: int = 6
    base_seconds: float = 1.0
    cap_seconds: float = 300.0

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed send number ``attempt`` (1-based).

        "Equal jitter": half of the exponential step is kept, the other half is random, so
        retries spread out but never come back sooner than half the step. A gateway's
        ``Retry-After`` is a floor.
        """
        step = min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempt - 1))
        wait = step / 2 + rand() * step / 2
        return max(wait, retry_after or 0.0)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
