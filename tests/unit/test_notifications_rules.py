"""Pure delivery rules of notifications: phone validation, quiet hours, retry backoff."""

from datetime import UTC, date, datetime, time, timedelta
from email.utils import format_datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.notifications.adapters.http_gateway import retry_after_seconds
from services.notifications.domain.delivery import (
    QuietHours,
    RetryPolicy,
    parse_clock,
    reminder_key,
    reminder_of,
    reminder_prefix,
    stage_passed,
)
from services.notifications.domain.phones import phone_problem, zone_of
from shared.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
NIGHT = QuietHours(time(21, 0), time(8, 0))


@pytest.mark.parametrize(
    "phone", ["+8613912345678", "+8619900000000", "+8615000000001", "+14155550100", "+447700900123"]
)
def test_valid_numbers(phone: str) -> None:
    assert phone_problem(phone) is None


@pytest.mark.parametrize(
    ("phone", "why"),
    [
        ("8613912345678", "E.164"),
        ("+86 139 1234 5678", "E.164"),
        ("+0861391234567", "E.164"),
        ("+8612912345678", "mainland"),  # 12x is not a mobile prefix
        ("+8610123456789", "mainland"),
        ("+861391234567", "mainland"),  # 10 digits
        ("+86139123456789", "mainland"),  # 12 digits
        ("+862087654321", "mainland"),  # a Guangzhou landline
        ("+1234567890123456", "E.164"),  # 16 digits
    ],
)
def test_invalid_numbers(phone: str, why: str) -> None:
    problem = phone_problem(phone)
    assert problem is not None and why in problem


def test_zones() -> None:
    """By calling code where a country keeps one time; else the market's zone (not UTC)."""
    new_york = ZoneInfo("America/New_York")
    assert zone_of("+8613912345678", new_york) == SHANGHAI
    assert zone_of("+447700900123", new_york) == ZoneInfo("Europe/London")
    assert zone_of("+14155550100", new_york) == new_york
    assert zone_of("+14155550100", SHANGHAI) == SHANGHAI


@pytest.mark.parametrize("clock", ["24:00", "07:60", "99:99"])
def test_quiet_hours_that_are_no_time_of_day_are_refused_in_the_settings(clock: str) -> None:
    with pytest.raises(ValidationError, match="not a time of day") as refused:
        Settings(notifications_quiet_end=clock)
    assert refused.value.errors()[0]["loc"] == ("notifications_quiet_end",)
    assert Settings(notifications_quiet_start="23:59").notifications_quiet_start == "23:59"


def test_a_reminder_stage_passes_once_the_instalment_reaches_the_next() -> None:
    today, day = date(2026, 12, 10), timedelta(days=1)
    dues = (today + day, today, today - day)
    assert [stage_passed("upcoming", due, today) for due in dues] == [False, True, True]
    assert [stage_passed("today", due, today) for due in dues] == [False, False, True]
    assert not stage_passed("overdue", today - 30 * day, today)


def _at(hour: int, minute: int = 0, day: int = 10) -> datetime:
    """A Shanghai wall-clock time on 2026-12-<day>, as an aware UTC instant."""
    return datetime(2026, 12, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (_at(12), _at(12)),  # daytime: at once
        (_at(20, 59), _at(20, 59)),
        (_at(21), _at(8, day=11)),  # start is quiet
        (_at(23, 30), _at(8, day=11)),  # evening: next morning
        (_at(2), _at(8)),  # after midnight: this morning
        (_at(7, 59), _at(8)),
        (_at(8), _at(8)),  # end is not quiet
    ],
)
def test_quiet_hours_in_shanghai_time(now: datetime, allowed: datetime) -> None:
    assert NIGHT.next_allowed(now, SHANGHAI) == allowed


def test_quiet_hours_are_local_time_not_utc() -> None:
    # 14:00 UTC is 22:00 in Shanghai (quiet) but daytime in London.
    now = datetime(2026, 12, 10, 14, 0, tzinfo=UTC)
    assert NIGHT.next_allowed(now, SHANGHAI) == _at(8, day=11)
    assert NIGHT.next_allowed(now, ZoneInfo("Europe/London")) == now


def test_window_within_a_day_and_empty_window() -> None:
    lunch = QuietHours(time(12), time(14))
    assert lunch.next_allowed(_at(13), SHANGHAI) == _at(14)
    assert lunch.next_allowed(_at(15), SHANGHAI) == _at(15)
    none = QuietHours(time(9), time(9))
    assert none.next_allowed(_at(9), SHANGHAI) == _at(9)
    assert parse_clock("21:30") == time(21, 30)


def test_a_window_holds_its_start_and_not_its_end() -> None:
    """``start`` inclusive, ``end`` exclusive, in a window within a day as in one that wraps
    midnight: a reminder due at 12:00 sharp waits out lunch, one at 14:00 goes."""
    lunch = QuietHours(time(12), time(14))
    assert lunch.next_allowed(_at(12), SHANGHAI) == _at(14)
    assert lunch.next_allowed(_at(14), SHANGHAI) == _at(14)
    assert NIGHT.next_allowed(_at(21), SHANGHAI) == _at(8, day=11)
    assert NIGHT.next_allowed(_at(8), SHANGHAI) == _at(8)


@given(st.datetimes(timezones=st.just(UTC)))
def test_next_allowed_is_never_earlier_nor_quiet(now: datetime) -> None:
    allowed = NIGHT.next_allowed(now, SHANGHAI)
    assert allowed >= now
    assert not NIGHT.contains(allowed.astimezone(SHANGHAI).time())
    assert (allowed - now).total_seconds() <= 11 * 3600


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_seconds=1.0, cap_seconds=10.0)
    assert [policy.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 5]
    assert [policy.delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


def test_retry_after_is_a_floor_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=1.0, cap_seconds=300.0)
    assert policy.delay(1, retry_after=7.0, rand=lambda: 1.0) == 7.0
    assert policy.delay(5, retry_after=0.5, rand=lambda: 1.0) == 16.0
    # A gateway asking for years (or for ever) parks no text: the cap.
    assert policy.delay(1, retry_after=1e9, rand=lambda: 1.0) == 300.0
    assert policy.delay(1, retry_after=float("inf"), rand=lambda: 1.0) == 1.0
    assert policy.delay(1, retry_after=float("nan"), rand=lambda: 1.0) == 1.0


@given(st.integers(1, 50), st.floats(0, 1))
def test_delay_bounds(attempt: int, r: float) -> None:
    policy = RetryPolicy(base_seconds=0.5, cap_seconds=60.0)
    step = min(60.0, 0.5 * 2 ** (attempt - 1))
    assert step / 2 <= policy.delay(attempt, rand=lambda: r) <= step


@given(st.integers(1, 10**6), st.floats(0, 1))
def test_delay_stays_within_the_cap_however_many_attempts(attempt: int, r: float) -> None:
    # A short cap and a long give-up window try a text thousands of times: 2.0 ** 1024
    # overflowed at attempt 1025, and the dispatcher then failed on every pass.
    policy = RetryPolicy(base_seconds=1.0, cap_seconds=30.0, give_up_after_seconds=30 * 86400)
    assert policy.delay(attempt, rand=lambda: r) <= 30.0
    assert policy.delay(1025, rand=lambda: 1.0) == 30.0


def test_a_text_is_given_up_after_its_attempts_and_its_time_both() -> None:
    policy = RetryPolicy(max_attempts=3, give_up_after_seconds=600.0)
    assert [policy.exhausted(n, 600.0) for n in (1, 2, 3, 4)] == [False, False, True, True]
    # Three quick failures (a gateway down for a minute) lose nothing.
    assert not policy.exhausted(3, 31.0) and not policy.exhausted(40, 599.0)
    assert RetryPolicy().give_up_after_seconds == 6 * 3600.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("inf", None),
        ("nan", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date gone by
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(value: str, seconds: float | None) -> None:
    assert retry_after_seconds({"retry-after": value}) == seconds


def test_retry_after_as_a_date_to_come() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    waited = retry_after_seconds({"retry-after": later})
    assert waited is not None and 110 <= waited <= 120


def test_a_reminder_key_names_its_loan_instalment_and_day_and_starts_with_their_prefixes() -> None:
    """The one format of a reminder's dedup key: what notifications queues, a repayment finds
    by its prefix, and the history checker reads back (a loan id may hold ``:``)."""
    key = reminder_key("loan:7", 2, date(2027, 1, 31), "+8613900000001", "instalment_today")
    assert key == "instalment:loan:7:2:2027-01-31|+8613900000001|instalment_today"
    assert key.startswith(reminder_prefix("loan:7", 2)) and key.startswith(
        reminder_prefix("loan:7")
    )
    assert not key.startswith(reminder_prefix("loan:7", 20))
    assert reminder_of(key) == ("loan:7", 2, date(2027, 1, 31))
    for other in ("order.confirmed|+86139|order_confirmed", "instalment:loan-1:x:2027-01-31|p"):
        assert reminder_of(other) is None
