"""A ``caravan`` command stopped by something the operator can act on (a tool not installed, a
service that keeps exiting, a file that cannot be read, a database never migrated, a
refusal) says so in one line on stderr and exits non-zero, as an unreachable Kafka or
PostgreSQL does (test_cli_unreachable.py), instead of printing a traceback. Run through
``main()``, with the parts that would start or reach anything faked."""

import functools
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import exc as sa_exc

from caravan import admin_api, checkout, cli, seeding, system, tokens_cli
from caravan.infra import kafka, ports, postgres
from caravan.ops import dlq as ops_dlq
from caravan.output import OperatorError
from services import SERVICES
from services.inventory.handlers import LotTaken
from shared import settings
from shared.api import (
    DATABASE_AWAY,
    DATABASE_BUSY,
    DATABASE_MUTE,
    DATABASE_REFUSES,
    SERVICE_LOOP_LATE,
)
from shared.http import invalid
from shared.messaging import admin, kafka_admin
from shared.seed import Loaded
from shared.topics import Topic
from tests.harness import free_port
from tests.unit.conftest import Caravan
from tests.unit.test_transient_faults import as_the_dialect_raises


def one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(
    ("missing", "said"),
    [
        ("mvn", "Maven (mvn) is needed once to fetch the Kafka jars"),
        ("java", "a Java 17+ runtime (java) is needed to run Kafka"),
        ("pg_ctl", "PostgreSQL server binaries (pg_ctl, initdb) are not installed"),
    ],
)
def test_caravan_up_on_a_machine_without_a_tool_names_it(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    missing: str,
    said: str,
) -> None:
    which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name in (missing, "docker") else which(name)
    )
    monkeypatch.setattr(postgres, "PACKAGED", tmp_path / "no-packages")
    if missing == "pg_ctl":
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    local_infrastructure(monkeypatch, tmp_path, jars=missing != "mvn")

    code, _, err = caravan("up")
    assert (code, one_line(err)) == (1, said)


@pytest.mark.parametrize(
    ("named_by", "unreachable", "what"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka", "Kafka at 127.0.0.1:{port}"),
        ("DATABASE_URL", "postgresql", "PostgreSQL"),
    ],
)
def test_caravan_up_that_cannot_reach_what_the_environment_names_says_it_is_named(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, named_by: str, unreachable: str, what: str
) -> None:
    """With KAFKA_BOOTSTRAP_SERVERS exported (docs/topics.md has a reader export it for an
    example), `caravan up` waited for that Kafka rather than start its own, and a minute later
    said "cannot reach Kafka ... Is the system up (`caravan up`)?" to `caravan up` itself.
    DATABASE_URL steers it alike. Other commands still ask whether the system is up."""
    from aiokafka.errors import KafkaConnectionError

    port = free_port()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://caravan:x@127.0.0.1:{port}/caravan")
    error: Exception = (
        KafkaConnectionError(f"Unable to bootstrap from [('127.0.0.1', {port}, <AF_INET>)]")
        if unreachable == "kafka"
        else ConnectionRefusedError(111, f"Connect call failed ('127.0.0.1', {port})")
    )

    async def prepare(*args: object, **kwargs: object) -> None:
        raise error  # as ensure_topics, or the first migration, does a minute on

    monkeypatch.setattr(system, "prepare", prepare)
    code, _, err = caravan("up")
    line = " ".join(one_line(err).split())
    assert code == 2 and line.startswith(f"cannot reach {what.format(port=port)}: "), line
    assert line.endswith(
        f". {named_by} is set (in the environment or .env), so `caravan up` uses the one it"
        f" names rather than start its own: start that one, or unset {named_by} for"
        " `caravan up` to start its own"
    ), line
    monkeypatch.setattr(ops_dlq, "read", prepare)  # another command: as it was
    code, _, err = caravan("dlq", "list")
    line = " ".join(one_line(err).split())
    assert code == 2 and line.endswith(". Is the system up (`caravan up`)?"), line


@pytest.mark.parametrize("part", ["Kafka", "PostgreSQL"])
def test_a_command_that_cannot_reach_what_the_running_caravan_up_runs_says_it_is_not_answering(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    """While `caravan up` started its crashed Kafka (or PostgreSQL) again, `caravan dlq list`
    (`tokens issue`) asked "Is the system up (`caravan up`)?" of a system that was up. Where
    this checkout's `caravan up` runs (its lock held) the Kafka or PostgreSQL the command
    could not reach (the one it wrote to up.env.json), it says that one is not answering;
    where it does not run, or runs another, it asks as before."""
    from aiokafka.errors import KafkaConnectionError

    kafka_at, database = "127.0.0.1:1", "postgresql://caravan:x@127.0.0.1:1/caravan"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_at)  # as use_running_system sets them
    monkeypatch.setenv("DATABASE_URL", database)

    async def unanswered(*args: object) -> str:
        if part == "Kafka":
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, <AF_INET>)]")
        raise as_the_dialect_raises(
            asyncpg.CannotConnectNowError("the database system is starting up")
        )

    monkeypatch.setattr(ops_dlq, "read", unanswered)
    monkeypatch.setattr(tokens_cli, "issue_token_with_client", unanswered)
    command = ("dlq", "list") if part == "Kafka" else ("tokens", "issue", "--scope", "ops")
    checkout.UP_ENV.parent.mkdir(parents=True)
    running = {"KAFKA_BOOTSTRAP_SERVERS": kafka_at, "DATABASE_URL": database}
    another = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2", "DATABASE_URL": f"{database}2"}
    not_answering = (
        f". This checkout's `caravan up` is running, but its {part} is not answering:"
        f" restarting after a crash? `caravan up` starts its own {part} again and says when"
        " it is up again; try again then"
    )
    is_it_up = ". Is the system up (`caravan up`)?"
    for runs, wrote, said in (
        (True, running, not_answering),
        (False, running, is_it_up),  # left by a run that ended
        (True, another, is_it_up),
    ):
        monkeypatch.setattr(checkout, "running_up", lambda runs=runs: runs)
        checkout.UP_ENV.write_text(json.dumps(wrote))
        code, _, err = caravan(*command)
        line = " ".join(one_line(err).split())
        assert code == 2 and line.startswith(f"cannot reach {part}"), line
        assert line.endswith(said), line


MAVEN_OFFLINE = """\
\x1b[0m\x1b[0m[ERROR] Plugin org.apache.maven.plugins:maven-dependency-plugin:3.7.0 or one of its \
dependencies could not be resolved: Unknown host repo.maven.apache.org -> [Help 1]
[ERROR]
[ERROR] Re-run Maven using the -X switch to enable full debug logging.
[ERROR] [Help 1] http://cwiki.apache.org/confluence/display/MAVEN/PluginResolutionException
"""


def test_caravan_up_whose_fetch_of_the_kafka_jars_fails_says_why_in_one_line(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tools = tmp_path / "bin"  # a Maven that cannot reach Maven Central, as on no network
    tools.mkdir()
    script(tools / "mvn", f"cat <<'EOF'\n{MAVEN_OFFLINE}EOF\nexit 1")
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    local_infrastructure(monkeypatch, tmp_path, jars=False)

    code, _, err = caravan("up")
    log = tmp_path / "repo" / ".cache" / "kafka" / "mvn.log"
    said = one_line(
        err.removeprefix(f"caravan: fetching Kafka jars into {log.with_name('libs')} ...\n")
    )
    assert code == 1 and said == (
        "fetching the Kafka jars with Maven failed ([ERROR] Plugin org.apache.maven.plugins:"
        "maven-dependency-plugin:3.7.0 or one of its dependencies could not be resolved: Unknown"
        " host repo.maven.apache.org -> [Help 1]): run it again where Maven Central is "
        f"reachable (or a mirror in ~/.m2/settings.xml); see {log}"
    ), said
    assert log.read_text() == MAVEN_OFFLINE


KAFKA_REFUSING = """\
[2026-12-03 22:57:01,112] ERROR Exiting Kafka due to fatal exception during startup. (kafka.Kafka$)
java.lang.RuntimeException: Stored node id 7 doesn't match previous node id 1 in meta.properties.
\tat kafka.server.KafkaRaftServer$.initializeLogDirs(KafkaRaftServer.scala:142)
"""


@pytest.mark.parametrize(
    ("output", "full", "why"),
    [
        (  # a broker that refuses its storage, every time
            KAFKA_REFUSING,
            False,
            "java.lang.RuntimeException: Stored node id 7 doesn't match previous node id 1 in"
            " meta.properties.",
        ),
        # A drill filled Kafka's disk: the node exited at its first write, and each start
        # again before it could write a line, said "(its output says nothing of why)" four
        # times. Where the output says nothing and the node's disk is full (faked), that is
        # said.
        ("", True, "no space left on the disk of {data}: 4096 bytes free"),
    ],
)
def test_caravan_up_whose_kafka_exits_while_starting_says_why_in_one_line(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    output: str,
    full: bool,
    why: str,
) -> None:
    _, node = formatted_kafka(monkeypatch, tmp_path, f"cat <<'EOF'\n{output}EOF\nexit 1")
    real = shutil.disk_usage

    def disk_usage(path: str | Path) -> Any:
        faked = full and Path(path) == node / "data"
        return real(path)._replace(free=4096) if faked else real(path)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    code, _, err = caravan("up")
    assert code == 1 and one_line(err) == (
        f"Kafka node 0 exited ({why.format(data=node / 'data')}); see {node / 'kafka.log'}"
    ), err
    assert (node / "kafka.log").read_text() == output * 3  # started three times


def test_caravan_up_whose_kafka_is_slow_to_serve_says_what_to_do_and_where_its_log_is(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a loaded machine the broker may take longer than ``caravan up`` waits for it (90 s):
    it said "not ready after 90s (...); see .../node-*/kafka.log" and nothing of what to do.
    It names the broker's log, says to run the command again, and how to wait longer
    (CARAVAN_UP_KAFKA_READY_SECONDS, refused before anything starts when not a number)."""
    port, node = formatted_kafka(monkeypatch, tmp_path, "exec sleep 60")  # never listens
    monkeypatch.setenv("CARAVAN_UP_KAFKA_READY_SECONDS", "1.5")
    code, _, err = caravan("up")
    waited = f"ConnectionRefusedError('ports [{port}] not listening yet')"
    assert code == 1 and one_line(err) == (
        f"Kafka at 127.0.0.1:{port} not ready after 1.5s ({waited}); its log:"
        f" {node / 'kafka.log'}. A loaded machine starts it slower: run the command again (the"
        " broker's data is kept), or give it longer with CARAVAN_UP_KAFKA_READY_SECONDS=3"
    ), err
    assert not (node / "kafka.pid").exists()  # stopped
    monkeypatch.setenv("CARAVAN_UP_KAFKA_READY_SECONDS", "soon")
    code, _, err = caravan("up")
    assert code == 1 and one_line(err) == (
        "CARAVAN_UP_KAFKA_READY_SECONDS must be a number of seconds above 0, not 'soon'"
    ), err


def test_caravan_up_of_three_nodes_where_one_ran_on_its_ports_refuses_in_one_line(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On the ports ``CARAVAN_UP_LOCAL_PORTS`` gives, ``caravan up --kafka-nodes 3`` finds the
    folder of the single node that ran there (named by the port alone): refused in one line,
    saying how to start it as it was or make a new one, nothing formatted; it was
    ValueError's traceback, ending ``use another base_dir or delete it``."""
    base = tmp_path_factory.mktemp("n")  # short: a longer socket path moves PostgreSQL away
    port = free_port()
    local_infrastructure(monkeypatch, base, port=port)
    monkeypatch.setenv(checkout.LOCAL_PORTS_VAR, f"{port},{free_port()}")
    folder = base / f"kafka-{port}"
    folder.mkdir()
    layout = {
        "nodes": 1,
        "first_port": port,
        "scram": False,
        "cluster_id": "c",
        "directory_ids": ["d"],
    }
    (folder / "cluster.json").write_text(json.dumps(layout))
    code, _, err = caravan("up", "--kafka-nodes", "3", "--dashboard-port", str(free_port()))
    assert code == 2 and one_line(err) == (
        f"{folder} holds the Kafka of an earlier run, 1 node(s) on port {port}, not 3 node(s)"
        f" on port {port} as asked now: start it as it was (--kafka-nodes 1), or move that"
        " folder aside for a new, empty cluster (its topics and records stay in it)"
    ), err
    assert json.loads((folder / "cluster.json").read_text()) == layout
    assert [
        *base.glob("kafka-*/node-*/data/meta.properties"),
        *base.glob("postgres-*/data/*"),
    ] == []


@pytest.mark.parametrize("kind", ["kafka", "postgres"])
def test_caravan_up_on_a_folder_an_upgrade_s_copy_went_inside_refuses_in_one_line(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
) -> None:
    """Upgrading into a checkout of its own, docs/running.md has the old one's folders copied
    into the new one's ``.cache/``; where the new checkout had one of its own (a run to try
    it), ``cp -a old/.cache/kafka-9092 new/.cache/kafka-9092`` put the copy inside it, and
    ``caravan up`` started on the new checkout's own data, the orders the old one had gone
    from view, nothing said. Refused in one line, nothing started, the copy left as it was."""
    base = tmp_path_factory.mktemp("n")  # short: a longer socket path moves PostgreSQL away
    port = free_port()
    local_infrastructure(monkeypatch, base, port=port)
    monkeypatch.setenv(checkout.LOCAL_PORTS_VAR, f"{port},{free_port()}")
    folder = base / f"{kind}-{port}"  # local_infrastructure gives PostgreSQL that port too
    inside = folder / folder.name
    inside.mkdir(parents=True)
    (inside / "copied").write_text("the old checkout's")
    code, _, err = caravan("up", "--dashboard-port", str(free_port()))
    assert code == 2 and one_line(err) == (
        f"{inside} is a copy inside the folder of the same name, which this checkout had"
        f" (cp -a into a {folder.name} that existed puts it there): started, this would run"
        f" on {folder.resolve()}'s own data, not the copy's. Move {folder.resolve()} aside,"
        f" then move {inside} into its place"
    ), err
    assert (inside / "copied").read_text() == "the old checkout's"
    assert [
        *base.glob("kafka-*/node-*/data/meta.properties"),
        *base.glob("postgres-*/data/*"),
    ] == []


POSTGRES_REFUSING = (
    '2026-12-03 23:04:55.753 GMT [6385] LOG:  unrecognized configuration parameter "nonsense"\n'
    '2026-12-03 23:04:55.753 GMT [6385] FATAL:  configuration file "postgresql.conf" contains'
    " errors\n"
)


# A drill's pg_wal on a full disk of its own: each start's crash recovery failed, among the
# services' connections refused before and after it. It said the last FATAL, "the database
# system is not yet accepting connections".
POSTGRES_WAL_FULL = """\
2026-12-06 08:00:13.123 UTC [1373] LOG:  database system was interrupted while in recovery at \
2026-12-06 08:00:09 UTC
2026-12-06 08:00:13.156 UTC [1374] FATAL:  the database system is starting up
2026-12-06 08:00:13.301 UTC [1379] FATAL:  the database system is not yet accepting connections
2026-12-06 08:00:13.301 UTC [1379] DETAIL:  Consistent recovery state has not been yet reached.
2026-12-06 08:00:17.939 UTC [1373] FATAL:  could not write to file "pg_wal/xlogtemp.1373": No \
space left on device
2026-12-06 08:00:17.953 UTC [1412] FATAL:  the database system is not yet accepting connections
2026-12-06 08:00:17.953 UTC [1412] DETAIL:  Consistent recovery state has not been yet reached.
2026-12-06 08:00:17.981 UTC [1369] LOG:  startup process (PID 1373) exited with exit code 1
2026-12-06 08:00:17.990 UTC [1413] FATAL:  the database system is shutting down
"""


@pytest.mark.parametrize(
    ("logged", "said", "full"),
    [
        (POSTGRES_REFUSING, POSTGRES_REFUSING.splitlines()[1], False),
        # The server's log says nothing of why (a crash recovery longer than pg_ctl waits):
        # what pg_ctl said itself.
        ("LOG:  database system was interrupted\n", "pg_ctl: server did not start in time", False),
        (POSTGRES_WAL_FULL, POSTGRES_WAL_FULL.splitlines()[4], False),
        # Its log says nothing of why, and pg_wal's disk (a mount of its own) is full (faked).
        ("", "no space left on the disk of {data}/pg_wal: 4096 bytes free", True),
    ],
    ids=["its-log-says", "pg_ctl-says", "not-the-connections-it-refused", "pg_wal-full"],
)
def test_caravan_up_whose_postgresql_does_not_start_says_why_in_one_line(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    logged: str,
    said: str,
    full: bool,
) -> None:
    base = tmp_path_factory.mktemp("i")  # short: a longer socket path moves PostgreSQL away
    tools = base / "bin"  # a pg_ctl whose server does not start, as PostgreSQL 15's
    tools.mkdir()
    pg_ctl_said = said if said.startswith("pg_ctl") else "pg_ctl: could not start server"
    script(
        tools / "pg_ctl",
        '[ "$3" = status ] && exit 3\n'
        f"cat >>\"$8\" <<'EOF'\n{logged}EOF\n"
        f"echo '{pg_ctl_said}'; exit 1",
    )
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    port = free_port()
    local_infrastructure(monkeypatch, base, port=port)
    data = base / f"postgres-{port}" / "data"  # a cluster made before, not running
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "postgresql.conf").write_text("nonsense = 1\n")
    (data / "pg_wal").mkdir()
    (base / f"postgres-{port}" / "postgres.log").write_text("FATAL:  an earlier start's\n")
    real = shutil.disk_usage

    def disk_usage(path: str | Path) -> Any:
        faked = full and Path(path) == data / "pg_wal"
        return real(path)._replace(free=4096) if faked else real(path)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    said = said.format(data=data)
    code, _, err = caravan("up")
    assert code == 1 and one_line(err) == (
        f"PostgreSQL on port {port} did not start ({said}); "
        f"see {base / f'postgres-{port}' / 'postgres.log'}"
    ), err


def script(path: Path, body: str) -> None:
    """An executable shell script at ``path``: a tool that fails as the real one does."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def formatted_kafka(monkeypatch: pytest.MonkeyPatch, base: Path, java: str) -> tuple[int, Path]:
    """:func:`local_infrastructure` on a free port, its one Kafka node formatted before and
    its ``java`` the shell script ``java``: the port and the node's folder."""
    path = base / "jdk" / "bin" / "java"
    path.parent.mkdir(parents=True)
    script(path, java)
    monkeypatch.setenv("JAVA_HOME", str(path.parent.parent))
    port = free_port()
    local_infrastructure(monkeypatch, base, port=port)
    node = base / f"kafka-{port}" / "node-0"
    (node / "data").mkdir(parents=True)
    (node / "data" / "meta.properties").touch()
    return port, node


def local_infrastructure(
    monkeypatch: pytest.MonkeyPatch, base: Path, jars: bool = True, port: int | None = None
) -> None:
    """``caravan up`` starts its own Kafka and PostgreSQL under ``base`` (on ``port``, if
    given), from a checkout there whose Kafka jars were fetched (unless not ``jars``)."""
    repo = base / "repo"
    (repo / "infra" / "kafka").mkdir(parents=True)
    pom = checkout.REPO_ROOT / "infra" / "kafka" / "pom.xml"
    (repo / "infra" / "kafka" / "pom.xml").write_text(pom.read_text())
    if jars:
        libs = repo / ".cache" / "kafka" / "libs"
        libs.mkdir(parents=True)
        (libs / f"kafka_2.13-{kafka._kafka_version(repo)}.jar").touch()
    monkeypatch.setattr(system, "LocalKafka", functools.partial(kafka.LocalKafka, repo_root=repo))
    monkeypatch.setattr(postgres, "LocalPostgres", _NoServiceUser)  # local_postgres makes it
    start = system.start_infrastructure
    ports = {"kafka_port": port, "postgres_port": port} if port else {}

    def start_infrastructure(**kwargs: object) -> system.Infrastructure:
        return start(base, **{**kwargs, **ports})  # type: ignore[arg-type]

    monkeypatch.setattr(system, "start_infrastructure", start_infrastructure)


class _NoServiceUser(postgres.LocalPostgres):
    """The local cluster, its files written as this user (no chown to the postgres user)."""

    def __init__(self, base_dir: Path, port: int = 15432) -> None:
        super().__init__(base_dir, port)
        self._as_service_user = False


class _Exited:
    """A service process that has exited with 1."""

    pid = 0  # no such process: recorded without a command line
    args: tuple[str, ...] = ()
    returncode: int | None = 1

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode

    terminate = kill = send_signal = lambda self, *args: None


class _Silent(_Exited):
    """A service process that runs and never answers (on ports nothing listens on)."""

    returncode = None


def faked_up(monkeypatch: pytest.MonkeyPatch, process: type[_Exited]) -> list[str]:
    """``caravan up`` with brokers that are not started, and services that are ``process``
    (each stopped with a short wait). What it stopped, in order: services, then brokers."""
    stopped: list[str] = []

    def start_infrastructure(**kwargs: object) -> system.Infrastructure:
        infra = system.Infrastructure("127.0.0.1:1", "postgresql://a@127.0.0.1:1/c", "-", "-")
        infra.stoppers.append(lambda: stopped.append("brokers"))
        return infra

    async def prepare(*args: object, **kwargs: object) -> system.Prepared:
        return system.Prepared(admin.Topics(1, {}, {}), {})

    def start(
        procs: system.ServiceProcesses, names: tuple[str, ...] = SERVICES, instance: int = 1
    ) -> None:
        procs.procs.update({name: process() for name in names})  # type: ignore[misc]

    real_stop = system.ServiceProcesses.stop

    def stop(procs: system.ServiceProcesses, names: list[str] | None = None) -> None:
        stopped.extend(procs.procs if names is None else names)
        real_stop(procs, names, timeout=0.1)

    monkeypatch.setattr(system, "start_infrastructure", start_infrastructure)
    monkeypatch.setattr(system, "prepare", prepare)
    monkeypatch.setattr(tokens_cli, "dev_token", lambda url: ("cvn_" + "x" * 43, False))
    monkeypatch.setattr(system.ServiceProcesses, "start", start)
    monkeypatch.setattr(system.ServiceProcesses, "stop", stop)
    monkeypatch.setenv("CARAVAN_HTTP_PORT", str(free_port()))  # not a real service's /healthz
    return stopped


def test_a_service_that_exits_while_caravan_up_starts_ends_it_in_one_line_after_stopping_all(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once they all answered, one that exits is started again (tests/e2e/test_up_command.py)."""
    stopped = faked_up(monkeypatch, _Exited)

    code, out, err = caravan("up")
    said = "service orders exited with 1 (its output says nothing of why); see "  # no log
    assert code == 1 and one_line(err).startswith(said), err
    assert stopped == [*SERVICES, "brokers"] and out.endswith("stopped\n"), out


def test_services_that_never_answer_end_caravan_up_in_one_line_naming_each_and_its_log(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``caravan up`` waited a fixed 120 s for its services' ``/healthz``, then said "orders,
    inventory, ... did not answer /healthz within 120s; see <logs>", the logs apart from the
    services and nothing of what to do. CARAVAN_UP_SERVICES_READY_SECONDS sets the wait
    (refused before anything starts when not a number); each service is named with where it
    was asked and its log, and how to wait longer."""
    stopped = faked_up(monkeypatch, _Silent)
    monkeypatch.setenv("CARAVAN_UP_SERVICES_READY_SECONDS", "1.5")

    code, out, err = caravan("up")
    said = one_line(err)
    ports = system.http_ports(system.http_port_env(int(os.environ["CARAVAN_HTTP_PORT"])))
    logs = checkout.CACHE / "logs"  # the fixture moved CACHE
    each = "; ".join(
        f"{name} at http://127.0.0.1:{ports[name]}/healthz (its log: {logs / name}.log)"
        for name in SERVICES
    )
    assert code == 1 and said == (
        f"{', '.join(SERVICES)} did not answer /healthz within 1.5s: {each}. A loaded machine"
        " starts them slower: run the command again, or give them longer with"
        " CARAVAN_UP_SERVICES_READY_SECONDS=3"
    ), said
    assert stopped == [*SERVICES, "brokers"] and out.endswith("stopped\n"), out
    stopped.clear()
    monkeypatch.setenv("CARAVAN_UP_SERVICES_READY_SECONDS", "0")
    code, _, err = caravan("up")
    assert code == 1 and one_line(err) == (
        "CARAVAN_UP_SERVICES_READY_SECONDS must be a number of seconds above 0, not '0'"
    ), err
    assert stopped == [], "refused before anything started"


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_caravan_up_stopped_right_after_starting_kafka_and_postgresql_stops_them(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """A Ctrl-C, or a failure writing .cache/up.env.json, once the brokers have started and
    before the services: the brokers are stopped (they were left running)."""
    stopped = faked_up(monkeypatch, _Exited)

    def write_up_env(*args: object) -> None:
        raise failure

    monkeypatch.setattr(system, "write_up_env", write_up_env)
    if isinstance(failure, KeyboardInterrupt):
        code, out, _ = caravan("up")
        assert code == 0 and out.endswith("stopping\nstopped\n"), out
    else:
        with pytest.raises(OSError, match="No space left"):  # not the operator's: a traceback
            caravan("up")
    assert stopped == ["brokers"]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("holder_of", ["kafka", "postgres", "http"])
def test_caravan_up_on_a_port_another_program_holds_names_the_port(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    held_port: int,
    holder_of: str,
) -> None:
    """Every port is asked before anything starts: a fresh checkout's new Kafka node and
    PostgreSQL cluster are not made (23.6 s) and then refused for a port the services or
    the operations page would have had, nor is the broker started when PostgreSQL's port
    is held."""
    base = tmp_path_factory.mktemp("i")  # short: a longer socket path moves PostgreSQL away
    local_infrastructure(monkeypatch, base, port=None if holder_of == "postgres" else held_port)
    if holder_of == "postgres":  # Kafka on a port of its own, not started
        monkeypatch.setenv(checkout.LOCAL_PORTS_VAR, f"{free_port()},{held_port}")
    if holder_of == "http":
        stopped = faked_up(monkeypatch, _Exited)  # as a service that cannot bind its port
        monkeypatch.setenv("CARAVAN_HTTP_PORT", str(held_port - 1))
        monkeypatch.setattr(system, "port_open", ports.port_open)

    code, _, err = caravan("up", "--dashboard-port", str(free_port()))
    said = one_line(err)
    assert code == 1, said
    assert said.startswith(
        {
            "kafka": f"port {held_port} is in use by a program other than Kafka node 0 of ",
            "postgres": f"port {held_port} is in use by a program other than the PostgreSQL of ",
            "http": "another program holds port ",
        }[holder_of]
    ), said
    assert said.endswith(
        {
            "kafka": ": stop it, or name a running Kafka in KAFKA_BOOTSTRAP_SERVERS",
            "postgres": ": stop it, or name a running PostgreSQL in DATABASE_URL",
            "http": ": stop it, or start caravan up on other ports "
            "(CARAVAN_HTTP_PORT and the four after it, --dashboard-port)",
        }[holder_of]
    ), said
    if holder_of == "http":
        assert f"{held_port} (inventory)" in said and stopped == [], said
    made = [*base.glob("kafka-*/node-*/data/meta.properties"), *base.glob("postgres-*/data/*")]
    assert made == [], made


def test_caravan_dashboard_port_moves_the_operations_page_of_caravan_up(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, held_port: int
) -> None:
    """``make up`` runs ``caravan up --demo``: only an environment variable moves its
    operations page off a port another program holds (8090)."""
    stopped = faked_up(monkeypatch, _Exited)
    monkeypatch.setattr(system, "port_open", ports.port_open)
    monkeypatch.setenv("CARAVAN_DASHBOARD_PORT", str(held_port))

    code, _, err = caravan("up")
    said = one_line(err)
    # Said as "port P (operations page)", or after another port it is (a free port picked by
    # chance as the platform's, CARAVAN_HTTP_PORT + 4: "port P (platform), P (operations page)").
    assert code == 1 and f"{held_port} (operations page): stop it" in said, said
    assert stopped == [], said


@pytest.mark.parametrize(
    ("env", "shared"),
    [
        ({"CARAVAN_DASHBOARD_PORT": "+1"}, "+1 (inventory and operations page)"),
        ({checkout.LOCAL_PORTS_VAR: "+4,15"}, "+4 (platform and Kafka node 0)"),
        ({checkout.LOCAL_PORTS_VAR: "14,+2"}, "+2 (payments and PostgreSQL)"),
    ],
)
def test_caravan_up_refuses_one_port_given_to_two_of_what_it_starts(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], shared: str
) -> None:
    """``CARAVAN_HTTP_PORT=19040 CARAVAN_DASHBOARD_PORT=19041``: the page never bound inventory's
    port, kept exiting, and ``caravan up`` said it ready on that port, where inventory's API
    answered. Refused before anything starts, naming the port and both that would take it."""
    stopped = faked_up(monkeypatch, _Exited)
    base = free_port()
    monkeypatch.setenv("CARAVAN_HTTP_PORT", str(base))
    monkeypatch.setenv("CARAVAN_DASHBOARD_PORT", str(free_port()))
    for name, value in env.items():  # "+N": the services' first port and N; "N": one of its own
        ports = [
            str(base + int(v)) if v.startswith("+") else str(free_port()) for v in value.split(",")
        ]
        monkeypatch.setenv(name, ",".join(ports))

    code, _, err = caravan("up")
    said = one_line(err)
    port = base + int(shared.split(" ")[0])
    assert code == 2, said
    assert said.startswith(
        f"caravan up would give one port to two of what it starts: {port} ({shared.split('(')[1]}: "
    ), said
    assert stopped == [], said


@pytest.mark.parametrize("named", [{}, {"DATABASE_URL": "postgresql://p:Xy7-real@db:1/c"}])
def test_caravan_up_in_production_refuses_brokers_or_a_database_not_named_before_starting(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, named: dict[str, str]
) -> None:
    """CARAVAN_ENVIRONMENT=production and no KAFKA_BOOTSTRAP_SERVERS: ``caravan up`` started
    its development broker (and database), which the services then refused or ran on."""
    local_infrastructure(monkeypatch, tmp_path)
    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    for name, value in named.items():
        monkeypatch.setenv(name, value)
    code, _, err = caravan("up")
    said = one_line(err)
    assert code == 2 and said.startswith("settings refused: "), said
    assert "KAFKA_BOOTSTRAP_SERVERS is required in production" in said, said
    assert ("DATABASE_URL is not set" in said) == (not named), said
    assert said.endswith("(caravan up starts its own broker and database only outside production)")
    assert list(tmp_path.glob("kafka-*")) == list(tmp_path.glob("postgres-*")) == [], said


def test_a_second_caravan_up_from_one_checkout_says_one_runs_per_checkout(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said the checkout's .cache/up was in use by a run "on the same ports" (the bench's
    words) to a second run given other ports: no ports let two run from one checkout."""
    stopped = faked_up(monkeypatch, _Exited)
    monkeypatch.setenv(checkout.LOCAL_PORTS_VAR, f"{free_port()},{free_port()}")
    monkeypatch.setattr(sys, "argv", ["caravan", "up", "--dashboard-port", str(free_port())])
    with system.run_alone(checkout.CACHE / "up"), pytest.raises(SystemExit) as refused:
        cli.main()  # not caravan(): it keeps the exit code, not the message Python prints
    said = str(refused.value)
    assert said.startswith(
        f"another `caravan up` runs from this checkout (process {os.getpid()}): one runs per "
        "checkout, whatever its ports: stop it, or start this one from another clone"
    ), said
    assert stopped == []


def test_a_redrive_that_chooses_nothing_sends_nothing_without_all(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare ``caravan dlq redrive`` sent every dead letter back: an operator who meant to
    look first, or forgot the id, redrove them all. It now says how to choose, and reads
    nothing; ``--all`` (and a dry run) still take every one."""
    read: list[str] = []

    async def letters(bootstrap: str) -> list[ops_dlq.DeadLetter]:
        read.append(bootstrap)
        return []

    monkeypatch.setattr(ops_dlq, "read", letters)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("COLUMNS", "300")
    code, _, err = caravan("dlq", "redrive")
    assert code == 2 and "or say --all for every one" in err and read == [], err
    for chosen in (["--all"], ["--dry-run"], ["--topic", "orders.requests.v1"]):
        code, out, err = caravan("dlq", "redrive", *chosen)
        assert code == 0 and out.startswith("no dead letter"), (chosen, out, err)
    assert len(read) == 3


def test_a_value_file_that_cannot_be_read_is_a_usage_error_before_anything_is_read(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    read: list[str] = []

    async def letters(bootstrap: str) -> list[ops_dlq.DeadLetter]:
        read.append(bootstrap)
        return []

    monkeypatch.setattr(ops_dlq, "read", letters)
    monkeypatch.setenv("COLUMNS", "300")  # the usage error's box: the path on one line
    for value_file in (tmp_path / "missing.json", tmp_path):  # no file; a folder
        code, _, err = caravan("dlq", "redrive", "--value-file", str(value_file))
        assert code == 2 and str(value_file) in err and "Traceback" not in err, err
    assert read == []


def test_a_seed_file_refused_whole_lists_its_reasons_one_a_line_without_the_usage(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file refused whole was one paragraph, its reasons joined by "; " and wrapped in a
    "Usage: caravan seed ..." error box: each reason is a line now, exit 2 as before."""
    taken = [
        "lot L1 exists with other terms: best_before 2027-08-31 stored, 2027-09-30 given",
        "lot L2 exists with other terms: sku P-1 stored, P-2 given",
    ]

    async def refused(*args: object) -> Loaded:
        raise LotTaken(taken)

    monkeypatch.setattr(seeding, "load", refused)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:x@127.0.0.1:1/caravan")
    seed = tmp_path / "seed.json"
    seed.write_text("{}")
    code, _, err = caravan("seed", str(seed))
    assert (code, err.splitlines()) == (2, ["nothing seeded:", *(f"  {t}" for t in taken)])
    seed.write_text('{"sellers": [{"id": "S-1"}], "buyer": []}')
    code, _, err = caravan("seed", str(seed))
    assert (code, err.splitlines()) == (
        2,
        [
            f"{seed} is not a seed file as CONTRACT.md describes (4 error(s)):",
            "  sellers.0.name: must be given",
            "  sellers.0.county: must be given",
            "  sellers.0.phone: must be given",
            "  file: no section 'buyer' in a seed file: its sections are sellers, products, lots,"
            " buyers (did you mean buyers?)",
        ],
    ), err


def test_a_seed_of_many_lots_that_will_not_sell_names_the_first_ten_in_a_line(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every run of a harvest-peak file printed a "will not sell: expired" line per lot, 426
    of them, where the lots loaded before were one line naming ten."""
    lots = [
        {"lot_id": f"L{i}", "sku": "P", "quantity": 0 if i >= 30 else 5}
        | {"available_from": "2020-01-01", "best_before": "2020-01-31" if i < 30 else "2999-01-01"}
        for i in range(33)
    ]

    async def loaded(database_url: str, seed: object) -> Loaded:
        return Loaded(added={"lots": {f"L{i}" for i in range(33)}})

    monkeypatch.setattr(seeding, "load", loaded)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:x@127.0.0.1:1/caravan")
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"lots": lots}))
    code, out, err = caravan("seed", str(seed))
    warned = [line for line in out.splitlines() if line.startswith("warning")]
    assert (code, warned) == (
        0,
        [
            f"warning: {seeding.EXPIRED}: {', '.join(f'L{i}' for i in range(10))} and 20 more",
            f"warning: {seeding.EMPTY}: L30, L31, L32",
        ],
    ), out + err
    assert "  lots: 33 new, 0 unchanged, 33 will not sell" in out.splitlines(), out


@pytest.mark.parametrize(
    ("command", "relation"),
    [("seed", "inventory.sellers"), ("tokens issue --scope ops", "auth.tokens")],
)
def test_a_command_on_a_database_never_migrated_says_to_prepare_it_first(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, relation: str
) -> None:
    async def never_migrated(*args: object) -> list[str]:
        missing = asyncpg.exceptions.UndefinedTableError(f'relation "{relation}" does not exist')
        raise sa_exc.ProgrammingError(f"SELECT ... FROM {relation}", None, missing)

    monkeypatch.setattr(seeding, "load", never_migrated)
    monkeypatch.setattr(tokens_cli, "issue_token_with_client", never_migrated)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:x@127.0.0.1:1/caravan")
    seed = tmp_path / "seed.json"
    seed.write_text("{}")
    code, _, err = caravan(*command.split(), *([str(seed)] if command == "seed" else []))
    said = one_line(err)
    assert code == 2 and "run `caravan prepare` (or `caravan up`) first" in said, said
    assert f'relation "{relation}" does not exist' in said


@pytest.mark.parametrize(
    ("error", "exit_code", "said"),
    [
        (
            asyncpg.InterfaceError("the number of query arguments cannot exceed 32767"),
            1,
            "PostgreSQL's client refused the command's work: the number of query arguments "
            "cannot exceed 32767",
        ),
        (asyncpg.InterfaceError("connection is closed"), 2, "cannot reach PostgreSQL: "),
        (
            asyncpg.exceptions._base.DataError(
                "invalid input for query argument $1: 3000000000 (value out of int32 range)"
            ),
            1,
            "PostgreSQL cannot take a value the command gave: invalid input for query argument"
            " $1: 3000000000 (value out of int32 range)",
        ),
        (
            asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8"'),
            1,
            "PostgreSQL cannot take a value the command gave: invalid byte sequence",
        ),
    ],
    ids=lambda e: type(e).__name__ if isinstance(e, Exception) else None,
)
def test_an_interface_error_is_an_unreachable_postgresql_only_for_a_lost_connection(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    error: Exception,
    exit_code: int,
    said: str,
) -> None:
    """asyncpg raises ``InterfaceError`` for work it will not send as well as for a
    connection that is gone: only the second is "cannot reach PostgreSQL ... Is the system
    up?" (the first was said so too, sending the operator to a system that was up). A value
    PostgreSQL cannot take, which asyncpg refuses as an ``InterfaceError`` too, says so (it
    said "PostgreSQL's client refused the command's work"; the server's own refusal was a
    traceback)."""

    async def refused(*args: object) -> list[str]:
        if isinstance(error, asyncpg.PostgresError):
            raise as_the_dialect_raises(error)
        lost = str(error) == "connection is closed"  # as SQLAlchemy's dialect tells them apart
        raise sa_exc.InterfaceError("SELECT ...", None, error, connection_invalidated=lost)

    monkeypatch.setattr(seeding, "load", refused)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:x@127.0.0.1:1/caravan")
    seed = tmp_path / "seed.json"
    seed.write_text("{}")
    code, _, err = caravan("seed", str(seed))
    line = " ".join(one_line(err).split())
    assert (code, said in line) == (exit_code, True), line
    assert ("Is the system up" in line) == (exit_code == 2), line


CHECK_THE_LOGIN = (
    "; check the role, its password and the database in DATABASE_URL (or in the file"
    " DATABASE_URL_FILE names)"
)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "caravan"'),
            "PostgreSQL refused the login: {e}" + CHECK_THE_LOGIN,
        ),
        (
            asyncpg.InvalidCatalogNameError('database "caravan" does not exist'),
            "PostgreSQL refused the login: {e}" + CHECK_THE_LOGIN,
        ),
        (
            asyncpg.TooManyConnectionsError("sorry, too many clients already"),
            "PostgreSQL refused the connection, too many connections: {e}; its max_connections"
            " are all in use: try again once some are closed",
        ),
        (
            asyncpg.CannotConnectNowError("the database system is starting up"),
            "cannot reach PostgreSQL: {e}. Is the system up (`caravan up`)?",
        ),
        (
            asyncpg.AdminShutdownError("terminating connection due to administrator command"),
            "cannot reach PostgreSQL: {e}. Is the system up (`caravan up`)?",
        ),
    ],
    ids=lambda e: type(e).__name__ if isinstance(e, Exception) else "",
)
def test_a_login_or_connection_postgresql_refuses_is_one_line_that_fits_it_and_exit_2(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, error: asyncpg.PostgresError, said: str
) -> None:
    """A password refused, a database that is not there: a traceback ending in SQLAlchemy's
    DBAPIError, then "cannot reach PostgreSQL ... Is the system up (`caravan up`)?", which
    does not fit a wrong password: it says the login was refused and where it is set. Too
    many connections says so; a server starting up or shutting down, which was a traceback,
    is not reached."""

    async def refused(*args: object) -> str:
        raise as_the_dialect_raises(error)

    monkeypatch.setattr(tokens_cli, "issue_token_with_client", refused)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:x@127.0.0.1:1/caravan")
    code, _, err = caravan("tokens", "issue", "--scope", "ops")
    line = " ".join(one_line(err).split())
    assert (code, line) == (2, said.format(e=error)), line


def test_dead_letters_on_a_kafka_never_prepared_say_to_prepare_it_first(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def read(bootstrap: str) -> list[ops_dlq.DeadLetter]:
        raise kafka_admin.NoSuchTopic("no topic 'orders.requests.v1.dlq'")  # as one not created

    monkeypatch.setattr(ops_dlq, "read", read)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    for command in (["list"], ["show", "orders.requests.v1.dlq:0:0"], ["redrive", "--all"]):
        code, _, err = caravan("dlq", *command)
        said = one_line(err)
        assert code == 2 and said == (
            "no topic 'orders.requests.v1.dlq' on Kafka at 127.0.0.1:1: "
            "run `caravan prepare` (or `caravan up`) first"
        ), said


def test_dead_letters_chosen_by_topic_take_its_dlq_name_and_refuse_one_neither(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dlq list --topic orders.requests.v1.dlq``, the name ``dlq list``'s ids and the
    operations page give, said "0 dead letter(s)" with 300 waiting, and a redrive of it "no
    dead letter matches": it wanted the original topic. Either name chooses them now; a name
    that is neither is refused, naming those that are, where it chose none in silence."""
    at = datetime(2026, 12, 4, 12, 0, 5, tzinfo=UTC)
    letters = [
        ops_dlq.DeadLetter(f"{topic}.dlq", 0, n, at, b"k", b"{}", {"dlq.error": "not_json"})
        for n, topic in enumerate([Topic.ORDER_REQUESTS, Topic.ORDER_REQUESTS, Topic.ORDER_EVENTS])
    ]
    sent: list[list[str]] = []

    async def read(bootstrap: str) -> list[ops_dlq.DeadLetter]:
        return letters

    async def none_redriven(*args: object) -> tuple[dict[str, ops_dlq.Closed], None]:
        return {}, None

    async def redrive(*args: object, **kwargs: Any) -> ops_dlq.Redrive:
        chosen = cast(list[ops_dlq.DeadLetter], args[2])
        sent.append([d.ref for d in chosen])
        return ops_dlq.Redrive(sent=[d.ref for d in chosen], before={})

    monkeypatch.setattr(ops_dlq, "read", read)
    monkeypatch.setattr(ops_dlq, "redrive", redrive)
    monkeypatch.setattr(ops_dlq, "closed", none_redriven)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    for name in ("orders.requests.v1", "orders.requests.v1.dlq"):
        code, out, err = caravan("dlq", "list", "--topic", name)
        assert (code, out.splitlines()[0].strip()) == (0, "2 dead letter(s), 2 waiting"), out + err
        code, out, err = caravan("dlq", "redrive", "--topic", name, "--dry-run")
        assert code == 0, out + err
        assert sent.pop() == ["orders.requests.v1.dlq:0:0", "orders.requests.v1.dlq:0:1"]
    for command in ("list", "redrive"):
        code, out, err = caravan("dlq", command, "--topic", "orders.requests")
        said = " ".join(err.replace("│", " ").split())
        assert code == 2 and not sent, out + err
        assert (
            "no topic 'orders.requests' has dead letters: name one of orders.requests.v1,"
            " orders.events.v1, inventory.events.v1, payments.events.v1,"
            " notifications.events.v1, platform.events.v1 (or its .dlq)"
        ) in said, said


@pytest.mark.parametrize("code", ["not_json", "unknown_type"])
def test_a_letter_redriven_unmended_is_warned_of_naming_its_discard(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """A letter dead-lettered for its value goes back as it was: the warning said it would
    be dead-lettered again unless its consumer took it, and nothing of `caravan dlq discard`,
    which closes one nobody can mend: it names it now, with the letter's id."""
    at = datetime(2026, 12, 4, 12, 0, 5, tzinfo=UTC)
    letter = ops_dlq.DeadLetter("orders.events.v1.dlq", 0, 7, at, b"k", b"{", {"dlq.error": code})

    async def read(bootstrap: str) -> list[ops_dlq.DeadLetter]:
        return [letter]

    async def redrive(*args: object, **kwargs: Any) -> ops_dlq.Redrive:
        return ops_dlq.Redrive(sent=[letter.ref], before={}, unmended={letter.ref: code})

    monkeypatch.setattr(ops_dlq, "read", read)
    monkeypatch.setattr(ops_dlq, "redrive", redrive)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    exit_code, out, err = caravan("dlq", "redrive", letter.ref)
    said = " ".join(out.split())
    assert exit_code == 0, out + err
    assert (
        f"warning: {letter.ref} was dead-lettered for its value ({code}) and goes back unmended:"
        " dead-lettered again unless its consumer now takes it (--value-file mends it); junk"
        f" nobody can mend is closed with `caravan dlq discard {letter.ref} --reason TEXT`"
    ) in said, said


def test_dead_letters_chosen_by_an_error_none_of_the_codes_is_a_usage_error(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dlq list --error bogus`` said "0 dead letter(s)" and exited 0, as if there were none
    of a real error (a typo of ``not_json``, say). The errors are a known set (PoisonCode,
    every ``dlq.error`` Caravan writes): any other is refused before Kafka is read, exit 2,
    naming them, as a status none of its choices is; a known one chooses its letters."""
    at = datetime(2026, 12, 4, 12, 0, 5, tzinfo=UTC)
    letters = [
        ops_dlq.DeadLetter("orders.requests.v1.dlq", 0, n, at, b"k", b"{}", {"dlq.error": error})
        for n, error in enumerate(["not_json", "invalid_data", "not_json"])
    ]
    reads = []

    async def read(bootstrap: str) -> list[ops_dlq.DeadLetter]:
        reads.append(bootstrap)
        return letters

    async def none_redriven(*args: object) -> tuple[dict[str, ops_dlq.Closed], None]:
        return {}, None

    monkeypatch.setattr(ops_dlq, "read", read)
    monkeypatch.setattr(ops_dlq, "closed", none_redriven)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    for command in (["list"], ["redrive", "--dry-run"]):
        code, out, err = caravan("dlq", *command, "--error", "not-json")
        said = " ".join(err.replace("│", " ").split())  # what the error box wrapped
        assert (code, out, reads) == (2, "", []), out + err
        assert (
            "Invalid value for '--error': 'not-json' is not one of 'empty', 'not_json',"
            " 'too_deep', 'not_cloudevent', 'unknown_type', 'invalid_data', 'parse_error',"
            " 'handler_error', 'order_ref_reused', 'unknown_group'"
        ) in said, said
    code, out, err = caravan("dlq", "list", "--error", "not_json")
    assert (code, out.splitlines()[0].strip()) == (0, "2 dead letter(s), 2 waiting"), out + err


@pytest.mark.parametrize(
    ("command", "env", "said"),
    [
        (
            "tokens list",
            {
                "CARAVAN_ENVIRONMENT": "production",
                "DATABASE_URL": "postgresql://caravan:caravan@db/c",
            },
            "refusing to start in production with development default secrets in: DATABASE_URL",
        ),
        (
            "stuck",
            {"CARAVAN_HTTP_PORT": "80a"},
            "CARAVAN_HTTP_PORT: must be a whole number",
        ),
        (
            "dashboard",
            {"CARAVAN_PLATFORM_APPS": '{"m": {"secret": "not-long", "api_url": "http://m"}}'},
            "CARAVAN_PLATFORM_APPS (m.secret): shorter than 16 characters, the least a secret has",
        ),
        (
            "tokens list",
            {"DATABASE_URL_FILE": "/nonexistent/db-url"},
            "DATABASE_URL_FILE names /nonexistent/db-url, which cannot be read: No such file "
            "or directory",
        ),
        (
            "prepare",
            {
                "DATABASE_URL": "postgresql://caravan:x@127.0.0.1:1/caravan",
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                "CARAVAN_DATABASE_URL_ORDERS_FILE": "/nonexistent/orders-url",
            },
            "CARAVAN_DATABASE_URL_ORDERS_FILE names /nonexistent/orders-url, which cannot be "
            "read: No such file or directory",
        ),
        (
            "stuck",
            {"CARAVAN_PAYMENTS_MONTHLY_INTEREST_BP": "10001"},
            "CARAVAN_PAYMENTS_MONTHLY_INTEREST_BP: must be 10000 or less",
        ),
        (
            "tokens list",
            {"CARAVAN_ACTOR": "a" * 129},
            "CARAVAN_ACTOR: must be at most 128 characters",
        ),
        (
            "stuck",
            {"CARAVAN_PLATFORM_APPS": '{"m": '},
            "CARAVAN_PLATFORM_APPS: not JSON: Expecting value: line 1 column 7 (char 6)",
        ),
        (
            "stuck",
            {"CARAVAN_NOTIFICATIONS_QUIET_START": "25:00"},
            "CARAVAN_NOTIFICATIONS_QUIET_START: not a time of day (HH:MM, 00:00 to 23:59)",
        ),
        (
            "stuck",
            {"CARAVAN_MARKET_TIMEZONE": "Mars/Olympus"},
            "CARAVAN_MARKET_TIMEZONE: not an IANA time zone (such as Asia/Shanghai)",
        ),
        (
            "stuck",
            {"CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET": "not-long"},
            "CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET: shorter than 16 characters, the least a "
            "secret has",
        ),
    ],
)
def test_settings_the_environment_gives_that_are_refused_are_one_line_naming_the_variable(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, command: str, env: dict[str, str], said: str
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = caravan(*command.split())
    assert (code, one_line(err)) == (2, f"settings refused: {said} (from the environment or .env)")
    assert not any(value in err for value in ("not-long", "25:00", "Mars"))


def test_prepare_refusing_development_passwords_in_production_is_one_line(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:Xy7-real-secret@127.0.0.1:1/caravan")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, _, err = caravan("prepare")  # refused before connecting to anything
    said = one_line(err)
    assert code == 2 and said.startswith("refusing development database passwords"), said


@pytest.mark.parametrize(
    "command",
    [
        "prepare",
        "replay --topic orders.events.v1 --group caravan-inventory --earliest --dry-run",
        "dlq list",
        "dlq redrive --all",
        "demo --orders 1",
        "dashboard",
    ],
)
def test_a_command_reaching_kafka_in_production_refuses_no_brokers_named_as_a_service_does(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A service refuses an unset KAFKA_BOOTSTRAP_SERVERS in production; the commands went to
    127.0.0.1:9092 (``caravan up``'s development broker), whatever listened there or nothing,
    on a production host. Refused before anything is reached."""
    import uvicorn

    from caravan import demo
    from caravan.ops import replay

    async def reached(bootstrap: str, *args: object, **kwargs: object) -> None:
        raise OperatorError(f"reached Kafka at {bootstrap}")

    def served(*args: object, **kwargs: object) -> None:
        raise OperatorError("served the operations page")

    for module, name in ((system, "prepare"), (replay, "replay"), (ops_dlq, "read")):
        monkeypatch.setattr(module, name, reached)
    monkeypatch.setattr(demo, "run_demo", reached)
    monkeypatch.setattr(seeding, "load", reached)
    monkeypatch.setattr(uvicorn, "run", served)
    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:Xy7-real-secret@127.0.0.1:1/caravan")
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    code, _, err = caravan(*command.split())
    assert (code, one_line(err)) == (
        2,
        "settings refused: KAFKA_BOOTSTRAP_SERVERS is required in production: set it to your"
        " brokers (unset, 127.0.0.1:9092 is caravan up's development broker)",
    )


def test_a_service_api_refusing_a_call_is_said_on_stderr(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin commands' HTTP calls (caravan inventory, payments, stuck) said a problem
    answer, an unreachable API and a header that cannot be sent on stdout, the way written
    before OperatorError; a script reading their output took the failure for it."""
    problem = {
        "title": "Unprocessable Entity",
        "detail": "invalid request",
        "errors": [{"field": "credit_limit_fen", "message": "must be at least 0"}],
    }
    answers = {"/credit-lines/b-1": httpx.Response(422, json=problem)}

    def request(_client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
        path = httpx.URL(url).path
        if path not in answers:
            raise httpx.ConnectError("connection refused")
        return answers[path]

    monkeypatch.setattr(httpx.Client, "request", request)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    url = ("--url", "http://127.0.0.1:1")
    code, out, err = caravan("payments", "credit-set", "b-1", "5", *url)
    assert (code, out) == (1, ""), err
    said = ["Unprocessable Entity: invalid request", "  LIMIT_FEN: must be at least 0"]
    assert err.splitlines() == said
    code, out, err = caravan("payments", "repay", "L-1", "--amount", "500", "--key", "k-1", *url)
    assert (code, out) == (2, ""), err
    assert err.splitlines() == [
        "payments API unreachable: connection refused",
        "it may have been applied: retry with --key k-1 (applied once)",
    ]
    code, out, err = caravan("payments", "repay", "L-1", "--amount", "500", "--key", "clé", *url)
    refused = "not sent: Idempotency-Key must be ASCII, not 'clé'"
    assert (code, out, one_line(err)) == (2, "", refused)


SCHEMA = "the request does not match its schema"


@pytest.mark.parametrize(
    ("args", "answer", "said"),
    [
        (  # the body as a whole: a lot's dates out of order, its fields as the options
            ("inventory", "add-lot", "L-1", "S-1", "5", "--from", "2026-12-07"),
            {
                "field": "body",
                "message": "lot L-1: best_before 2000-01-01 is before available_from 2026-12-07",
            },
            "  lot L-1: --best-before 2000-01-01 is before --from 2026-12-07",
        ),
        (
            ("inventory", "adjust", "L-1", "--delta", "-1", "--reason", ""),
            {"field": "reason", "message": "must not be empty"},
            "  --reason: must not be empty",
        ),
        (  # an argument, by the name its usage line shows
            ("payments", "credit-adjust", "b-1", "-1"),
            {"field": "delta_fen", "message": "must be -10000000000000000 or more"},
            "  DELTA_FEN: must be -10000000000000000 or more",
        ),
        (  # a body field named otherwise than the option
            ("payments", "repay", "L-1", "--amount", "5"),
            {"field": "amount_fen", "message": "must be 1 or more"},
            "  --amount: must be 1 or more",
        ),
        (
            ("orders", "cancel", "o-1", "--reason", ""),
            {"field": "reason", "message": "must not be empty"},
            "  --reason: must not be empty",
        ),
        (
            ("platform", "resolve", "shop", "P-1"),
            {"field": "app", "message": "no platform app shop"},
            "  APP: no platform app shop",
        ),
    ],
)
def test_each_command_says_an_apis_refusal_in_what_its_user_typed(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    answer: dict[str, str],
    said: str,
) -> None:
    """The commands' 422 lines named the API's fields (``body: ... available_from``,
    ``amount_fen``, ``app``), which no command has: each is said as the option or argument
    its user typed (``--from``, ``--amount``, ``APP``), whatever the command family."""
    detail = f"{SCHEMA}; `delta` < 0" if "adjust" in args else SCHEMA

    def request(_client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        problem = {"title": "Invalid request", "detail": detail, "errors": [answer]}
        return httpx.Response(422, json=problem)

    monkeypatch.setattr(httpx.Client, "request", request)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    if "add-lot" in args:
        args = (*args, "--best-before", "2027-01-01")  # dates the command itself accepts
    url = () if args[0] == "orders" else ("--url", "http://127.0.0.1:1")  # orders: settings'
    code, out, err = caravan(*args, *url)
    first = f"Invalid request: {detail.replace('`delta`', '--delta')}"
    assert (code, out, err.splitlines()) == (1, "", [first, said])


def test_orders_list_says_the_apis_refusal_in_its_own_options(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token without ops was told "query.buyer_id: buyer_id is needed", the API's names,
    where the command's option is --buyer (the API's 403 now, naming buyer_id in its words);
    a parameter the words name (in backticks) is the option, whether it is named as the
    parameter (`source` is --source: it was left as "source") or not; a word that is also a
    parameter's name (a reason) is left as it is."""
    needs = (
        "the token 'shop' lacks the scope ops, which every buyer's orders need: a token without"
        " it names a buyer (`buyer_id`), or both `source` and `order_ref`"
    )
    only = "only cancelled orders have a reason, not confirmed ones"
    after = "`until` must be after `since`"

    def request(_client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        params = kwargs["params"]
        if "reason" not in params and "until" not in params:
            return httpx.Response(403, json={"title": "Forbidden", "detail": needs})
        said, field = (only, "query.reason") if "reason" in params else (after, "query.until")
        error = {"field": field, "message": said}
        return httpx.Response(
            422, json={"title": "Invalid request", "detail": said, "errors": [error]}
        )

    monkeypatch.setattr(httpx.Client, "request", request)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    code, out, err = caravan("orders", "list")
    said = (
        "the token 'shop' lacks the scope ops, which every buyer's orders need: a token without"
        " it names a buyer (--buyer), or both --source and --ref"
    )
    assert (code, out, err.splitlines()) == (1, "", [f"Forbidden: {said}"])
    code, out, err = caravan("orders", "list", "--status", "confirmed", "--reason", "expired")
    assert (code, err.splitlines()) == (1, [f"Invalid request: {only}", f"  --reason: {only}"])
    at = "2026-12-06T08:00:00+00:00"
    code, out, err = caravan("orders", "list", "--since", at, "--until", at)
    said = "--until must be after --since"
    assert (code, err.splitlines()) == (1, [f"Invalid request: {said}"])  # said once


class _CancelBodyOfBefore(BaseModel):
    """``POST /orders/{id}/cancel``'s body before operators' own cancellations (7426cba5): a
    reason alone, every other field refused."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=256)


def test_an_operators_cancellation_refused_by_an_older_orders_service_says_to_upgrade_it(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An orders service older than the command (its body a reason alone) answers ``caravan
    orders cancel``'s ``{"by": "operator"}`` 422, ``by`` a field it does not know: that was
    said as its schema refusing it ("by: Extra inputs are not permitted"), leaving the
    operator to guess why a field of the command's own was wrong. Now one line says the
    service is older and what to do, exit 1 as a refusal; another 422 of the cancellation (a
    reason over 256 characters) is said as before."""

    def request(_client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            _CancelBodyOfBefore.model_validate(kwargs["json"])
        except ValidationError as exc:  # as the orders service answers it
            refused = invalid(exc)
            return httpx.Response(422, content=bytes(refused.body), headers=dict(refused.headers))
        raise AssertionError(f"taken: {kwargs['json']}")

    monkeypatch.setattr(httpx.Client, "request", request)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    older = (
        "order O-1 not cancelled: the orders service is older than this command and does not"
        " know an operator's cancellation (it refused the field by): upgrade it, or cancel"
        " with --by buyer (cancelled_by_buyer, the buyer texted as at their request)"
    )
    for said in ([], ["--reason", "the lot spoiled"]):
        code, out, err = caravan("orders", "cancel", "O-1", *said)
        assert (code, out, one_line(err)) == (1, "", older), err
    code, out, err = caravan("orders", "cancel", "O-1", "--by", "buyer", "--reason", "x" * 257)
    assert (code, out, err.splitlines()) == (
        1,
        "",
        [
            "Invalid request: the request does not match its schema",
            "  --reason: must be at most 256 characters",
        ],
    ), err


@pytest.mark.parametrize(
    "answer",
    [
        # a service of now, whatever its pydantic's words: told by the error's type
        {"errors": [{"field": "by", "message": "no such field"}], "unknown_fields": ["by"]},
        # a service of before unknown_fields: its pydantic's words of then alone
        {"errors": [{"field": "by", "message": "Extra inputs are not permitted"}]},
    ],
)
def test_an_older_orders_service_is_told_by_the_error_s_type_not_pydantic_s_words(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]
) -> None:
    """The command told an orders service that does not know ``by`` by the message of its 422
    matching the words the command's own pydantic has for ``extra_forbidden``: a pydantic
    that words it otherwise (an upgrade, on either side) and an older service was said as a
    schema refusing the command's own field. The service names the fields it does not know in
    ``unknown_fields``, by the error's type; one of before it, in the words it had then."""

    def request(_client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        said = {"title": "Invalid request", "detail": "the request does not match its schema"}
        return httpx.Response(422, json={**said, **answer})

    monkeypatch.setattr(httpx.Client, "request", request)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    code, out, err = caravan("orders", "cancel", "O-1")
    assert (code, out) == (1, ""), err
    assert one_line(err).startswith(
        "order O-1 not cancelled: the orders service is older than this command"
    ), err


def test_an_http_api_gone_is_named_by_its_address_and_an_empty_error_by_its_class(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``caravan demo`` with a service's API gone mid-run said ``cannot reach a service's HTTP
    API: . Is the system up``: no address, and httpx's error of a connection the server
    closed says nothing (an empty ``str``). So did the admin commands' ``API unreachable:``."""
    request = httpx.Request("GET", "http://127.0.0.1:8081/healthz")
    with pytest.raises(SystemExit) as exited:
        cli._fail_outside(httpx.ReadError("", request=request))
    assert exited.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "cannot reach the HTTP API at http://127.0.0.1:8081: ReadError. Is the system up"
        " (`caravan up`)?"
    )

    def request_(_client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
        raise httpx.RemoteProtocolError("", request=httpx.Request(method, url))

    monkeypatch.setattr(httpx.Client, "request", request_)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    code, out, err = caravan("stuck")
    assert (code, out, one_line(err)) == (2, "", "orders API unreachable: RemoteProtocolError")


def test_a_throttled_command_says_how_long_to_wait_and_whose_count_it_is(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 10 failed token attempts from the address, a command said only "Too many failed
    attempts: too many failed attempts from this address", dropping the server's Retry-After:
    not how long to wait, nor that it was that one service's count."""
    problem = {
        "title": "Too many failed attempts",
        "detail": "too many failed attempts from this address",
    }
    answered = httpx.Response(429, json=problem, headers={"Retry-After": "52"})
    monkeypatch.setattr(httpx.Client, "request", lambda *args, **kwargs: answered)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    code, out, err = caravan(
        "payments", "list", "--status", "pending", "--url", "http://127.0.0.1:1"
    )
    assert (code, out) == (1, ""), err
    assert err.splitlines() == [
        "Too many failed attempts: too many failed attempts from this address",
        "try again in 52 s: the payments API refuses this address that long after too many"
        " failed token attempts from it (each service counts its own)",
    ]


@pytest.mark.parametrize(
    ("detail", "said"),
    [
        (
            DATABASE_AWAY,  # what a service answers while its database is away
            [
                "the payments service cannot reach its database (it answered 503): run this"
                " again once PostgreSQL is back",
                "it may have been applied: retry with --key k-1 (applied once)",
            ],
        ),
        (
            DATABASE_BUSY,  # ... while PostgreSQL takes no more connections
            [
                "the payments service's database takes no more connections now (it answered"
                " 503): run this again in a while",
                "it may have been applied: retry with --key k-1 (applied once)",
            ],
        ),
        (
            # ... while PostgreSQL answers and refuses (its disk full: session 49's drill)
            f"{DATABASE_REFUSES}: its disk is full (SQLSTATE 53100); retry",
            [
                "the payments service's database refuses the work for now: its disk is full"
                " (SQLSTATE 53100) (it answered 503): run this again later",
                "it may have been applied: retry with --key k-1 (applied once)",
            ],
        ),
        (
            # ... while PostgreSQL does not answer (frozen) within the request's bound
            f"{DATABASE_MUTE} 8 s; retry",
            [
                "the payments service's database did not answer within 8 s (it answered 503):"
                " run this again later",
                "it may have been applied: retry with --key k-1 (applied once)",
            ],
        ),
        (
            # ... while its own event loop was too late to hear PostgreSQL (not_heard)
            f"{SERVICE_LOOP_LATE} 3.1 s late; PostgreSQL's answer may not have been heard within"
            " 8 s; retry",
            [
                "the payments service's event loop was 3.1 s late; PostgreSQL's answer may not"
                " have been heard within 8 s (it answered 503): run this again later",
                "it may have been applied: retry with --key k-1 (applied once)",
            ],
        ),
        (
            "the order API answered 500: push again later",
            [
                "Service Unavailable: the order API answered 500: push again later",
                "try again in 30 s",
                "it may have been applied: retry with --key k-1 (applied once)",
            ],
        ),
    ],
)
def test_a_503_is_a_part_of_the_system_away_exit_2(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, detail: str, said: list[str]
) -> None:
    """A service's database away (its 503) was said "Service Unavailable: the database is not
    reachable; retry" and "try again in 1 s" (its Retry-After, for programs), exit 1, a
    refusal's: docs/commands.md gives exit 2 to a part of the system a command cannot
    reach, which a retry may mend."""
    problem = {"title": "Service Unavailable", "detail": detail}
    wait = "30" if "order API" in detail else "1"
    answered = httpx.Response(503, json=problem, headers={"Retry-After": wait})
    monkeypatch.setattr(httpx.Client, "request", lambda *args, **kwargs: answered)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    url = ("--url", "http://127.0.0.1:1")
    code, out, err = caravan("payments", "repay", "L-1", "--amount", "500", "--key", "k-1", *url)
    assert (code, out, err.splitlines()) == (2, "", said)


@pytest.mark.parametrize("origin", ["CARAVAN_TOKEN", "CARAVAN_TOKEN_FILE", "dev-token", "none"])
def test_a_refused_token_is_said_with_where_it_came_from_and_what_to_do(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, origin: str
) -> None:
    """With CARAVAN_TOKEN set to a revoked token a command said only "Unauthorized: the token
    is not valid": not that the token was CARAVAN_TOKEN's, which overrides the development
    token a user believed was sent, nor what to do."""
    problem = {"title": "Unauthorized", "detail": "the token is not valid"}
    monkeypatch.setattr(
        httpx.Client, "request", lambda *args, **kwargs: httpx.Response(401, json=problem)
    )
    dev, file = tmp_path / "dev-token", tmp_path / "token"
    monkeypatch.setattr(admin_api, "DEV_TOKEN_FILE", dev)
    monkeypatch.setattr(settings, "DEV_TOKEN_FILE", dev)
    monkeypatch.delenv("CARAVAN_TOKEN", raising=False)
    monkeypatch.delenv("CARAVAN_TOKEN_FILE", raising=False)
    issue = "`caravan tokens issue --scope SCOPE`"
    said = {
        "CARAVAN_TOKEN": "the token sent is CARAVAN_TOKEN's (set, it overrides CARAVAN_TOKEN_FILE"
        f" and {dev}): set it to a valid one ({issue}), or unset it",
        "CARAVAN_TOKEN_FILE": f"the token sent is the one in CARAVAN_TOKEN_FILE ({file}): put a"
        f" valid one there ({issue}), or unset it",
        "dev-token": f"the token sent is caravan up's development token ({dev}): `caravan up`"
        f" issues it anew, or set CARAVAN_TOKEN to a valid one ({issue})",
        "none": f"no token found: set CARAVAN_TOKEN (or CARAVAN_TOKEN_FILE) to one ({issue}),"
        " or run `caravan up`, which issues a development token",
    }
    if origin == "CARAVAN_TOKEN":
        dev.write_text("cvn_" + "d" * 43)
        monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    elif origin == "CARAVAN_TOKEN_FILE":
        file.write_text("cvn_" + "f" * 43)
        monkeypatch.setenv("CARAVAN_TOKEN_FILE", str(file))
    elif origin == "dev-token":
        dev.write_text("cvn_" + "d" * 43)
    code, out, err = caravan("inventory", "stock", "--url", "http://127.0.0.1:1")
    assert (code, out) == (1, ""), err
    assert err.splitlines() == ["Unauthorized: the token is not valid", said[origin]]


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (
            "payments list --status bogus --url http://127.0.0.1:1",
            "'bogus' is not one of 'pending', 'charging', 'authorized', 'declined', 'voiding',"
            " 'voided', 'void_refused', 'refunded', 'awaiting', 'cancelled'",
        ),
        (
            "orders list --status done",
            "'done' is not one of 'pending', 'confirmed', 'cancelled'",
        ),
        (
            "platform callbacks --status sent --url http://127.0.0.1:1",
            "'sent' is not one of 'pending', 'sending', 'delivered', 'failed'",
        ),
        (
            "orders list --reason sold_out",
            "'sold_out' is not one of 'unknown_sku', 'out_of_stock', 'out_of_season',"
            " 'credit_declined', 'payment_failed', 'expired', 'cancelled_by_buyer',"
            " 'cancelled_by_operator'",
        ),
        (
            "orders cancel --by staff 0193ee5f-5a1b-7c2d-8e3f-4a5b6c7d8e9f",
            "'staff' is not one of 'buyer', 'operator'",
        ),
    ],
)
def test_a_status_or_reason_none_of_its_choices_is_refused_before_any_call(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch, command: str, said: str
) -> None:
    """``caravan payments list --status bogus`` and ``caravan orders list --status done`` were
    sent, and refused by the API's 422 (exit 1), where a missing --status is refused by the
    command itself (exit 2): now any value but one of the choices is, with the choices, and
    without pydantic's "Value error, " before them (Typer reads the choices through it)."""

    def request(*args: object, **kwargs: object) -> httpx.Response:
        raise AssertionError("called the API")

    monkeypatch.setattr(httpx.Client, "request", request)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    code, out, err = caravan(*command.split())
    assert (code, out) == (2, ""), err
    flat = " ".join(err.replace("│", " ").split())  # what the error box wrapped
    assert f"Invalid value for '{command.split()[2]}': {said}" in flat, flat


@pytest.mark.parametrize(
    ("inventory", "code", "said"),
    [
        (
            httpx.Response(404, json={"title": "Unknown SKU", "detail": "no product T-PEPER"}),
            2,
            "not mapped: inventory has no SKU 'T-PEPER', so each order through it would be"
            " cancelled unknown_sku (a typo? `caravan inventory stock` lists its SKUs);"
            " --unchecked maps it all the same, for a product being added",
        ),
        (
            httpx.ConnectError("connection refused"),
            2,
            "inventory API unreachable: connection refused",
        ),
        (
            httpx.Response(403, json={"title": "Forbidden", "detail": "lacks inventory:read"}),
            1,
            "Forbidden: lacks inventory:read",
        ),
    ],
)
def test_a_platform_sku_is_mapped_only_to_a_sku_inventory_has(
    caravan: Caravan,
    monkeypatch: pytest.MonkeyPatch,
    inventory: httpx.Response | httpx.ConnectError,
    code: int,
    said: str,
) -> None:
    """A SKU mapping was taken as written: a typo was found when an order through it was
    cancelled unknown_sku. ``caravan platform map-sku`` asks inventory first; a SKU it does
    not have is refused (exit 2), and so is a mapping it cannot check (inventory unreachable,
    exit 2; refusing the call, exit 1): nothing is sent to the adapter."""
    asked: list[str] = []

    def request(_client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
        asked.append(f"{method} {httpx.URL(url).path}")
        if isinstance(inventory, Exception):
            raise inventory
        return inventory

    monkeypatch.setattr(httpx.Client, "request", request)
    monkeypatch.setenv("CARAVAN_TOKEN", "cvn_" + "x" * 43)
    urls = ("--url", "http://127.0.0.1:1", "--inventory-url", "http://127.0.0.1:2")
    done = caravan("platform", "map-sku", "market", "ALI-1", "T-PEPER", *urls)
    assert (done[0], done[1], one_line(done[2])) == (code, "", said)
    assert asked == ["GET /stock/T-PEPER"]
