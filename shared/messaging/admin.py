"""Creating the project's topics (and their dead-letter twins) on a cluster."""

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from shared.kafka_security import client_kwargs
from shared.messaging.kafka_admin import HOUR_MS
from shared.settings import Settings, get_settings
from shared.topics import ALL_TOPICS, DEAD_LETTER_TOPICS

log = logging.getLogger(__name__)


class TopicsNotCreated(RuntimeError):
    """The cluster refused to create topics (an ACL, a policy, a setting it does not take)."""


def refusals(topic_errors: Sequence[tuple[Any, ...]]) -> tuple[list[str], bool]:
    """What a CreateTopics answer's ``topic_errors`` refused (a topic that exists is not
    refused), each as ``topic: error``; and whether all of them may pass if asked again.
    The answer does not raise them: a refused topic passed as created."""
    said, retriable = [], True
    for topic, code, *message in topic_errors:
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        error = for_code(code)
        retriable = retriable and bool(error.retriable)
        detail = f" ({message[0]})" if message and message[0] else ""
        said.append(f"{topic}: {error.__name__}{detail}")
    return said, retriable


class Topics(NamedTuple):
    """What :func:`ensure_topics` did: the replication factor of the topics it created, the
    topics that were there with a partition count other than the one asked, and the
    dead-letter topics that were there with another ``retention.ms`` (all kept so)."""

    replication_factor: int
    other_partitions: dict[str, int]
    other_retention: dict[str, int]


def dlq_retention_ms(hours: float) -> int:
    """The ``retention.ms`` of a dead-letter topic that keeps letters ``hours`` (0: for ever,
    which Kafka says -1)."""
    return round(hours * HOUR_MS) if hours > 0 else -1


async def _retention_ms(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """The ``retention.ms`` of each of ``topics`` that the cluster describes."""
    if not topics:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
    found = {}
    for response in await admin.describe_configs(resources):
        for error_code, _message, _type, topic, entries in response.resources:
            config = {entry[0]: entry[1] for entry in entries}
            if not error_code and "retention.ms" in config:
                found[topic] = int(config["retention.ms"])
    return found


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
) -> Topics:
    """Create every topic that does not exist yet; idempotent and safe to race. Without a
    ``replication_factor``, each record is kept on three brokers, or on as many as the
    cluster has if fewer (an existing cluster named by ``caravan prepare`` got one copy of
    every record: one broker lost, acknowledged events lost). A topic that exists keeps its
    partitions: Kafka can only add some, and adding them moves keys to other partitions
    (an order's later events could be read before its earlier ones); those whose count is
    not ``partitions`` are returned with their count, for the operator to see to. The
    dead-letter topics are made to keep letters as long as ``settings`` say
    (``dlq_retention_hours``); one that exists keeps its own ``retention.ms`` (shortening it
    would delete letters), returned when it is another."""
    retention = dlq_retention_ms((settings or get_settings()).dlq_retention_hours)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
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
            ours = [t for t in ALL_TOPICS if t in existing]
            described = await admin.describe_topics(ours) if ours else []
            counts = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
            other = {t: counts[t] for t in ours if counts.get(t, partitions) != partitions}
            kept = await _retention_ms(admin, [t for t in ours if t in DEAD_LETTER_TOPICS])
            other_retention = {t: kept[t] for t in ours if kept.get(t, retention) != retention}
            if missing:
                dlq = {**configs, "retention.ms": str(retention)}
                answer = await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            partitions,
                            rf,
                            topic_configs=dlq if t in DEAD_LETTER_TOPICS else configs,
                        )
                        for t in missing
                    ]
                )
                refused, retriable = refusals(answer.topic_errors)
                if refused and (not retriable or loop.time() > deadline):
                    raise TopicsNotCreated("the cluster refused: " + "; ".join(refused))
                if refused:
                    await asyncio.sleep(0.5)
                    continue
            return Topics(rf, other, other_retention)
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
