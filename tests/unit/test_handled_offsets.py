"""The background offset committer: one commit an interval after records are handled, none
while idle, a failed commit tried again an interval later even if nothing else comes, at
a rebalance what was handled committed at once and nothing from before it after it, and
its last commit, Kafka away, not waited for without end (the service could not stop)."""

import asyncio
import gc
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import aiokafka
import pytest
from aiokafka import ConsumerRecord, TopicPartition, errors

from shared.logs import FAULT
from shared.messaging.consumer import AiokafkaUnknown, HandledOffsets
from shared.messaging.relay import KAFKA_AWAY
from tests.unit.conftest import Clock, kafka_away_a_minute, said

TP = TopicPartition("orders.events.v1", 0)


@pytest.fixture(autouse=True)
def commit_loops_ended(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commit loop of each HandledOffsets a test makes ends with the test: one whose
    commit failed commits again an interval later (60 s here), and said so in whatever test
    then ran in the session's event loop (test_relay_refusals' count of warnings, in CI)."""
    made: list[HandledOffsets] = []
    init = HandledOffsets.__init__

    def kept(self: HandledOffsets, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(HandledOffsets, "__init__", kept)
    yield
    for offsets in made:
        if offsets.task is not None:
            offsets.task.cancel()


OTHER = TopicPartition("orders.events.v1", 1)


class Requests:
    """Stands in for aiokafka's GroupCoordinator: each request of a commit
    (``_do_commit_offsets``) is put in ``sent`` as it is sent, and answered when the test
    sets its future (a result, or the error the broker answered)."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[tuple[dict[TopicPartition, int], asyncio.Future[None]]]
        self.sent = asyncio.Queue()
        self.tasks: list[asyncio.Task[Any]] = []

    async def _do_commit_offsets(
        self, assignment: object, offsets: dict[TopicPartition, int]
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        answer = asyncio.get_running_loop().create_future()
        self.sent.put_nowait((dict(offsets), answer))
        await answer


class FlakyConsumer:
    """Stands in for AIOKafkaConsumer's ``assignment`` and ``commit``, and its coordinator,
    whose requests HandledOffsets wraps; the first ``fails`` commits raise."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.attempts: list[dict[TopicPartition, int]] = []
        self._coordinator: Any = Requests()

    def assignment(self) -> set[TopicPartition]:
        return {TP, OTHER}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.attempts.append(dict(offsets))
        if len(self.attempts) <= self.fails:
            raise ConnectionError("broker away")


def record(offset: int, tp: TopicPartition = TP) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"", None, 0, 0, [])


async def test_a_failed_commit_is_tried_again_with_nothing_new_handled() -> None:
    consumer = FlakyConsumer(fails=1)
    offsets = HandledOffsets(interval=0.05)
    try:
        async with offsets.handling(consumer, [record(7), record(8)]):
            pass
        await asyncio.sleep(0.5)
        assert consumer.attempts == [{TP: 9}, {TP: 9}]  # failed, then done; then quiet
    finally:
        await offsets.close()


async def test_idle_means_no_commit_and_new_records_one_commit() -> None:
    consumer = FlakyConsumer(fails=0)
    offsets = HandledOffsets(interval=0.05)
    try:
        async with offsets.handling(consumer, [record(1)]):
            pass
        await asyncio.sleep(0.3)
        async with offsets.handling(consumer, [record(2)]):
            pass
        async with offsets.handling(consumer, [record(3)]):
            pass
        await asyncio.sleep(0.3)
        assert consumer.attempts == [{TP: 2}, {TP: 4}]
    finally:
        await offsets.close()


async def test_a_rebalance_commits_what_was_handled_and_nothing_from_before_it_after() -> None:
    consumer = FlakyConsumer(fails=0)
    offsets = HandledOffsets(interval=60)  # nothing but the rebalance commits here
    try:
        async with offsets.handling(consumer, [record(4), record(10, OTHER)]):
            pass
        async with offsets.handling(consumer, [record(5)]):
            await offsets.listener().on_partitions_revoked({TP})  # while it is handled
        assert consumer.attempts == [{TP: 5}]  # the revoked one, at once
        assert offsets.pending == {OTHER: 11}  # not revoked: with the next commit
        async with offsets.handling(consumer, [record(5)]):  # after: as ever
            pass
        assert offsets.pending == {OTHER: 11, TP: 6}
    finally:
        await offsets.close()


class SilentConsumer(FlakyConsumer):
    """A commit that never returns, as aiokafka's does while the group's coordinator is
    away (it waits for one to answer)."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.attempts.append(dict(offsets))
        await asyncio.Event().wait()


async def test_the_last_commit_with_kafka_away_gives_up_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = SilentConsumer(fails=0)
    offsets = HandledOffsets(interval=60, commit_seconds=0.2)  # only close() commits
    async with offsets.handling(consumer, [record(3)]):
        pass
    with caplog.at_level(logging.WARNING, logger="shared.messaging.consumer"):
        await asyncio.wait_for(offsets.close(), 5)
    assert consumer.attempts == [{TP: 4}]
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [
        (
            "committing offsets failed (KafkaTimeoutError(\"no answer from the group's"
            ' coordinator within 0.2 s"))',
            None,
        ),
        (
            "the last commit of offsets failed (KafkaTimeoutError(\"no answer from the group's"
            ' coordinator within 0.2 s")): the records handled since the one before are'
            " delivered again (and found in the inbox)",
            None,
        ),
    ]


class HandlingMeanwhile(FlakyConsumer):
    """A commit during which a batch is handled: the consumer handles records until the
    broker stops, after the last commit (``Service.serve``)."""

    def __init__(self, offsets: HandledOffsets) -> None:
        super().__init__(fails=0)
        self.offsets = offsets

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await super().commit(offsets)
        async with self.offsets.handling(self, [record(9)]):
            pass


async def test_a_batch_handled_during_the_last_commit_is_no_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 50's drill: orders, stopping, logged 'the last commit of offsets failed
    (None)': nothing had failed, a batch was handled while the commit was under way. Its
    records are delivered again (and found in the inbox): said in an info line."""
    offsets = HandledOffsets(interval=60)  # only close() commits
    consumer = HandlingMeanwhile(offsets)
    async with offsets.handling(consumer, [record(8)]):
        pass
    caplog.set_level(logging.INFO, logger="shared.messaging.consumer")
    await offsets.close()
    assert consumer.attempts == [{TP: 9}] and offsets.pending == {TP: 10}
    lines = [line for line in said(caplog, "shared.messaging.consumer") if "offsets" in line[1]]
    assert lines == [
        (
            "INFO",
            "records handled during the last commit of offsets (a batch under way as the"
            " service stopped) are delivered again (and found in the inbox)",
        )
    ]


async def test_a_rebalance_commit_with_kafka_away_gives_up_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The commit of what was handled of the partitions a rebalance takes away runs in
    aiokafka's coordination task, which the consumer's stop waits for: unanswered, it held
    the stop without end (tests/e2e/test_commit_without_coordinator.py)."""
    consumer = SilentConsumer(fails=0)
    offsets = HandledOffsets(interval=60, commit_seconds=0.2)
    async with offsets.handling(consumer, [record(3)]):
        pass
    with caplog.at_level(logging.WARNING, logger="shared.messaging.consumer"):
        await asyncio.wait_for(offsets.listener().on_partitions_revoked({TP}), 5)
    assert consumer.attempts == [{TP: 4}]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["committing offsets failed"]


async def test_where_the_consumer_stands_stays_past_commits_and_goes_with_its_partitions() -> None:
    """``position`` (read by the stall sample) is the offset after the last record handled,
    committed or not, of each partition the consumer still has; a batch that failed moves
    nothing."""
    consumer = FlakyConsumer(fails=0)
    offsets = HandledOffsets(interval=60)
    try:
        async with offsets.handling(consumer, [record(4), record(10, OTHER)]):
            pass
        with pytest.raises(RuntimeError):
            async with offsets.handling(_Seeks(), [record(5), record(6)]):
                raise RuntimeError("a handler failed")
        await offsets.commit()
        assert (offsets.pending, offsets.position) == ({}, {TP: 5, OTHER: 11})
        await offsets.listener().on_partitions_revoked({TP})
        assert offsets.position == {OTHER: 11}
    finally:
        await offsets.close()


class _Seeks:
    """A consumer whose partitions are rewound after a failed batch."""

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass


class AwayConsumer(FlakyConsumer):
    """Its first ``fails`` commits raise Kafka away, as aiokafka's retriable errors say it."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.attempts.append(dict(offsets))
        if len(self.attempts) <= self.fails:
            raise errors.KafkaConnectionError("Unable to bootstrap")


async def test_kafka_away_for_the_commits_is_one_warning_then_a_line_when_it_answers(
    caplog: pytest.LogCaptureFixture, faults: Clock
) -> None:
    """Kafka away, the committer logged "committing offsets failed" at every interval (a
    line a second per consumer, for as long as it lasted): now it is the process's one fault,
    Kafka away, as the relay's is, said once then once a minute, and the commit Kafka
    answers ends it in one line."""
    consumer = AwayConsumer(fails=13)
    offsets = HandledOffsets(interval=60)  # the test commits
    async with offsets.handling(consumer, [record(7)]):
        pass
    for _ in range(14):  # 13 failed, 5 s apart, then one taken
        await offsets.commit()
        faults.now += 5
    assert consumer.attempts == [{TP: 8}] * 14 and offsets.pending == {}
    warned = f"committing offsets failed ({errors.KafkaConnectionError('Unable to bootstrap')!r})"
    assert said(caplog, "shared.messaging.consumer") == kafka_away_a_minute(warned)


async def test_the_last_commit_says_why_it_failed_when_its_own_warning_is_held_back(
    caplog: pytest.LogCaptureFixture, faults: Clock
) -> None:
    """Kafka away already said within the minute, the last commit's own warning is held back
    (a retried fault's): the line that its records are delivered again said no reason."""
    consumer = AwayConsumer(fails=2)
    offsets = HandledOffsets(interval=60)  # the test commits, then close()
    async with offsets.handling(consumer, [record(7)]):
        pass
    await offsets.commit()
    faults.now += 5
    await offsets.close()
    assert consumer.attempts == [{TP: 8}] * 2 and offsets.pending == {TP: 8}
    away = errors.KafkaConnectionError("Unable to bootstrap")
    assert said(caplog, "shared.messaging.consumer") == [
        ("WARNING", f"committing offsets failed ({away!r})"),
        (
            "WARNING",
            f"the last commit of offsets failed ({away!r}): the records handled since the one"
            " before are delivered again (and found in the inbox)",
        ),
    ]


class ShieldingConsumer(FlakyConsumer):
    """A commit that runs its request shielded, in a task of its own, as aiokafka's does
    (``GroupCoordinator.commit_offsets``): a commit given up leaves its request going on."""

    def __init__(self) -> None:
        super().__init__(fails=0)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.attempts.append(dict(offsets))
        await asyncio.shield(self._coordinator._do_commit_offsets(None, offsets))


async def test_a_commit_given_up_that_fails_later_is_a_warning_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After Kafka came back, payments logged at ERROR 'Task exception was never retrieved
    ... GroupCoordinator._do_commit_offsets() ... GroupLoadInProgressError': the request of a
    commit given up (aiokafka shields it) failed later, and no one retrieved its error."""
    consumer = ShieldingConsumer()
    requests = consumer._coordinator
    offsets = HandledOffsets(interval=60, commit_seconds=0.1)  # the test commits
    async with offsets.handling(consumer, [record(7)]):
        pass
    caplog.set_level(logging.WARNING)
    await offsets.commit()  # unanswered: given up
    assert offsets.pending == {TP: 8}
    sent, answer = requests.sent.get_nowait()
    assert sent == {TP: 8}
    answer.set_exception(errors.GroupLoadInProgressError())
    await asyncio.wait(requests.tasks)
    del answer, requests.tasks[:]  # (the error's traceback holds the task)
    gc.collect()  # an error no one retrieved is logged as its task is collected
    late = [r for r in caplog.records if "given up" in r.getMessage()]
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "shared.messaging.consumer",
            "WARNING",
            "committing offsets failed (KafkaTimeoutError(\"no answer from the group's"
            ' coordinator within 0.1 s"))',
        ),
        (
            "shared.messaging.consumer",
            "WARNING",
            f"a commit of offsets given up failed later ({errors.GroupLoadInProgressError()!r})",
        ),
    ]
    assert [getattr(r, FAULT) for r in late] == [KAFKA_AWAY]  # folds with Kafka away's


async def test_a_commit_is_not_sent_before_one_given_up_is_answered() -> None:
    """A request given up that is still unanswered may yet land: one sent after it, with
    newer offsets, must not land before it (the group's offsets would move back)."""
    consumer = ShieldingConsumer()
    requests = consumer._coordinator
    offsets = HandledOffsets(interval=60, commit_seconds=0.1)  # the test commits
    async with offsets.handling(consumer, [record(7)]):
        pass
    await offsets.commit()  # unanswered: given up
    async with offsets.handling(consumer, [record(8)]):
        pass
    await offsets.commit()  # waits for the first to be answered: given up too
    assert consumer.attempts == [{TP: 8}, {TP: 9}]
    first, answer = requests.sent.get_nowait()
    assert (first, requests.sent.qsize()) == ({TP: 8}, 0)
    answer.set_result(None)
    second, answer = await asyncio.wait_for(requests.sent.get(), 5)
    assert second == {TP: 9}
    answer.set_result(None)
    await asyncio.wait(requests.tasks)


class CoordinatorRenamed(FlakyConsumer):
    """An aiokafka whose consumer calls its coordinator by another name."""

    def __init__(self) -> None:
        super().__init__(fails=0)
        self._group_coordinator = self.__dict__.pop("_coordinator")


class CommitRenamed(FlakyConsumer):
    """An aiokafka whose coordinator calls its request of a commit by another name."""

    def __init__(self) -> None:
        super().__init__(fails=0)
        self._coordinator = SimpleNamespace(_send_commit_offsets=Requests()._do_commit_offsets)


@pytest.mark.parametrize(
    ("consumer", "missing"),
    [
        (CoordinatorRenamed, "its consumer (CoordinatorRenamed) has no _coordinator"),
        (CommitRenamed, "its consumer's SimpleNamespace has no _do_commit_offsets"),
    ],
)
async def test_an_aiokafka_without_what_it_wraps_is_refused_naming_its_version(
    consumer: Callable[[], FlakyConsumer], missing: str
) -> None:
    """HandledOffsets wraps aiokafka's private ``consumer._coordinator._do_commit_offsets``;
    an aiokafka renaming either left it silently unwrapped (commits sent out of order after
    one given up, a late failure asyncio's error): now the service's start refuses it
    (``Consumer.started``), naming the version and what is missing."""
    with pytest.raises(AiokafkaUnknown) as refused:
        HandledOffsets().see_requests(consumer())
    assert str(refused.value).startswith(
        f"aiokafka {aiokafka.__version__}: {missing}, which HandledOffsets"
        " (shared/messaging/consumer.py) wraps so that a commit is sent only after one"
    )
