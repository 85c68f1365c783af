"""Which rows of a batch the outbox relay marks sent once Kafka has answered
(shared/messaging/relay.py): after a broker's restart (session 50's drill), a batch met an
out-of-order sequence on one partition, and the relay marked sent only the rows before it;
those after it that Kafka had acknowledged on other partitions were sent again, 146 events
published twice. Now a row stays unsent only if it was not sent, its failure may pass, or
an earlier row of its key on its topic stays unsent (a key goes to one partition: the
order per key is kept)."""

from typing import Any

from aiokafka import errors

from shared.messaging.relay import RefusedWithOthers, _left_unsent

TOPIC = "orders.events.v1"
SEQUENCE = errors.OutOfOrderSequenceNumber()  # a failure that may pass
TOO_LARGE = errors.MessageSizeTooLargeError()  # a refusal for good: set aside


def rows(*keys: bytes | tuple[str, bytes] | None) -> list[dict[str, Any]]:
    """Outbox rows in order, each of a key (on TOPIC) or of a topic and a key."""
    return [
        {"id": i, "topic": k[0], "key": k[1]}
        if isinstance(k, tuple)
        else {"id": i, "topic": TOPIC, "key": k}
        for i, k in enumerate(keys, 1)
    ]


def test_rows_acknowledged_after_a_failure_of_another_key_are_marked_sent() -> None:
    """The drill's batch: the rows of the key whose partition met an out-of-order sequence
    stay unsent, from that row on; those of other keys, before and after it, are marked."""
    batch = rows(b"a", b"b", b"c", b"b", b"d")
    answers = [None, SEQUENCE, None, None, None]
    assert _left_unsent(batch, answers) == [False, True, False, True, False]


def test_rows_not_sent_stay_unsent_and_hold_their_keys() -> None:
    """A row that could not be sent ends the sending: the rows after it have no answer."""
    batch = rows(b"a", b"b", b"a", b"c")
    assert _left_unsent(batch, [None, errors.KafkaTimeoutError()]) == [False, True, True, True]


def test_a_row_set_aside_does_not_hold_its_key_but_one_of_a_key_held_stays() -> None:
    """Refused for good, a row is set aside, and the rows after it of its key go on; but one
    after a row of its key left unsent stays unsent too (set aside by a later batch)."""
    batch = rows(b"a", b"a", b"b", b"b")
    answers = [TOO_LARGE, None, SEQUENCE, TOO_LARGE]
    assert _left_unsent(batch, answers) == [False, False, True, True]


def test_a_batch_refused_with_others_holds_its_keys_for_the_rows_sent_one_at_a_time() -> None:
    batch = rows(b"a", b"b", b"a", b"c")
    refused = RefusedWithOthers(TOO_LARGE)
    assert _left_unsent(batch, [refused, refused, None, None]) == [True, True, True, False]


def test_a_key_is_held_on_its_topic_and_rows_without_a_key_as_one() -> None:
    batch = rows((TOPIC, b"a"), ("other", b"a"), None, None, (TOPIC, b"a"))
    answers = [SEQUENCE, None, SEQUENCE, None, None]
    assert _left_unsent(batch, answers) == [True, False, True, True, True]
