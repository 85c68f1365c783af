"""Bringing the whole system up: infrastructure, topics, schemas and the five services.

Used by ``caravan up`` and by the test session alike, so both run the same way.
Infrastructure comes from (in order): ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` when
set (in the environment or ``.env``, as Settings reads them); testcontainers when a Docker
engine answers; otherwise a Kafka broker and a PostgreSQL cluster that the project runs
itself from ``.cache/``.

``DATABASE_URL`` here is the admin's; each service process gets its own (its own role, see
caravan/db_roles.py) and, on a SASL broker, its own Kafka principal (caravan/kafka_acls.py).
"""

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx
from rich.text import Text
from sqlalchemy.engine import make_url

from caravan import checkout, db_roles, kafka_acls
from caravan.infra.kafka import CONTROLLER_PORT_OFFSET, KafkaExited, LocalKafka, Scram
from caravan.infra.logs import service_error, size, written_since
from caravan.infra.ports import HOST, answers, port_open
from caravan.infra.postgres import DataFolderGone, LocalPostgres, local_postgres
from caravan.output import OperatorError
from services import SERVICES
from shared.backoff import exponential_step
from shared.db.migrate import Migrated, SchemaAhead, migrations_folder, upgrade
from shared.logs import JsonFormatter
from shared.messaging.admin import Topics, TopicsNotCreated, ensure_topics
from shared.settings import Settings, is_dev_secret

HTTP_PORT_VARS = (
    "CARAVAN_HTTP_PORT",
    "CARAVAN_INVENTORY_HTTP_PORT",
    "CARAVAN_PAYMENTS_HTTP_PORT",
    "CARAVAN_NOTIFICATIONS_HTTP_PORT",
    "CARAVAN_PLATFORM_HTTP_PORT",
)


@dataclass
class Infrastructure:
    """Where Kafka and PostgreSQL are, which path provided them, and how to stop them."""

    kafka_bootstrap: str
    database_url: str
    kafka_path: str
    postgres_path: str
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    local_kafka: LocalKafka | None = None
    local_postgres: LocalPostgres | None = None
    # How a client logs in to the local SASL broker as its admin (empty: no SASL).
    kafka_env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """Run every stopper, newest first, even when one fails (then raise the first error):
        a failing ``pg_ctl stop`` must not leave the Kafka JVM running."""
        failed: Exception | None = None
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception as exc:
                failed = failed or exc
        self.stoppers.clear()
        if failed is not None:
            raise failed

    def watched(self, backoff: tuple[float, float]) -> list["Watched"]:
        """The processes of the Kafka and the PostgreSQL it runs itself (not those named in
        the settings, nor containers), to watch as ``caravan up`` watches its services."""
        found = []
        if self.local_postgres is not None:
            pg = self.local_postgres
            again = functools.partial(pg.start, make=False)  # no new, empty cluster
            found.append(Watched("PostgreSQL", pg.logfile, pg.pid, again, Restarts(*backoff)))
        if self.local_kafka is not None:
            kafka = self.local_kafka
            for index in range(kafka.nodes):
                name = "Kafka" if kafka.nodes == 1 else f"Kafka node {index}"
                pid = functools.partial(kafka.pid, index)
                start = functools.partial(_restart_kafka, kafka, index)
                found.append(Watched(name, kafka.logfile(index), pid, start, Restarts(*backoff)))
        return found


def _restart_kafka(kafka: LocalKafka, node: int) -> None:
    """Start node ``node`` again and wait until it serves, as ``caravan up`` waits at start."""
    kafka.restart(node)
    kafka.wait_ready()


def docker_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals() -> None:
    """Make Ctrl-C, a supervisor's SIGTERM and a closed terminal's SIGHUP all stop this
    process as Ctrl-C does, so that its ``finally`` blocks stop the services and brokers it
    started (SIGTERM or SIGHUP would otherwise end it at once and leave them running; a shell
    may also start a background job with SIGINT ignored): ``KeyboardInterrupt``, or within
    ``asyncio.run`` the main task cancelled (:func:`_as_ctrl_c`)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in STOP_SIGNALS:
        if sig != signal.SIGINT:
            signal.signal(sig, _as_ctrl_c)


def _as_ctrl_c(_signum: int, _frame: object) -> None:
    """SIGTERM or SIGHUP taken as Ctrl-C, by SIGINT's handler: ``KeyboardInterrupt``; or,
    within ``asyncio.run`` (whose handler it is then), the main task cancelled at its next
    await, so that its own ``except`` and ``finally`` run in order. ``KeyboardInterrupt``
    raised wherever the code was could pass them by: ``caravan demo`` stopped by SIGTERM
    sometimes ended without its "stopped: N of M orders sent" line."""
    signal.raise_signal(signal.SIGINT)


def ignore_stop_signals() -> None:
    """While stopping: a second Ctrl-C must not cut the stopping short (and leave processes)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def write_up_env(infra: "Infrastructure", http_host: str, http_port: int) -> None:
    """Say how to reach what ``caravan up`` started (mode 0600: it holds the admin's login),
    its services' HTTP address included (``http_host``, and ``http_port`` and the four after
    it, as :func:`service_env` gives them)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "DATABASE_URL": infra.database_url,
        **infra.kafka_env,
        "CARAVAN_HTTP_HOST": http_host,
        **http_port_env(http_port),
    }
    checkout.UP_ENV.parent.mkdir(parents=True, exist_ok=True)
    temporary = checkout.UP_ENV.with_name(checkout.UP_ENV.name + ".tmp")
    temporary.touch(mode=0o600)
    temporary.write_text(json.dumps(env))
    temporary.replace(checkout.UP_ENV)


def record_processes(pid_file: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Write the pids and command lines of ``procs`` (what a run started) to ``pid_file``.

    A process's command line is the one it was started with (``args``), not read back from
    ``/proc``: just after ``Popen`` returns the kernel may still be setting up the new
    program, and ``/proc/PID/cmdline`` reads empty, which recorded nothing to match, so a
    killed run's service was never stopped by the next (seen as a flaky test)."""
    started = {key: {"pid": p.pid, "cmdline": _started_as(p)} for key, p in procs.items()}
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = pid_file.with_name(pid_file.name + ".tmp")
    temporary.write_text(json.dumps(started))
    temporary.replace(pid_file)


def stop_leftovers(pid_file: Path, timeout: float = 15.0) -> list[str]:
    """Stop what an earlier run recorded in ``pid_file`` and left running (it was killed, so
    its ``finally`` never ran): those processes hold the services' ports, and a new run's
    services would die binding them. A pid is only signalled while it still runs the command
    line recorded for it (pids are reused). The keys of the processes stopped."""
    recorded = checkout.recorded_processes(pid_file)
    alive = {
        key: int(entry["pid"])
        for key, entry in recorded.items()
        if entry.get("cmdline") and _cmdline(int(entry["pid"])) == entry["cmdline"]
    }
    for pid in alive.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in alive.values():
        while _cmdline(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return sorted(alive)


def _started_as(proc: subprocess.Popen[bytes]) -> list[str]:
    """``proc``'s command line as ``/proc/PID/cmdline`` shows it once it runs: its ``args``."""
    args = proc.args
    if isinstance(args, str | bytes | os.PathLike):
        return [os.fsdecode(args)]
    return [os.fsdecode(arg) for arg in args]


def _cmdline(pid: int) -> list[str] | None:
    """The command line of a running process (None once it is gone, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode("utf-8", "replace").split("\0")[:-1] or None


@contextlib.contextmanager
def run_alone(
    base: Path,
    advice: str = "wait for it to end, or give this run other ports",
    held: str | None = None,
) -> Iterator[None]:
    """Hold ``base`` for this command-line run alone; exit at once, saying why, if another
    run holds it (``held``, else that ``base`` is in use by a run on the same ports).

    A bench run starts (or reuses) the Kafka and PostgreSQL under ``base`` and stops them
    when it ends, so two runs on the same ports would share one cluster, and the first to end
    would stop it under the other (a second ``--fresh`` would even remove its data). The lock
    is a file beside ``base``, not in it (``--fresh`` removes ``base``), and it is released
    when this process ends, however it ends.
    """
    base.parent.mkdir(parents=True, exist_ok=True)
    with base.with_name(f"{base.name}.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            said = held or f"{base} is in use by another run on the same ports"
            raise SystemExit(f"{said} (process {holder}): {advice}") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refuse_copy_inside(folder: Path) -> None:
    """Refuse (:class:`OperatorError`) to start on ``folder`` holding a folder of its own name:
    ``cp -a old/.cache/kafka-9092 new/.cache/kafka-9092`` where the new checkout had a
    ``kafka-9092`` of its own (a run to try it) copies the old one inside it, and Kafka or
    PostgreSQL would start on the new checkout's data, the upgraded system without the orders
    it had, nothing saying so (docs/running.md, Upgrading)."""
    inside = folder / folder.name
    if inside.is_dir():
        raise OperatorError(
            f"{inside} is a copy inside the folder of the same name, which this checkout had"
            f" (cp -a into a {folder.name} that existed puts it there): started, this would"
            f" run on {folder}'s own data, not the copy's. Move {folder} aside, then move"
            f" {inside} into its place",
            2,
        )


def start_infrastructure(
    base_dir: Path = checkout.CACHE,
    kafka_port: int = 9092,
    postgres_port: int = 15432,
    kafka_nodes: int = 1,
    kafka_sasl: bool = False,
    named: tuple[str | None, str | None] | None = None,
) -> Infrastructure:
    """Start (or reuse) what ``named`` (Kafka's bootstrap servers, the admin's database URL;
    default: ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` in the environment) does not
    name; ``kafka_sasl``: the local broker listens with SASL/SCRAM and ACLs (local_scram()).
    ``caravan up`` names what the settings name, ``.env`` included (:func:`named_servers`);
    the test session and the benches, the environment's only: a developer's ``.env`` naming
    real servers must not turn them into a test bed."""
    infra = Infrastructure("", "", "external", "external")
    env_kafka, env_db = named or (
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        os.environ.get("DATABASE_URL") or None,
    )
    docker = (env_kafka is None or env_db is None) and docker_available()
    if kafka_sasl and (env_kafka or docker):
        raise ValueError("kafka_sasl applies to the local broker only")
    scram = local_scram() if kafka_sasl else None
    kafka = (
        None
        if env_kafka or docker
        else LocalKafka(
            base_dir / f"kafka{'-sasl' if scram else ''}-{kafka_port}",
            nodes=kafka_nodes,
            first_port=kafka_port,
            scram=scram,
        )
    )
    pg = None if env_db or docker else local_postgres(base_dir, postgres_port)
    for local in (kafka, pg):
        if local is not None:
            refuse_copy_inside(local.base_dir)
    # Every port asked before anything starts: not a new cluster made, then refused.
    if kafka is not None:
        kafka.refuse_held_ports()
    if pg is not None:
        pg.refuse_held_port()
    try:
        if env_kafka:
            infra.kafka_bootstrap = env_kafka
        elif kafka is None:
            infra.kafka_bootstrap = _kafka_container(infra)
            infra.kafka_path = "testcontainers"
        else:
            if scram is not None:
                infra.kafka_env = scram_env(scram)
            infra.stoppers.append(kafka.stop)
            infra.kafka_bootstrap = _start_kafka(kafka)
            infra.local_kafka = kafka
            infra.kafka_path = f"local ({kafka_nodes} node{'s' if kafka_nodes > 1 else ''})"
        if env_db:
            infra.database_url = env_db
        elif pg is None:
            infra.database_url = _postgres_container(infra)
            infra.postgres_path = "testcontainers"
        else:
            infra.stoppers.append(pg.stop)
            infra.database_url = pg.start()
            infra.local_postgres = pg
            infra.postgres_path = "local"
    except BaseException:
        infra.stop()
        raise
    return infra


def named_servers(settings: Settings) -> tuple[str | None, str | None]:
    """The Kafka and the PostgreSQL that the settings name (None: not named), read as every
    command and service reads them: the environment, else ``.env``."""
    database = settings.database_url.get_secret_value() if settings.database_url else None
    return settings.named_kafka(), database or None


def _start_kafka(kafka: LocalKafka, attempts: int = 3) -> str:
    """Start the local broker and wait until it serves; start it again if it exits while
    starting up (a starved JVM has been seen to fail its own startup on a loaded machine)."""
    for attempt in range(1, attempts + 1):
        bootstrap = kafka.start()
        try:
            kafka.wait_ready()
            return bootstrap
        except KafkaExited:
            if attempt == attempts:
                raise
            kafka.stop()
    raise AssertionError("unreachable")


def _kafka_container(infra: Infrastructure) -> str:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft()
    container.start()
    infra.stoppers.append(container.stop)
    return str(container.get_bootstrap_server())


def _postgres_container(infra: Infrastructure) -> str:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16", driver="asyncpg")
    container.start()
    infra.stoppers.append(container.stop)
    return str(container.get_connection_url())


def local_scram(environ: dict[str, str] | None = None) -> Scram:
    """The users of a local SASL broker: the admin and one principal per service, with the
    passwords the environment gives (kafka_acls.password) or development defaults."""
    names = [kafka_acls.ADMIN_PRINCIPAL, *(kafka_acls.principal(s) for s in SERVICES)]
    return Scram(
        kafka_acls.ADMIN_PRINCIPAL, {name: kafka_acls.password(name, environ) for name in names}
    )


def scram_env(scram: Scram) -> dict[str, str]:
    """The environment that makes a client log in to a local SASL broker as its admin."""
    return {
        "CARAVAN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CARAVAN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CARAVAN_KAFKA_USERNAME": scram.admin,
        "CARAVAN_KAFKA_PASSWORD": scram.users[scram.admin],
    }


class Prepared(NamedTuple):
    """What :func:`prepare` did: the topics (:class:`shared.messaging.admin.Topics`) and, per
    schema, what its migration did (:func:`shared.db.migrate.upgrade`)."""

    topics: Topics
    migrated: dict[str, Migrated]


async def prepare(
    bootstrap: str,
    database_url: str,
    rf: int | None = None,
    settings: Settings | None = None,
) -> Prepared:
    """Create the topics (and on a SASL broker the services' ACLs), the database roles, and
    migrate every schema as the owner role (idempotent). ``database_url`` is the admin's;
    ``settings`` (default: the environment's) say how to log in to Kafka and how many
    partitions a new topic gets (a topic that exists keeps its own); ``rf``, the topics'
    replication factor (default: three, or the cluster's brokers if fewer). The replication
    factor of the topics it created, those kept with other partition counts, and what each
    schema's migration did."""
    settings = settings or Settings()
    urls = {name: db_roles.service_database_url(database_url, name) for name in SERVICES}
    if settings.environment == "production":
        weak = [name for name, url in urls.items() if is_dev_secret(_password(url))]
        if weak:
            raise OperatorError(
                "refusing development database passwords in production for: "
                + ", ".join(weak)
                + " (set CARAVAN_DATABASE_URL_<SERVICE>)",
                exit_code=2,
            )
    try:
        topics = await ensure_topics(bootstrap, settings.topic_partitions, rf, settings=settings)
    except TopicsNotCreated as exc:  # an ACL, a policy: for the cluster's owner to see to
        raise OperatorError(f"topics not created: {exc}") from exc
    if settings.kafka_security_protocol.startswith("SASL"):
        await kafka_acls.ensure_acls(bootstrap, SERVICES, settings)
    await db_roles.ensure_owner(database_url)
    # auth before ops: ops' second migration moves its records into auth.audit.
    migrated = {}
    for schema in (*SERVICES, "auth", "ops"):
        url = db_roles.asyncpg_url(database_url)
        folder = migrations_folder(schema)
        try:
            migrated[schema] = await asyncio.to_thread(upgrade, folder, url, db_roles.OWNER)
        except SchemaAhead as exc:  # an older version's prepare (or up), going back
            raise OperatorError(str(exc), exit_code=2) from exc
    await db_roles.grant_services(database_url, urls)
    return Prepared(topics, migrated)


def _password(url: str) -> str | None:
    return make_url(url).password


def process_groups(names: tuple[str, ...], processes: int) -> list[tuple[str, ...]]:
    """``names`` in ``processes`` processes (at most one each), in the saga's order; where they
    do not divide evenly the later processes take one more. Two processes of the five services:
    orders and inventory; payments, notifications and the platform adapter."""
    count = max(1, min(processes, len(names)))
    size, extra = divmod(len(names), count)
    groups, start = [], 0
    for length in [size] * (count - extra) + [size + 1] * extra:
        groups.append(names[start : start + length])
        start += length
    return groups


MAX_EXITS = 5
"""Exits within a minute after which ``caravan up`` says that a process keeps exiting, and
starts it again only at the longest backoff."""
RAN_LONG = 60.0
"""Seconds a process runs after which its next exit starts the backoff afresh."""
# Hidden settings, for the tests of `caravan up` (README: its own brokers' ports are fixed):
RESTART_BACKOFF_VAR = "CARAVAN_UP_RESTART_BACKOFF"  # "FIRST,LONGEST" seconds: "1,30"


def restart_backoff() -> tuple[float, float]:
    """The first and the longest wait before ``caravan up`` starts again what exited."""
    first, longest = os.environ.get(RESTART_BACKOFF_VAR, "1,30").split(",")
    return float(first), float(longest)


@dataclass
class Restarts:
    """When ``caravan up`` starts again a process that exited by itself: ``first`` seconds
    after its first exit, twice as long after each exit that follows, at most ``longest``;
    afresh once it has run a minute (:data:`RAN_LONG`). Past :data:`MAX_EXITS` exits within a
    minute it is started again every ``longest`` seconds, said once in red: it never stops the
    rest of the system."""

    first: float
    longest: float
    exits: list[float] = field(default_factory=list)  # since it last ran a minute
    started: float = -RAN_LONG  # when it was last started
    due: float | None = None  # when to start it again (None: it runs)
    warned: bool = False

    def exited(self, name: str, pid: int | None, what: str, log: Path, now: float) -> Text:
        """Note that the process ``name`` (``pid``) exited at ``now`` (``what`` says how:
        ``exited with 1``); the line that says so, and when it starts again."""
        if now - self.started >= RAN_LONG:
            self.exits, self.warned = [], False
        self.exits.append(now)
        within = sum(now - t < 60.0 for t in self.exits)
        if within >= MAX_EXITS:
            wait = self.longest
        else:
            wait = exponential_step(len(self.exits), self.first, self.longest)
        self.due = now + wait
        if within < MAX_EXITS or self.warned:
            who = name if pid is None else f"{name} (pid {pid})"
            see = "" if str(log) in what else f": see {log}"  # a start's failure may name it
            return Text(f"{who} {what}{see}; starting it again in {wait:g} s")
        self.warned = True
        failed = f"; the last: {what}" if pid is None else ""  # a start's failure: its cause
        return Text(
            f"{name} keeps exiting ({within} times within a minute{failed}): see {log}; "
            f"retrying every {wait:g} s",
            "red",
        )

    def start_due(self, now: float) -> bool:
        """Whether it is time to start it again (then noted as started at ``now``)."""
        if self.due is None or now < self.due:
            return False
        self.due, self.started = None, now
        return True


def in_background(work: Callable[[], object]) -> futures.Future[object]:
    """Run ``work`` in a daemon thread (which a Ctrl-C does not wait for); its outcome."""
    outcome: futures.Future[object] = futures.Future()

    def run() -> None:
        try:
            outcome.set_result(work())
        except BaseException as exc:  # whatever ends it (a SystemExit too) is its outcome:
            outcome.set_exception(exc)  # a future left pending would be watched no more

    threading.Thread(target=run, name="caravan-up-restart", daemon=True).start()
    return outcome


@dataclass
class Watched:
    """A process that ``caravan up`` started itself beside the services (its PostgreSQL, a
    node of its Kafka, its operations page): its name, log, pid (None once it has exited)
    and how to start it."""

    name: str
    log: Path
    pid: Callable[[], int | None]
    start: Callable[[], object]  # returns once it is ready, as caravan up waits for it at start
    restarts: Restarts
    last_pid: int | None = None
    starting: futures.Future[object] | None = None  # a start under way
    gone: bool = False  # its data folder is gone, said

    def supervise(self, now: float) -> list[Text]:
        """Start it again when due, in a thread of its own (``pg_ctl start`` waits up to a
        minute while PostgreSQL recovers from a crash, and meanwhile ``caravan up`` goes on
        watching the rest); say so if it exited, did not start again, or is up again."""
        if self.restarts.start_due(now):
            self.starting = in_background(self._start)
            return []
        back: list[Text] = []
        if self.starting is not None:
            if not self.starting.done():
                return []
            failed, self.starting = self.starting.exception(), None
            if failed is not None:  # a port taken meanwhile, a disk full: try again later
                what = f"did not start again ({failed})"
                said = self.restarts.exited(self.name, None, what, self.log, now)
                if not isinstance(failed, DataFolderGone):
                    return [said]
                quiet, self.gone = self.gone, True  # said once, in red; tried again quietly
                return [] if quiet else [Text(str(failed), "red")]
            back = [Text(f"{self.name} (pid {self.last_pid}) is up again", "green")]
        if self.restarts.due is not None:
            return []
        pid = self.pid()
        if pid is not None:
            self.last_pid, self.gone = pid, False
            return back
        return [self.restarts.exited(self.name, self.last_pid, "exited", self.log, now)]

    def _start(self) -> None:
        """Start it, noting the pid it started: one that exits before the next round sees it
        running is named by its own pid, not the one before it."""
        self.start()
        self.last_pid = self.pid() or self.last_pid

    def settle(self, deadline: float) -> None:
        """Wait for a start under way to end, until ``deadline`` (``time.monotonic()``), so
        that what it starts is stopped with the rest, not left running."""
        if self.starting is not None:
            futures.wait([self.starting], max(0.0, deadline - time.monotonic()))


@dataclass
class ServiceProcesses:
    """The services, started with the given environment: each in its own process, or in
    ``processes`` processes hosting several each (``python -m services``)."""

    env: dict[str, str]
    log_dir: Path
    processes: int = len(SERVICES)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, Restarts] = field(default_factory=dict)  # of those that exited
    backoff: tuple[float, float] = field(default_factory=restart_backoff)
    logged: dict[str, int] = field(default_factory=dict)  # each log's size at its last start
    returning: set[str] = field(default_factory=set)  # started again, not yet said up again

    def start(self, names: tuple[str, ...] = SERVICES, instance: int = 1) -> None:
        """Start ``names``; their processes are keyed ``orders``, ``inventory-2`` (instance 2),
        ``orders+inventory`` (a process hosting both). Services are grouped as the whole
        system is (:func:`process_groups` of all five), so that starting again what
        :meth:`hosts` named starts the same processes."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        every = process_groups(SERVICES, self.processes)
        groups = [tuple(n for n in group if n in names) for group in every]
        for group in filter(None, groups):
            key = "+".join(group) + ("" if instance == 1 else f"-{instance}")
            env = service_credentials(group, {**self.env, "CARAVAN_INSTANCE_ID": str(instance)})
            if instance != 1:
                env.update(dict.fromkeys(HTTP_PORT_VARS, "0"))
            module = ["services", *group] if len(group) > 1 else [f"services.{group[0]}"]
            self.logged[key] = size(self.log_dir / f"{key}.log")
            log = (self.log_dir / f"{key}.log").open("ab")
            self.procs[key] = subprocess.Popen(
                [sys.executable, "-m", *module],
                env=env,
                cwd=checkout.REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def services(self, keys: list[str] | None = None) -> list[str]:
        """The services whose first instance runs (in the processes keyed ``keys``, if given),
        in the order they were started."""
        chosen = list(self.procs) if keys is None else keys
        return [name for key in chosen if "-" not in key for name in key.split("+")]

    def hosts(self, names: tuple[str, ...]) -> list[str]:
        """The keys of the processes running the first instances of ``names``: ``orders``, or
        ``orders+inventory`` where that process hosts orders."""
        return [key for key in self.procs if "-" not in key and set(key.split("+")) & set(names)]

    def check_alive(self) -> None:
        """Raise :class:`OperatorError` if a process has exited: naming it, its log and the
        last error that log says since it started (what the operator needs, in a line)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.log_dir / f"{name}.log"
                said = service_error(written_since(log, self.logged.get(name, 0)))
                raise OperatorError(
                    f"service {name} exited with {proc.returncode} ({said}); see {log}"
                )

    def supervise(self, paused: set[str], now: float | None = None) -> list[Text]:
        """One round of ``caravan up``'s watch over the services' processes: stop those hosting
        a service that ``caravan pause`` paused (a consumer group is rewound only while none
        of its members runs), start again those no longer paused, and start again a process
        that exited by itself, after a backoff (:class:`Restarts`). What it did, a line each."""
        now = time.monotonic() if now is None else now
        said = []
        for key, proc in list(self.procs.items()):
            names = key.split("+")
            if set(names) & paused:
                self.stop([key])
                self._log_paused(key, sorted(set(names) & paused))
                said.append(Text(f"paused {', '.join(names)}"))
            elif proc.poll() is not None:
                del self.procs[key]
                restarts = self.restarts.setdefault(key, Restarts(*self.backoff))
                what, log = f"exited with {proc.returncode}", self.log_dir / f"{key}.log"
                said.append(restarts.exited(f"service {key}", proc.pid, what, log, now))
        waiting = set()
        for key, restarts in self.restarts.items():
            if set(key.split("+")) & paused:
                restarts.due = None  # paused meanwhile: `caravan resume` starts it
            elif restarts.start_due(now):
                self.start(tuple(key.split("+")))
                self.returning.add(key)
            elif restarts.due is not None:
                waiting.update(key.split("+"))
        said += self._up_again()
        running = set(self.services())
        for group in process_groups(SERVICES, self.processes):
            if not set(group) & (paused | running | waiting):
                self.start(group)
                said.append(Text(f"resumed {', '.join(group)}"))
        return said

    def _log_paused(self, key: str, paused: list[str]) -> None:
        """End the log of the process ``key``, stopped for ``paused``, with why: it ended
        "payments stopping", which read as a service gone down (a line as its own are)."""
        again = " and ".join(f"`caravan resume {name}`" for name in paused)
        line = logging.makeLogRecord(
            {
                "name": "caravan.up",
                "levelno": logging.INFO,
                "levelname": "INFO",
                "msg": f"{key} stopped: paused by `caravan pause`; {again} starts it again",
            }
        )
        with (self.log_dir / f"{key}.log").open("a", encoding="utf-8") as log:
            log.write(JsonFormatter(key).format(line) + "\n")

    def _up_again(self) -> list[Text]:
        """A line for each process started again that now serves: its services answer
        ``/healthz``, as :func:`wait_ready` waits for them at start."""
        said = []
        for key in sorted(self.returning):
            proc = self.procs.get(key)
            if proc is None or proc.poll() is not None:  # exited again (said), or paused
                self.returning.discard(key)
            elif all(answers(http_ports(self.env)[name]) for name in key.split("+")):
                self.returning.discard(key)
                said.append(Text(f"service {key} (pid {proc.pid}) is up again", "green"))
        return said

    def stop(self, names: list[str] | None = None, timeout: float = 15.0) -> None:
        """Stop the processes keyed ``names`` (none if it is empty), or all of them. A process
        is forgotten once it has exited: one whose wait a Ctrl-C cut short is still here for
        the next stop (``caravan up``'s last) to end."""
        chosen = list(self.procs) if names is None else names
        for name in chosen:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in chosen:
            proc = self.procs.get(name)
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            del self.procs[name]


@dataclass
class OperationsPage:
    """The operations page that ``caravan up`` serves (``caravan dashboard``), a process of
    its own, its output in ``log``; watched as its Kafka and PostgreSQL are (:meth:`watched`)."""

    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (returning at once: :meth:`start_serving` waits until it serves)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "caravan", "dashboard", "--port", str(self.port)],
                env=self.env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def start_serving(self, timeout: float = 60.0) -> None:
        """Start it and wait until it serves (answers its sign-in page, which takes no token),
        as a service started again is said up again once it answers ``/healthz``: an
        :class:`OperatorError` if it exits first (with the last error its log says since) or
        does not answer within ``timeout`` seconds (then stopped)."""
        logged = size(self.log)
        self.start()
        deadline = time.monotonic() + timeout
        while not answers(self.port, "/login"):
            if self.proc is not None and self.proc.poll() is not None:
                said = service_error(written_since(self.log, logged))
                raise OperatorError(f"exited with {self.proc.returncode} ({said})")
            if time.monotonic() > deadline:
                self.stop()
                raise OperatorError(f"did not answer /login within {timeout:.0f}s")
            time.sleep(0.1)

    def pid(self) -> int | None:
        """Its pid while it runs, else None."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """Its process, keyed as :func:`record_processes` records it (none before its start)."""
        return {} if self.proc is None else {"dashboard": self.proc}

    def watched(self, backoff: tuple[float, float]) -> Watched:
        start = self.start_serving
        return Watched("operations page", self.log, self.pid, start, Restarts(*backoff))

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# The launcher's own logins, which no service process is given.
ADMIN_CREDENTIALS = (
    "DATABASE_URL",
    "DATABASE_URL_FILE",
    "CARAVAN_KAFKA_USERNAME",
    "CARAVAN_KAFKA_PASSWORD",
)


def service_credentials(names: tuple[str, ...], env: dict[str, str]) -> dict[str, str]:
    """``env`` (the launcher's, with the admin's credentials) made into the environment of the
    process running ``names``: their own database URLs and, on a SASL broker, their own Kafka
    principals; nobody else's credentials. One service gets its own as ``DATABASE_URL`` and
    ``CARAVAN_KAFKA_USERNAME``/``_PASSWORD``; a process hosting several gets none of those,
    and each one's as ``CARAVAN_DATABASE_URL_<SERVICE>`` and ``CARAVAN_KAFKA_PASSWORD_<SERVICE>``
    (``shared.settings.service_settings``)."""
    own = {
        k: v
        for k, v in env.items()
        if not k.startswith(("CARAVAN_DATABASE_URL_", "CARAVAN_KAFKA_PASSWORD_"))
        and k not in ADMIN_CREDENTIALS
    }
    sasl = env.get("CARAVAN_KAFKA_SECURITY_PROTOCOL", "").upper().startswith("SASL")
    for name in names:
        user = kafka_acls.principal(name)
        url = env.get("DATABASE_URL")
        url = url and db_roles.service_database_url(url, name, env)
        password = kafka_acls.password(user, env) if sasl else None
        if len(names) == 1:
            found = {
                "DATABASE_URL": url,
                "CARAVAN_KAFKA_USERNAME": user if sasl else None,
                "CARAVAN_KAFKA_PASSWORD": password,
            }
        else:  # the user name follows from the service's (service_settings)
            found = {
                f"CARAVAN_DATABASE_URL_{name.upper()}": url,
                f"CARAVAN_KAFKA_PASSWORD_{name.upper()}": password,
            }
        own.update({k: v for k, v in found.items() if v})
    return own


def service_env(infra: Infrastructure, http_port: int, **extra: str) -> dict[str, str]:
    """The environment of the services: the orders API on ``http_port``, the admin APIs of
    inventory, payments, notifications and the platform adapter on the four ports after it.
    It carries the admin's credentials; ServiceProcesses.start gives each service its own
    instead."""
    env = {
        **os.environ,
        **infra.kafka_env,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "DATABASE_URL": infra.database_url,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(http_port_env(http_port))
    # One secret for every notifications instance: the gateway may call back any of them.
    env.setdefault("CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET", secrets.token_urlsafe(24))
    env.update(extra)
    return env


def http_port_env(http_port: int) -> dict[str, str]:
    """The five services' HTTP ports, from ``http_port`` (orders) on."""
    return {var: str(http_port + i) for i, var in enumerate(HTTP_PORT_VARS)}


def http_ports(env: dict[str, str]) -> dict[str, int]:
    """Each service's HTTP port in ``env`` (:func:`service_env`'s)."""
    return {name: int(env[var]) for name, var in zip(SERVICES, HTTP_PORT_VARS, strict=True)}


def local_kafka_ports(first_port: int, nodes: int) -> dict[str, int]:
    """The ports the local Kafka's nodes listen on (:class:`LocalKafka`'s), by who listens."""
    return {
        **{f"Kafka node {i}": first_port + i for i in range(nodes)},
        **{
            f"Kafka node {i}'s controller": first_port + CONTROLLER_PORT_OFFSET + i
            for i in range(nodes)
        },
    }


def refuse_shared_ports(ports: dict[str, int]) -> None:
    """Refuse (:class:`OperatorError`, exit 2) ports given to two of what ``caravan up``
    starts (``ports``: who would listen, on which): the second would never bind, and its
    address would answer for the first (the operations page on ``CARAVAN_HTTP_PORT + 1``
    was inventory's API, said ready all the same)."""
    holders: dict[int, list[str]] = {}
    for who, port in ports.items():
        holders.setdefault(port, []).append(who)
    shared = [f"{port} ({' and '.join(who)})" for port, who in holders.items() if len(who) > 1]
    if shared:
        raise OperatorError(
            f"caravan up would give one port to two of what it starts: {', '.join(shared)}: "
            "move one (CARAVAN_HTTP_PORT and the four after it, --dashboard-port or "
            "CARAVAN_DASHBOARD_PORT, CARAVAN_UP_LOCAL_PORTS)",
            exit_code=2,
        )


def check_ports_free(ports: dict[str, int]) -> None:
    """Refuse (:class:`OperatorError`) to start what would listen on a port that another
    program holds (``ports``: who would listen, on which): it would exit at once, or that
    program's ``/healthz`` would answer for it."""
    busy = ", ".join(f"{port} ({who})" for who, port in ports.items() if port and port_open(port))
    if busy:
        raise OperatorError(
            f"another program holds port {busy}: stop it, or start caravan up on other ports "
            "(CARAVAN_HTTP_PORT and the four after it, --dashboard-port)"
        )


SERVICES_READY_SECONDS_VAR = "CARAVAN_UP_SERVICES_READY_SECONDS"
"""How long ``caravan up`` waits for the services it starts to answer ``/healthz``."""
SERVICES_READY_SECONDS = 120.0


def services_ready_seconds() -> float:
    """:data:`SERVICES_READY_SECONDS_VAR`'s seconds, else :data:`SERVICES_READY_SECONDS`;
    anything else than a number above 0 refused, naming it."""
    return checkout.up_seconds(SERVICES_READY_SECONDS_VAR, SERVICES_READY_SECONDS)


def wait_ready(procs: ServiceProcesses, timeout: float | None = None) -> None:
    """Wait until every started service answers ``/healthz`` (failing early if one died), up
    to ``timeout`` seconds (:func:`services_ready_seconds` unless given); then
    :class:`OperatorError` naming each that did not, where it was asked and its log, and what
    to do."""
    timeout = services_ready_seconds() if timeout is None else timeout
    running = procs.services()
    ports = {name: port for name, port in http_ports(procs.env).items() if name in running}
    deadline = time.monotonic() + timeout
    while ports and time.monotonic() < deadline:
        procs.check_alive()
        for name, port in list(ports.items()):
            if answers(port):
                del ports[name]
        time.sleep(0.1)
    if ports:
        each = "; ".join(
            f"{name} at http://{HOST}:{port}/healthz (its log: {log})"
            for name, port in ports.items()
            for log in [", ".join(str(procs.log_dir / f"{k}.log") for k in procs.hosts((name,)))]
        )
        raise OperatorError(
            f"{', '.join(ports)} did not answer /healthz within {timeout:g}s: {each}. A loaded"
            " machine starts them slower: run the command again, or give them longer with"
            f" {SERVICES_READY_SECONDS_VAR}={2 * timeout:g}"
        )


@contextlib.asynccontextmanager
async def simulator(
    module: str, port: int, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``python -m <module> --port <port> <args>`` (a simulator of an outside system, its
    own process; ``env`` added to its environment: a secret, which ``ps`` shows no one there)
    for the block; yields an HTTP client for it once it answers ``/healthz``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--port",
        str(port),
        *args,
        cwd=checkout.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15)
    try:
        for _ in range(300):
            if proc.returncode is not None:
                raise RuntimeError(f"{module} exited (is port {port} free?)")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        else:
            raise TimeoutError(f"{module} did not answer on port {port}")
        yield client
    finally:
        await client.aclose()
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
