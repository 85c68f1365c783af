"""The gate a platform's pushes pass (services.platform.entrypoints.http.Gate): a burst is
taken as many at a time as the pool has connections, the others in their turn, and one whose
turn does not come within the bound is turned away having done nothing."""

import asyncio

from services.platform.entrypoints.http import Gate


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
