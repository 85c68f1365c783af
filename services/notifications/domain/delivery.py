"""Delivery rules: when a message may go out (quiet hours) and when to try again. Pure.

Quiet hours apply to reminders only, never to order outcomes: a buyer is told at once that
an order is confirmed or cancelled, but not woken up about an instalment.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from shared.backoff import exponential_step

REMINDER_PURPOSES: Final = frozenset(
    {"instalment_upcoming", "instalment_today", "instalment_overdue"}
)
REFUND_PAID: Final = "refund_paid"
"""The purpose of the text telling a buyer that what they were owed back was paid by hand."""


def reminder_prefix(loan_id: str, number: int | None = None) -> str:
    """The start of the dedup keys of a loan's reminders, or of one instalment's
    (:func:`reminder_key`): what a repayment or a void finds them by."""
    return f"instalment:{loan_id}:" if number is None else f"instalment:{loan_id}:{number}:"


def reminder_key(loan_id: str, number: int, due: date, phone: str, purpose: str) -> str:
    """A reminder's dedup key, ``instalment:<loan>:<number>:<due>|<phone>|<purpose>``: one
    text per (instalment, stage) and number, however often payments announces it."""
    return f"{reminder_prefix(loan_id, number)}{due.isoformat()}|{phone}|{purpose}"


def reminder_of(dedup_key: str) -> tuple[str, int, date] | None:
    """The loan, instalment number and due day that a reminder's dedup key names
    (:func:`reminder_key`); None for a key that is not a reminder's."""
    head = dedup_key.split("|", 1)[0]
    if not head.startswith("instalment:"):
        return None
    parts = head.removeprefix("instalment:").rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    try:
        return parts[0], int(parts[1]), date.fromisoformat(parts[2])
    except ValueError:
        return None


def stage_passed(stage: str, due: date, today: date) -> bool:
    """Whether a reminder announced at ``stage`` no longer says the truth ``today`` (the
    market's day): an ``upcoming`` one once the instalment is due, a ``today`` one once it is
    overdue. Handled that late (a redrive, notifications away for days), it is not sent;
    payments announces the stage of the day, which is. An ``overdue`` one never passes."""
    if stage == "upcoming":
        return due <= today
    if stage == "today":
        return due < today
    return False


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
    """Exponential backoff with jitter. A text is given up only once it has been tried
    ``max_attempts`` times *and* ``give_up_after_seconds`` have passed since it was first
    allowed to go (queued; a reminder queued in quiet hours: their end; the quiet hours a
    reminder's retry waits out are not counted): a gateway down for a
    while, or refusing a burst with 429s, must not lose texts (six quick attempts span half
    a minute), nor the morning's burst of reminders held through the night."""

    max_attempts: int = 6
    base_seconds: float = 1.0
    cap_seconds: float = 300.0
    give_up_after_seconds: float = 6 * 3600.0

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed send number ``attempt`` (1-based).

        "Equal jitter": half of the exponential step is kept, the other half is random, so
        retries spread out but never come back sooner than half the step. A gateway's
        ``Retry-After`` is a floor, up to the cap (a year's wait would park the text).
        """
        step = exponential_step(attempt, self.base_seconds, self.cap_seconds)
        wait = step / 2 + rand() * step / 2
        asked = retry_after if retry_after is not None and math.isfinite(retry_after) else 0.0
        return max(wait, min(asked, self.cap_seconds))

    def exhausted(self, attempts: int, due_seconds_ago: float) -> bool:
        return attempts >= self.max_attempts and due_seconds_ago >= self.give_up_after_seconds
