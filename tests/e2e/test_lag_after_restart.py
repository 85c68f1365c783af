"""The consumer lag read just after Kafka restarts (shared/messaging/kafka_admin.py,
``offsets``, which each service's lag sampler and the operations page read): the group's
coordinator, loading the group's offsets again, answers an offset fetch with an error of the
whole answer (NOT_COORDINATOR, then COORDINATOR_LOAD_IN_PROGRESS) and no partition; aiokafka
took that for no offset committed, and the lag for every record the topic keeps. A drill's
first sample after a restart read 14,832 records behind where 29 were. Now the read fails,
Kafka away, and the gauge keeps its last value."""

import asyncio
import time
from pathlib import Path

from caravan.infra.kafka import LocalKafka
from caravan.infra.ports import port_open
from shared.messaging import kafka_admin
from shared.messaging.admin import ensure_topics
from shared.messaging.relay import kafka_away
from shared.topics import Topic
from tests.conftest import KAFKA_PORT
from tests.harness import sent

OWN_KAFKA_PORT = KAFKA_PORT + 4  # a broker of the test's own, to kill (test_commit_...: + 3)
TOPIC = Topic.ORDER_EVENTS.value
GROUP = "caravan-test-lag-after-restart"


async def test_the_lag_read_while_the_coordinator_loads_the_group_is_unknown_not_the_whole_log(
    tmp_path: Path,
) -> None:
    kafka = LocalKafka(tmp_path / "kafka", first_port=OWN_KAFKA_PORT)
    bootstrap = await asyncio.to_thread(kafka.start)
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await ensure_topics(bootstrap, partitions=1)
        await sent(bootstrap, TOPIC, [b"handled"] * 20)
        # The client open across the restart, as a service's lag sampler keeps its own: it
        # reads again from the broker's first answer.
        async with kafka_admin.group_client(bootstrap, GROUP) as client:
            await kafka_admin.commit(client, TOPIC, {0: 18})
            assert [p.lag for p in await kafka_admin.offsets(client, TOPIC)] == [2]
            lags: list[int | str] = []  # each read from the moment the broker listens
            for _restart in range(10):  # the window is short: a read may miss it
                await asyncio.to_thread(kafka.kill, 0)  # as the drill's kill -9
                await asyncio.to_thread(kafka.restart, 0)
                await asyncio.to_thread(listening, OWN_KAFKA_PORT)
                since = len(lags)
                while 2 not in lags[since:]:
                    assert len(lags) - since < 3000, lags[-10:]  # a minute of reads
                    try:
                        lags += [p.lag for p in await kafka_admin.offsets(client, TOPIC)]
                    except Exception as exc:
                        assert kafka_away(exc), repr(exc)  # the sampler's warning, gauge kept
                        lags.append(type(exc).__name__)
                    await asyncio.sleep(0.02)
                if lags[since] != 2:  # read before the coordinator had loaded the group
                    break
        read = [lag for lag in lags if isinstance(lag, int)]
        assert read == [2] * len(read), lags  # never the 20 records the topic keeps
        assert read != lags, f"the group loaded before each first read: nothing tested {lags}"
    finally:
        await asyncio.to_thread(kafka.stop)


def listening(port: int) -> None:
    """Return once something listens on ``port`` (a broker that started does, before it can
    answer for the groups it coordinates)."""
    while not port_open(port):
        time.sleep(0.05)
