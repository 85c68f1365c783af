"""Topics the cluster refuses to create are said, not taken as created: Kafka answers each
topic's error in its CreateTopics response and the admin client raises none of them, so a
missing ACL or a policy made `caravan prepare` say "topics ready" (the services then waited
on topics that did not exist)."""

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import (
    InvalidReplicationFactorError,
    NotControllerError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from shared.messaging import admin
from shared.messaging.admin import Topics, TopicsNotCreated, ensure_topics, refusals
from shared.topics import ALL_TOPICS


def test_what_the_answer_refused_and_whether_asking_again_may_help() -> None:
    created, exists = ("a", 0, None), ("b", TopicAlreadyExistsError.errno, "exists")
    assert refusals([created, exists]) == ([], True)
    acl = ("c", TopicAuthorizationFailedError.errno, "")
    assert refusals([created, acl]) == (["c: TopicAuthorizationFailedError"], False)
    moved = ("d", NotControllerError.errno, "not the controller")
    assert refusals([moved]) == (["d: NotControllerError (not the controller)"], True)
    v0 = ("e", InvalidReplicationFactorError.errno)  # version 0 answers carry no message
    assert refusals([v0, moved])[1] is False


class FakeAdmin:
    """A cluster with no topics that answers CreateTopics with ``errors``."""

    def __init__(self, errors: list[tuple[Any, ...]]) -> None:
        self.errors = errors
        self.asked = 0

    def __call__(self, **_: Any) -> "FakeAdmin":
        return self

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, topics: list[Any]) -> SimpleNamespace:
        self.asked += 1
        return SimpleNamespace(topic_errors=self.errors if self.asked == 1 else [])


async def test_a_refusal_is_raised_and_a_passing_one_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = FakeAdmin([(ALL_TOPICS[0], TopicAuthorizationFailedError.errno, "no ACL")])
    monkeypatch.setattr(admin, "AIOKafkaAdminClient", refused)
    with pytest.raises(TopicsNotCreated, match="TopicAuthorizationFailedError \\(no ACL\\)"):
        await ensure_topics("127.0.0.1:1", 3, replication_factor=1)
    passing = FakeAdmin([(ALL_TOPICS[0], NotControllerError.errno, "")])
    monkeypatch.setattr(admin, "AIOKafkaAdminClient", passing)
    assert await ensure_topics("127.0.0.1:1", 3, replication_factor=1) == Topics(1, {}, {})
    assert passing.asked == 2
