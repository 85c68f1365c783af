"""The marketplace's calendar: which day it is for the county centres and their buyers.

A lot is in season, and an instalment falls due, on days of the marketplace's calendar
(``CARAVAN_MARKET_TIMEZONE``, China's by default), not of UTC: an order placed in Shawan at
07:00 on 1 September is on 1 September, though it is still 31 August in UTC, and a lot on
sale from 1 September serves it.
"""

from datetime import UTC, date, datetime
from functools import cache
from zoneinfo import ZoneInfo

from shared.settings import CalendarSettings


@cache
def market_zone() -> ZoneInfo:
    """The marketplace's time zone, as this process's settings say (read once)."""
    return ZoneInfo(CalendarSettings().market_timezone)


def day_of(at: datetime) -> date:
    """The marketplace's day at the instant ``at``."""
    return at.astimezone(market_zone()).date()


def today() -> date:
    """The marketplace's day now."""
    return day_of(datetime.now(UTC))
