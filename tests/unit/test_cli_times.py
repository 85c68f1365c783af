"""The command line's times are ISO 8601 as ``datetime.fromisoformat`` reads it: with an
offset or ``Z``, with fractions of a second, in the basic format too, and a time without a
zone is UTC, a date alone the start of that day in the market's zone; a time that ``caravan
dlq list`` prints can be given back to ``--since``; any other value is a usage error that says
what is wanted. Kafka is faked."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from caravan import admin_api, cli
from caravan.ops import dlq as ops_dlq
from caravan.ops import replay as ops_replay
from shared import days

NINE_UTC = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[datetime | None]:
    """The ``from_timestamp`` of each replay asked for (a dry run that finds no partition)."""
    times: list[datetime | None] = []

    async def replay(*args: Any, from_timestamp: datetime | None, **how: Any) -> Any:
        times.append(from_timestamp)
        return ops_replay.ReplayResult("t", "g", "Empty", 0, [], False)

    monkeypatch.setattr(ops_replay, "replay", replay)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1/caravan")
    return times


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-03T09:00:00+08:00",
        "2026-12-03T01:00:00Z",
        "2026-12-03T01:00:00.000+00:00",
        "20261203T090000+0800",  # ISO 8601's basic format
        "2026-12-03 01:00",  # no zone: UTC
    ],
)
def test_replay_from_a_time_in_iso_8601(asked: list[datetime | None], value: str) -> None:
    args = ["replay", "--topic", "t", "--group", "g", "--from-timestamp", value, "--dry-run"]
    done = CliRunner().invoke(cli.app, args)
    assert done.exit_code == 0, done.output
    assert asked == [NINE_UTC]
    assert asked[0] is not None and asked[0].utcoffset() is not None


def letter(offset: int, time: datetime) -> ops_dlq.DeadLetter:
    return ops_dlq.DeadLetter("orders.requests.v1.dlq", 0, offset, time, None, b"x", {})


def test_a_time_dlq_list_prints_is_one_since_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    letters = [letter(0, NINE_UTC - timedelta(milliseconds=1)), letter(1, NINE_UTC)]

    async def read(bootstrap: str) -> list[ops_dlq.DeadLetter]:
        return letters

    monkeypatch.setattr(ops_dlq, "read", read)
    listed = CliRunner().invoke(cli.app, ["dlq", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    shown = NINE_UTC.isoformat(timespec="seconds")
    assert shown in listed.output
    since = CliRunner().invoke(cli.app, ["dlq", "list", "--since", shown], env={"COLUMNS": "200"})
    assert since.exit_code == 0, since.output
    assert "1 dead letter(s)" in since.output and "orders.requests.v1.dlq:0:1" in since.output


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "--topic", "t", "--group", "g", "--from-timestamp"],
        ["dlq", "list", "--since"],
    ],
)
def test_a_time_that_is_not_iso_8601_is_a_usage_error(args: list[str]) -> None:
    done = CliRunner().invoke(cli.app, [*args, "3 December"], env={"COLUMNS": "200"})
    assert done.exit_code == 2
    assert "not an ISO 8601 time" in done.output, done.output


@pytest.fixture
def in_shawan(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The market's zone China's (the test session sets another: tests/conftest.py)."""
    monkeypatch.setenv("CARAVAN_MARKET_TIMEZONE", "Asia/Shanghai")
    days.market_zone.cache_clear()
    yield
    days.market_zone.cache_clear()


@pytest.mark.usefixtures("in_shawan")
def test_a_date_alone_is_the_start_of_the_market_s_day(
    asked: list[datetime | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill's operator asked `caravan orders list --since 2026-12-06` for today's orders: read
    as midnight UTC, 08:00 in Shawan, it missed the market's first 8 hours. A date alone is
    now the start of that day in the market's zone, for every time option; a time is as it
    was (a zone as given, none UTC)."""
    sent: list[dict[str, str]] = []

    def newest(base: str, service: str, path: str, params: dict[str, str], *rest: Any) -> Any:
        sent.append(params)
        return [], False

    monkeypatch.setattr(admin_api, "newest", newest)
    args = ["orders", "list", "--since", "2026-12-06", "--until", "2026-12-07"]
    done = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert sent == [{"since": "2026-12-06T00:00:00+08:00", "until": "2026-12-07T00:00:00+08:00"}]
    times = ["2026-12-06T00:00", "2026-12-06T00:00+08:00"]
    for at in times:
        assert CliRunner().invoke(cli.app, ["orders", "list", "--since", at]).exit_code == 0
    assert [s["since"] for s in sent[1:]] == [
        "2026-12-06T00:00:00+00:00",
        "2026-12-06T00:00:00+08:00",
    ]
    args = ["replay", "--topic", "t", "--group", "g", "--from-timestamp", "2026-12-03"]
    assert CliRunner().invoke(cli.app, [*args, "--dry-run"]).exit_code == 0
    assert asked == [datetime(2026, 12, 2, 16, 0, tzinfo=UTC)]


@pytest.mark.usefixtures("in_shawan")
def test_a_month_s_payables_are_asked_from_its_first_day_to_the_next_month_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Staff paying the sellers for December typed `--since 2026-12` and were refused (not a
    time); `--month 2026-12` is the market's month, December to the start of January (its
    year turned), and a month with --since or --until is refused before any call."""
    from caravan import payments_cli

    sent: list[dict[str, str]] = []

    def call(base: str, service: str, method: str, path: str, **kwargs: Any) -> Any:
        sent.append(kwargs["params"])
        return {"sellers": [], "orders": 0, "owed_fen": 0, "cancelled_fen": 0}

    monkeypatch.setattr(payments_cli, "call", call)
    done = CliRunner().invoke(cli.app, ["payments", "payables", "--month", "2026-12"])
    assert (done.exit_code, done.output) == (0, "no payable matches --month 2026-12\n")
    assert sent == [{"since": "2026-12-01T00:00:00+08:00", "until": "2027-01-01T00:00:00+08:00"}]
    refused = CliRunner().invoke(cli.app, ["payments", "payables", "--month", "2026-13"])
    assert refused.exit_code == 2 and "is not a month, YYYY-MM" in refused.output, refused.output
    both = ["payments", "payables", "--month", "2026-12", "--since", "2026-12-01"]
    refused = CliRunner().invoke(cli.app, both)  # main() says it, exit 2
    assert str(refused.exception) == "--month, or --since and --until: not both"
    assert getattr(refused.exception, "exit_code", None) == 2
    assert len(sent) == 1
