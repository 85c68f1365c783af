"""How ``kafka_admin.committed`` reads a group coordinator's answer to an offset fetch (the
lag sampler's, the operations page's and ``caravan replay``'s committed offsets). A broker
just restarted answers, while it loads the group's offsets again, with an error of the whole
answer (NOT_COORDINATOR, then COORDINATOR_LOAD_IN_PROGRESS) and no partition listed, which
aiokafka's ``committed`` did not read: it said none committed, and the lag read every record
the topic keeps (a drill's first sample after a restart: 14,832 where 29 were; reproduced by
hand against a local broker killed and restarted, `[20, 2]` read where the lag was 2). The
broker's timing cannot be held to a window in a test (an e2e test restarting a broker ten
times missed it in CI): this reads the answers as the coordinator gives them."""

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from shared.messaging.kafka_admin import committed
from shared.messaging.relay import kafka_away

TOPIC = "orders.events.v1"
TPS = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, UNKNOWN_TOPIC_OR_PARTITION = 14, 16, 3


class Coordinator:
    """A group client whose coordinator answers each offset fetch with ``answer``."""

    def __init__(self, answer: Any) -> None:
        self._group_id = "caravan-orders"
        self._client = self
        self.answer = answer
        self.asked: list[Any] = []

    async def coordinator_lookup(self, _kind: int, group: str) -> int:
        assert group == self._group_id
        return 1

    async def send(self, node: int, request: Any) -> Any:
        self.asked.append((node, request))
        return self.answer


@pytest.mark.parametrize("code", [COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR])
async def test_a_coordinator_loading_the_group_is_kafka_away_not_none_committed(code: int) -> None:
    client = Coordinator(SimpleNamespace(error_code=code, topics=[]))
    with pytest.raises(Exception) as raised:
        await committed(client, TPS)
    assert kafka_away(raised.value), repr(raised.value)  # the sample fails, the gauge is kept
    [(node, request)] = client.asked
    assert (node, request._partitions) == (1, [(TOPIC, [0, 1])])  # one request for them all


async def test_the_offsets_committed_are_read_and_minus_one_is_none_committed() -> None:
    answer = SimpleNamespace(error_code=0, topics=[(TOPIC, [(0, 18, "", 0), (1, -1, "", 0)])])
    assert await committed(Coordinator(answer), TPS) == {TPS[0]: 18, TPS[1]: None}


async def test_a_partition_s_error_is_raised() -> None:
    partitions = [(0, -1, "", UNKNOWN_TOPIC_OR_PARTITION), (1, 5, "", 0)]
    answer = SimpleNamespace(error_code=0, topics=[(TOPIC, partitions)])
    with pytest.raises(Exception, match=r"orders.events.v1\[0\]"):
        await committed(Coordinator(answer), TPS)
