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


async def ensure_topics(
    bootstrap_servers: str,
    partitions: int,
    replication_factor: int,
    timeout: float = 60.0,
    settings: Settings | None = None,
) -> None:
    """Create every topic that does not exist yet; idempotent and safe to race."""
    configs = {"min.insync.replicas": "2"} if replication_factor >= 3 else {}
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs(settings))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in ALL_TOPICS if t not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(t, partitions, replication_factor, topic_configs=configs)
                            for t in missing
                        ]
                    )
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
