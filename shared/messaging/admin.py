"""Creating the project's topics (and their dead-letter twins) on a cluster."""

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from shared.kafka_security import client_kwargs
from shared.settings import Settings
from shared.topics import ALL_TOPICS

log = logging.getLogger(__name__)


def replication_for(brokers: int) -> int:
    """Copies of each record on a cluster of ``brokers``: three (two of them in sync for a
    write to be acknowledged), or every broker of a smaller cluster."""
    return max(1, min(3, brokers))


async def ensure_topics(
    bootstrap_servers: str,
    partitions: int,
    replication_factor: int | None = None,
    timeout: float = 60.0,
    settings: Settings | None = None,
) -> int:
    """Create every topic that does not exist yet; idempotent and safe to race. Without a
    ``replication_factor``, each record is kept on three brokers, or on as many as the
    cluster has if fewer (an existing cluster named by ``caravan prepare`` got one copy of
    every record: one broker lost, acknowledged events lost). The factor used."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs(settings))
        try:
            await admin.start()
            rf = replication_factor
            if rf is None:
                rf = replication_for(len((await admin.describe_cluster())["brokers"]))
            configs = {"min.insync.replicas": "2"} if rf >= 3 else {}
            existing = set(await admin.list_topics())
            missing = [t for t in ALL_TOPICS if t not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(t, partitions, rf, topic_configs=configs) for t in missing]
                    )
            return rf
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
