"""How late the event loop wakes a task (shared/loop_lag.py), and what ``/healthz`` says of a
timeout met while it was so late."""

import asyncio
import time

from shared.loop_lag import LoopLag, not_heard


async def test_a_loop_held_is_as_late_as_it_was_held_and_while_it_is_held() -> None:
    lag = LoopLag(wake=0.05, kept=5)
    watching = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.2)
        assert lag.lately() < 0.25  # a busy machine's lateness, not a held loop's
        began = asyncio.get_running_loop().time()
        time.sleep(0.5)  # noqa: ASYNC251  # the loop held: the wake awaited is overdue
        assert 0.45 <= lag.since(began) < 1.5
        await asyncio.sleep(0.2)  # woken since, late
        assert 0.45 <= lag.since(began) < 1.5
        assert lag.since(asyncio.get_running_loop().time()) < 0.25  # punctual again
    finally:
        watching.cancel()


def test_a_timeout_is_the_loop_s_once_it_was_late_by_a_quarter_of_the_wait() -> None:
    assert not_heard(0.4, 2) is None
    assert not_heard(0.5, 2) == (
        "this service's event loop was 0.5 s late; PostgreSQL's answer may not have been"
        " heard within 2 s"
    )
