"""The gate a platform's pushes pass (services.platform.entrypoints.http.Gate): a burst is
taken as many at a time as the pool has connections, the others in their turn, and one whose
turn does not come within the bound is turned away having done nothing."""

import asyncio
import logging

import pytest
from pydantic import ValidationError

from services.platform.bootstrap import push_gate
from services.platform.entrypoints.http import TURNED_AWAY, Gate, turned_away
from services.platform.metrics import PUSHES
from shared.logs import Burst
from shared.settings import Settings, named_faults


async def test_a_burst_is_taken_a_few_at_a_time_in_the_order_it_came() -> None:
    gate = Gate(3, 5.0)
    inside = most = 0
    order: list[int] = []

    async def push(i: int) -> bool:
        nonlocal inside, most
        async with gate.entered() as taken:
            if taken:
                order.append(i)
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1
            return taken

    taken = await asyncio.gather(*(push(i) for i in range(30)))
    assert all(taken)
    assert most == 3
    assert order == list(range(30))


async def test_a_push_whose_turn_does_not_come_in_time_is_turned_away_having_done_nothing() -> None:
    gate = Gate(1, 0.05)
    done: list[str] = []

    async def push(name: str, takes: float) -> bool:
        async with gate.entered() as taken:
            if taken:
                await asyncio.sleep(takes)
                done.append(name)
            return taken

    first = asyncio.create_task(push("first", 0.3))
    await asyncio.sleep(0)
    assert gate.waiting == 0
    second = asyncio.create_task(push("second", 0))
    await asyncio.sleep(0.01)
    assert gate.waiting == 1
    assert await second is False
    assert gate.waiting == 0
    assert await first is True
    assert done == ["first"]
    assert await push("third", 0) is True  # its place given back


def test_a_busy_push_is_asked_back_when_the_queue_ahead_is_likely_gone() -> None:
    """``Retry-After`` was a flat 5 s, the queue ahead of a push turned away perhaps a minute
    long: now the pushes waiting, taken ``size`` at a time, each batch the recent time a push
    holds the gate (a moving average), within 1 s .. 60 s."""
    gate = Gate(20, 8.0)
    gate.held = 0.4
    gate.waiting = 300  # 15 batches of 0.4 s
    assert gate.retry_after() == 6
    gate.waiting = 10
    assert gate.retry_after() == 1  # at least a second
    gate.held, gate.waiting = 3.0, 480
    assert gate.retry_after() == 60  # at most a minute
    before = Gate(20, 8.0)  # no push has left it yet: the wait's bound, 8 s, a batch
    before.waiting = 50
    assert before.retry_after() == 20


async def test_the_time_a_push_holds_the_gate_is_a_moving_average() -> None:
    gate = Gate(2, 5.0)
    for takes in (0.05, 0.05, 0.3):
        async with gate.entered() as taken:
            assert taken
            await asyncio.sleep(takes)
    assert gate.held is not None
    assert 0.05 < gate.held < 0.3  # 0.05, then a fifth of the way to 0.3


def test_the_gate_takes_as_many_at_once_as_set_else_as_the_pool_has_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert push_gate(Settings(), 20).size == 20
    monkeypatch.setenv("CARAVAN_PLATFORM_PUSHES_AT_ONCE", "6")
    assert push_gate(Settings(), 20).size == 6


@pytest.mark.parametrize("at_once", ["0", "-3"])
def test_a_gate_taking_no_push_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, at_once: str
) -> None:
    monkeypatch.setenv("CARAVAN_PLATFORM_PUSHES_AT_ONCE", at_once)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert named_faults(refused.value) == ["CARAVAN_PLATFORM_PUSHES_AT_ONCE: must be 1 or more"]


async def test_a_burst_turned_away_is_one_warning_then_one_line_when_its_window_closes(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each push turned away busy wrote its own warning: 290 in a drill of 500 at once. Now
    the first of a burst is said at once, the others counted and said in one line when the
    window closes, naming the app, how many, how many waited and the gate's size. The metric
    still counts each; another app's burst is its own."""
    monkeypatch.setattr(TURNED_AWAY, "window", 0.1)
    busy = PUSHES.labels("shop-a", "busy")
    counted = busy._value.get()
    with caplog.at_level(logging.WARNING, logger="services.platform.entrypoints.http"):
        for i in range(290):
            turned_away("shop-a", f"A-{i}", waiting=480 - i, size=20)
            busy.inc()
        turned_away("shop-b", "B-1", waiting=3, size=20)
        assert [r.getMessage() for r in caplog.records] == [
            "push for app 'shop-a' of order A-0: 503, not taken in time",
            "push for app 'shop-b' of order B-1: 503, not taken in time",
        ]
        await asyncio.sleep(0.3)
    assert [r.getMessage() for r in caplog.records[2:]] == [
        "push for app 'shop-a': 503 to 289 more pushes, not taken in time within 0.1 s"
        " (up to 480 waited, 20 taken at a time)"
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert busy._value.get() - counted == 290


def test_without_a_loop_a_burst_s_count_is_said_by_the_next_one_after_its_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    burst = Burst(logging.getLogger("test.burst"), window=10.0, clock=lambda: now[0])

    def met(i: int) -> None:
        burst.met("a", f"first {i}", lambda count, most: f"{count} more, up to {most}", most=i)

    with caplog.at_level(logging.WARNING, logger="test.burst"):
        for i in range(5):
            met(i)
        now[0] = 10.0
        met(9)
    assert caplog.messages == ["first 0", "4 more, up to 4", "first 9"]
