"""The marketplace's calendar day (shared/days.py), China's unless configured."""

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from shared import days
from shared.settings import Settings


def test_the_day_is_the_marketplace_s_not_utc_s() -> None:
    assert str(days.market_zone()) == "Asia/Shanghai"
    assert days.day_of(datetime(2026, 8, 31, 15, 59, tzinfo=UTC)) == date(2026, 8, 31)
    assert days.day_of(datetime(2026, 8, 31, 16, 0, tzinfo=UTC)) == date(2026, 9, 1)


def test_a_zone_that_is_not_one_is_refused_at_start() -> None:
    assert Settings(market_timezone="Asia/Urumqi").market_timezone == "Asia/Urumqi"
    with pytest.raises(ValidationError, match="not an IANA time zone"):
        Settings(market_timezone="China/Shawan")
