"""How long ``caravan demo`` follows its orders: a minute from the start ended a run of 6,000
orders with 1,450 pending while the system worked through them; it waits a minute from the
last order it saw end."""

from caravan.demo import Patience


def test_the_demo_waits_its_seconds_again_from_each_order_it_sees_end() -> None:
    now = [0.0]
    patience = Patience(60.0, clock=lambda: now[0])
    waited = []
    for at, ended in [(30.0, 0), (59.0, 1), (100.0, 500), (150.0, 500), (159.5, 500)]:
        now[0] = at
        waited.append(patience.lasts(ended))
    assert waited == [True, True, True, True, True]
    now[0] = 160.0  # a minute since the 500th order ended, and none after it
    assert not patience.lasts(500)
    assert not patience.lasts(500)


def test_the_demo_that_sees_no_order_end_waits_its_seconds_from_the_start() -> None:
    now = [10.0]
    patience = Patience(60.0, clock=lambda: now[0])
    now[0] = 69.9
    assert patience.lasts(0)
    now[0] = 70.0
    assert not patience.lasts(0)
