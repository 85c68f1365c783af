"""The marketplace's calendar day (shared/days.py), China's unless configured."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared import days
from shared.settings import Settings
from tests.harness import market_zone_far_from_midnight


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CARAVAN_MARKET_TIMEZONE (the test session sets one: tests/conftest.py)."""
    monkeypatch.delenv("CARAVAN_MARKET_TIMEZONE", raising=False)
    days.market_zone.cache_clear()
    yield
    days.market_zone.cache_clear()


@pytest.mark.usefixtures("unconfigured")
def test_the_day_is_the_marketplace_s_not_utc_s() -> None:
    assert str(days.market_zone()) == "Asia/Shanghai"
    assert days.day_of(datetime(2026, 8, 31, 15, 59, tzinfo=UTC)) == date(2026, 8, 31)
    assert days.day_of(datetime(2026, 8, 31, 16, 0, tzinfo=UTC)) == date(2026, 9, 1)


def test_a_zone_that_is_not_one_is_refused_at_start() -> None:
    assert Settings(market_timezone="Asia/Urumqi").market_timezone == "Asia/Urumqi"
    with pytest.raises(ValidationError, match="not an IANA time zone"):
        Settings(market_timezone="China/Shawan")


def test_a_test_session_s_market_zone_is_hours_from_midnight_and_near_beijing_time() -> None:
    """Whenever a test session starts, its market day lasts two hours more at least (the suite
    takes about 13 minutes), in a zone within two hours of Beijing time."""
    start = datetime(2026, 12, 4, tzinfo=UTC)
    for minute in range(24 * 60):
        now = start + timedelta(minutes=minute)
        zone = market_zone_far_from_midnight(now)
        hours = -int(zone.removeprefix("Etc/GMT"))
        assert 6 <= hours <= 10, (now, zone)
        local = now.astimezone(timezone(timedelta(hours=hours)))
        midnight = datetime.combine(local.date() + timedelta(days=1), time(), local.tzinfo)
        assert midnight - local >= timedelta(hours=2), (now, zone)
