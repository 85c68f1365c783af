"""Which failures the outbox relay takes for Kafka refusing a row for good (the row is set
aside, the relay goes on) and which may pass (retried, the rows after it wait)."""

import pytest
from aiokafka import errors

from shared.messaging.relay import check_topic, refused_for_good


@pytest.mark.parametrize(
    "exc",
    [
        errors.MessageSizeTooLargeError("larger than max_request_size"),
        errors.MessageSizeTooLargeError(),  # the broker's answer, over max.message.bytes
        errors.RecordListTooLargeError(),
        errors.InvalidTopicError(),
    ],
)
def test_a_record_kafka_refuses_is_refused_for_good(exc: BaseException) -> None:
    assert refused_for_good(exc)


@pytest.mark.parametrize(
    "exc",
    [
        errors.KafkaConnectionError(),  # the broker away
        errors.NoBrokersAvailable(),
        errors.LeaderNotAvailableError(),  # a leader moving
        errors.NotLeaderForPartitionError(),
        errors.NotEnoughReplicasError(),
        errors.NotEnoughReplicasAfterAppendError(),
        errors.RequestTimedOutError(),
        errors.KafkaTimeoutError(),  # not retriable in aiokafka's sense, yet it passes
        errors.UnknownTopicOrPartitionError(),  # a topic operations have yet to create
        errors.TopicAuthorizationFailedError(),  # operations may grant it
        errors.ClusterAuthorizationFailedError(),
        errors.OutOfOrderSequenceNumber(),  # a new producer starts afresh
        ConnectionResetError(),
    ],
)
def test_a_failure_that_may_pass_is_not(exc: BaseException) -> None:
    assert not refused_for_good(exc)


@pytest.mark.parametrize("name", ["orders.events.v1", "a", "A_b-c.9", "x" * 249, "..."])
def test_a_valid_topic_name_passes(name: str) -> None:
    check_topic(name)


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "not a topic!", "orders/events", "é"])
def test_a_topic_name_kafka_rejects_is_an_invalid_topic(name: str) -> None:
    with pytest.raises(errors.InvalidTopicError) as raised:
        check_topic(name)
    assert refused_for_good(raised.value)
