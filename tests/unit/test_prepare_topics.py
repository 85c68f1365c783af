"""The topics `caravan prepare` and `caravan up` create on a cluster the settings name: as
many partitions as ``CARAVAN_TOPIC_PARTITIONS`` says (it was never read: always 3), and three
copies of each record on a cluster of three brokers (`caravan up` asked for one, as for its
own single broker); and the servers named in ``.env`` as well as in the environment, as
Settings reads them (`caravan up` read only the environment, and started a Kafka and a
PostgreSQL of its own)."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from caravan import db_roles, system
from caravan.output import OperatorError
from shared.db.migrate import Migrated
from shared.messaging import admin
from shared.messaging.kafka_admin import HOUR_MS
from shared.topics import ALL_TOPICS, DEAD_LETTER_TOPICS
from tests.harness import free_port
from tests.unit.conftest import Caravan
from tests.unit.test_topic_creation import FakeAdmin

BROKER = "broker.example:9092"


class Cluster(FakeAdmin):
    """A cluster of three brokers with no topics: where it was reached, what it was asked."""

    def __init__(self) -> None:
        super().__init__([])
        self.bootstrap: list[str] = []
        self.created: list[Any] = []

    def __call__(self, **kwargs: Any) -> "Cluster":
        self.bootstrap.append(kwargs["bootstrap_servers"])
        return self

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(3)]}

    async def create_topics(self, topics: list[Any]) -> Any:
        self.created.extend(topics)
        return await super().create_topics(topics)


def _not_started(*args: object, **kwargs: object) -> None:
    raise OperatorError("started a Kafka or PostgreSQL of its own")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The cluster every Kafka admin client reaches; nothing local or in a container is
    started, and PostgreSQL (at an address nothing listens on) stops the command once the
    topics are made."""
    found = Cluster()
    monkeypatch.setattr(admin, "AIOKafkaAdminClient", found)
    monkeypatch.setattr(system, "docker_available", lambda: False)
    monkeypatch.setattr(system, "LocalKafka", _not_started)
    monkeypatch.setattr(system, "local_postgres", _not_started)
    return found


def _run(caravan: Caravan, command: str) -> None:
    """``caravan COMMAND``, which stops once the topics are made (PostgreSQL is not there)."""
    code, out, err = caravan(command)
    assert "cannot reach PostgreSQL" in err, (code, out, err)


DATABASE = "postgresql://caravan:secret@127.0.0.1:{port}/caravan"


@pytest.mark.parametrize("command", ["prepare", "up"])
def test_new_topics_get_the_partitions_the_settings_say(
    caravan: Caravan, cluster: Cluster, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", BROKER)
    monkeypatch.setenv("DATABASE_URL", DATABASE.format(port=free_port()))
    monkeypatch.setenv("CARAVAN_TOPIC_PARTITIONS", "6")
    _run(caravan, command)
    assert len(cluster.created) == len(ALL_TOPICS)
    assert {t.num_partitions for t in cluster.created} == {6}


def test_caravan_up_on_a_cluster_the_settings_name_asks_for_three_copies(
    caravan: Caravan, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", BROKER)
    monkeypatch.setenv("DATABASE_URL", DATABASE.format(port=free_port()))
    _run(caravan, "up")
    assert {t.replication_factor for t in cluster.created} == {3}


@pytest.mark.parametrize("command", ["prepare", "up"])
def test_the_servers_named_in_dotenv_are_the_ones_used(
    caravan: Caravan,
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    database = DATABASE.format(port=free_port())
    (tmp_path / ".env").write_text(f"KAFKA_BOOTSTRAP_SERVERS={BROKER}\nDATABASE_URL={database}\n")
    monkeypatch.chdir(tmp_path)
    _run(caravan, command)
    assert set(cluster.bootstrap) == {BROKER}


def test_the_test_session_and_the_benches_never_use_the_servers_a_dotenv_names(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """They call start_infrastructure as conftest does: a developer's ``.env`` naming real
    servers must not have the suite migrate them, issue tokens there and join their groups."""
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    database = DATABASE.format(port=free_port())
    (tmp_path / ".env").write_text(f"KAFKA_BOOTSTRAP_SERVERS={BROKER}\nDATABASE_URL={database}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OperatorError, match="started a Kafka or PostgreSQL of its own"):
        system.start_infrastructure(base_dir=tmp_path / "cache", kafka_port=free_port())


def test_topics_the_cluster_refuses_are_said_on_stderr(
    caravan: Caravan, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`caravan prepare` said them on stdout (and `caravan up` in a traceback)."""
    cluster.errors = [(ALL_TOPICS[0], TopicAuthorizationFailedError.errno, "no ACL")]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", BROKER)
    monkeypatch.setenv("DATABASE_URL", DATABASE.format(port=free_port()))
    for command in ("prepare", "up"):
        cluster.asked = 0
        code, out, err = caravan(command)
        said = f"topics not created: the cluster refused: {ALL_TOPICS[0]}: "
        assert code == 1 and err.startswith(said + "TopicAuthorizationFailedError (no ACL)"), err
        assert err.count("\n") == 1 and "topics not created" not in out, out


@pytest.mark.parametrize("command", ["prepare", "up"])
def test_new_dead_letter_topics_keep_letters_as_long_as_the_settings_say(
    caravan: Caravan, cluster: Cluster, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """They had no ``retention.ms``: the broker's default deleted a letter after 7 days (and a
    segment), while caravan_dead_letters_total still counted it. 30 days unless set; 0 keeps
    them for ever (-1); the other topics keep the broker's default."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", BROKER)
    monkeypatch.setenv("DATABASE_URL", DATABASE.format(port=free_port()))
    for hours, kept in ((None, str(30 * 24 * HOUR_MS)), ("0", "-1"), ("1.5", "5400000")):
        if hours is not None:
            monkeypatch.setenv("CARAVAN_DLQ_RETENTION_HOURS", hours)
        cluster.created = []
        _run(caravan, command)
        retention = {t.name: t.topic_configs.get("retention.ms") for t in cluster.created}
        assert retention == {t: kept if t in DEAD_LETTER_TOPICS else None for t in ALL_TOPICS}


class Kept(Cluster):
    """A cluster whose topics were made with 3 partitions, the dead-letter ones with 1, and
    whose dead-letter topics keep records ``retention_ms`` (30 days: the settings' default)."""

    retention_ms = 30 * 24 * HOUR_MS

    async def list_topics(self) -> list[str]:
        return list(ALL_TOPICS)

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        entries: list[Any] = [("retention.ms", str(self.retention_ms), False, 1, False, [])]
        described = [(0, "", 2, r.name, entries) for r in reversed(resources)]  # Kafka's order
        return [SimpleNamespace(resources=described)]

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        counts = {t: 1 if t.endswith(".dlq") else 3 for t in reversed(topics)}  # Kafka's order
        return [
            {"topic": t, "error_code": 0, "partitions": [{"partition": p} for p in range(n)]}
            for t, n in counts.items()
        ]


@pytest.fixture
def kept(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Kept:
    """A :class:`Kept` cluster, which every Kafka admin client reaches; the database's part
    of prepare passes (caravan up stops at its token, PostgreSQL not being there)."""
    found = Kept()
    monkeypatch.setattr(admin, "AIOKafkaAdminClient", found)

    async def done(*args: object) -> None: ...

    for name in ("ensure_owner", "grant_services"):
        monkeypatch.setattr(db_roles, name, done)
    monkeypatch.setattr(system, "upgrade", lambda *args: Migrated(None, "0001", False, 0.0))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", BROKER)
    monkeypatch.setenv("DATABASE_URL", DATABASE.format(port=free_port()))
    return found


def _warned(caravan: Caravan, command: str, about: str = "partition(s), not") -> list[str]:
    """The lines of ``caravan COMMAND`` that warn of a topic kept with other partitions (or
    with what ``about`` says)."""
    code, out, err = caravan(command)
    assert code == 0 if command == "prepare" else "cannot reach PostgreSQL" in err, (out, err)
    return [line for line in out.splitlines() if about in line]


@pytest.mark.parametrize("command", ["prepare", "up"])
def test_a_topic_kept_with_other_partitions_than_the_settings_is_said(
    caravan: Caravan, kept: Kept, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """CARAVAN_TOPIC_PARTITIONS=6 on a cluster whose topics have 3: they were left with 3 and
    nothing said so, and an operator took the new count for the topics'."""
    monkeypatch.setenv("CARAVAN_TOPIC_PARTITIONS", "3")
    said = [line.split(" ", 1)[0] for line in _warned(caravan, command)]
    assert said == [t for t in ALL_TOPICS if t.endswith(".dlq")]
    monkeypatch.setenv("CARAVAN_TOPIC_PARTITIONS", "6")
    said = _warned(caravan, command)
    assert len(said) == len(ALL_TOPICS) and kept.created == [], said
    assert said[0] == (
        f"{ALL_TOPICS[0]} keeps its 3 partition(s), not the 6 of CARAVAN_TOPIC_PARTITIONS: Kafka "
        "can only add partitions, and adding them moves keys (an order's events) to other "
        "partitions, so that is left to operations"
    )


@pytest.mark.parametrize("command", ["prepare", "up"])
def test_a_dead_letter_topic_kept_with_another_retention_than_the_settings_is_said(
    caravan: Caravan, kept: Kept, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Dead-letter topics made before they had a retention of their own keep the broker's 7
    days: prepare leaves a topic's retention as it is, and says so, with the command that
    sets it."""
    kept.retention_ms = 7 * 24 * HOUR_MS
    lines = _warned(caravan, command, "dead letters")
    assert [line.split(" ", 1)[0] for line in lines] == list(DEAD_LETTER_TOPICS)
    assert lines[0] == (
        f"{DEAD_LETTER_TOPICS[0]} keeps dead letters 168 h, not 720 h as "
        "CARAVAN_DLQ_RETENTION_HOURS says: prepare leaves a topic's retention as it is "
        f"(kafka-configs.sh --bootstrap-server {BROKER} --alter --entity-type topics "
        f"--entity-name {DEAD_LETTER_TOPICS[0]} --add-config retention.ms=2592000000)"
    )
    monkeypatch.setenv("CARAVAN_DLQ_RETENTION_HOURS", "168")
    assert _warned(caravan, command, "dead letters") == [] and kept.created == []
    kept.retention_ms = -1
    said = _warned(caravan, command, "dead letters")
    assert said[0].startswith(f"{DEAD_LETTER_TOPICS[0]} keeps dead letters for ever, not 168 h")
    monkeypatch.setenv("CARAVAN_DLQ_RETENTION_HOURS", "0")
    assert _warned(caravan, command, "dead letters") == []
    kept.retention_ms = 7 * 24 * HOUR_MS
    said = _warned(caravan, command, "dead letters")
    assert said[0].startswith(f"{DEAD_LETTER_TOPICS[0]} keeps dead letters 168 h, not for ever"), (
        said
    )
