"""How many copies of each record ``caravan prepare`` asks for when it is not told: three on
a cluster of three or more brokers, every broker of a smaller one (shared.messaging.admin).
On an existing cluster it asked for one, so losing a broker lost acknowledged events."""

import pytest

from shared.messaging.admin import replication_for


@pytest.mark.parametrize(("brokers", "copies"), [(1, 1), (2, 2), (3, 3), (5, 3), (0, 1)])
def test_three_copies_or_every_broker_of_a_smaller_cluster(brokers: int, copies: int) -> None:
    assert replication_for(brokers) == copies
