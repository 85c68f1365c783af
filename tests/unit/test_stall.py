"""A stall (shared/stall.py): work waiting whose position has not moved from one sample to
the next. A quiet queue is never stalled, nor a long backlog that moves; one that stops
moving is stalled from the first sample that saw it so, and no longer once it moves."""

from shared.stall import OUTBOX, Stalled, Stalls, consumer_said, relay_said
from tests.unit.conftest import Clock

PARTITION = "orders.events.v1[0]"


def test_a_quiet_queue_is_never_stalled() -> None:
    clock = Clock()
    stalls = Stalls(clock)
    for _ in range(100):  # 500 s of samples every 5 s, nothing waiting
        stalls.sampled({PARTITION: (42, 0)})
        clock.now += 5
    assert stalls.seconds(PARTITION) == 0
    assert stalls.stalled(60) == []
    assert consumer_said(stalls, 60) == "ok"


def test_a_backlog_that_moves_is_never_stalled_however_long() -> None:
    clock = Clock()
    stalls = Stalls(clock)
    position = 0
    for _ in range(100):  # 500 s of a backlog of 100,000 records, 100 handled a sample
        stalls.sampled({PARTITION: (position, 100_000 - position)})
        clock.now += 5
        position += 100
    assert stalls.seconds(PARTITION) == 5  # since the last sample, which saw it move
    assert stalls.stalled(60) == []


def test_a_queue_that_does_not_move_is_stalled_from_the_first_sample_that_saw_it() -> None:
    clock = Clock()
    stalls = Stalls(clock)
    stalls.sampled({PARTITION: (7, 0), "payments.events.v1[2]": (3, 0)})
    clock.now += 5
    stalls.sampled({PARTITION: (7, 2), "payments.events.v1[2]": (3, 1)})  # records come
    for _ in range(12):
        clock.now += 5
        stalls.sampled({PARTITION: (7, 3), "payments.events.v1[2]": (3, 1)})
    assert stalls.stalled(60) == []  # 60 s since the records were first seen waiting
    clock.now += 15  # /healthz asks between samples
    assert stalls.stalled(60) == [
        Stalled("orders.events.v1[0]", 3, 75.0),
        Stalled("payments.events.v1[2]", 1, 75.0),
    ]
    assert consumer_said(stalls, 60) == (
        "4 records waiting on orders.events.v1[0], payments.events.v1[2], none handled for 75 s"
    )
    stalls.sampled({PARTITION: (8, 2), "payments.events.v1[2]": (3, 1)})  # one handled
    assert consumer_said(stalls, 60) == (
        "1 record waiting on payments.events.v1[2], none handled for 75 s"
    )
    stalls.sampled({PARTITION: (8, 2)})  # a topic deleted
    assert consumer_said(stalls, 60) == "ok"


def test_an_outbox_whose_oldest_row_stays_is_stalled_until_it_goes() -> None:
    clock = Clock()
    stalls = Stalls(clock)
    stalls.sampled({OUTBOX: (0, 0)})  # empty: no oldest row
    clock.now += 5
    stalls.sampled({OUTBOX: (1001, 12)})
    clock.now += 61
    stalls.sampled({OUTBOX: (1001, 40)})  # rows come, the oldest is not published
    assert relay_said(stalls, 60) == "40 outbox rows unsent, none published for 61 s"
    stalls.sampled({OUTBOX: (1002, 39)})
    assert relay_said(stalls, 60) == "ok"
    clock.now += 61
    assert relay_said(stalls, 60) == "39 outbox rows unsent, none published for 61 s"
    stalls.sampled({OUTBOX: (0, 0)})  # all sent
    assert (relay_said(stalls, 60), stalls.seconds(OUTBOX)) == ("ok", 0)
