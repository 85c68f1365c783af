"""Phone numbers: who may be texted, and in which time zone they live. Pure module.

Numbers are E.164 (:mod:`shared.phones`). For mainland China (``+86``) only mobile numbers
can receive SMS: 11 digits starting ``1[3-9]``.
"""

from typing import Final
from zoneinfo import ZoneInfo

from shared.phones import CN_MOBILE, E164

_ZONES: Final[dict[str, str]] = {"+86": "Asia/Shanghai", "+44": "Europe/London"}
"""Time zone by country calling code, for countries that keep one time: China (Beijing time)
and the United Kingdom."""


def phone_problem(phone: str) -> str | None:
    """Why ``phone`` cannot receive an SMS, or None when it can."""
    if not E164.fullmatch(phone):
        return "not an E.164 number"
    if phone.startswith("+86") and not CN_MOBILE.fullmatch(phone):
        return "not a mainland China mobile number (1[3-9] and 11 digits)"
    return None


def zone_of(phone: str, market: ZoneInfo) -> ZoneInfo:
    """The recipient's local time zone, guessed from the calling code; the ``market``'s
    (``CARAVAN_MARKET_TIMEZONE``) when the code is not known: the marketplace's buyers mostly
    live where it sells, and UTC would text them at night elsewhere."""
    for prefix, zone in _ZONES.items():
        if phone.startswith(prefix):
            return ZoneInfo(zone)
    return market
