"""Whether a reservation may still be paid for: a pure rule."""

from datetime import datetime


def hold_lapsed(held_until: datetime | None, now: datetime) -> bool:
    """Whether the hold a ``stock.reserved`` names had lapsed at ``now``: at ``held_until`` or
    after it the order's deadline (or the hold's time) has passed, and the order can no longer
    be confirmed (orders cancels it ``expired``, and its cancellation releases the stock), so
    nothing is charged or lent for it. A reservation that says no time (an inventory's of
    before 2026-12-05) has not: it is paid for as before."""
    return held_until is not None and now >= held_until
