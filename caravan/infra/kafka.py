"""Run Apache Kafka (KRaft mode) locally from jars fetched with Maven, without Docker.

Each node is a combined broker+controller JVM listening on 127.0.0.1.  Node ``i``
(0-based) serves clients on ``first_port + i`` and the controller quorum on
``first_port + 1000 + i`` (the offset may be chosen).  With :class:`Scram` the client
listener is SASL_PLAINTEXT with SCRAM users and ACL authorisation (docs/security.md).
Everything a cluster owns (configs, data, pidfiles, logs) lives under its ``base_dir``; one
base dir holds one cluster layout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from caravan.checkout import REPO_ROOT, up_seconds
from caravan.infra.logs import error_line, size, written_since
from caravan.infra.ports import HOST, port_open
from caravan.output import OperatorError
from shared.kafka_security import client_kwargs
from shared.settings import Settings

CONTROLLER_PORT_OFFSET = 1000

_T = TypeVar("_T")


def _kafka_version(repo_root: Path) -> str:
    pom = (repo_root / "infra" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    if match is None:
        raise RuntimeError("infra/kafka/pom.xml does not define <kafka.version>")
    return match.group(1).strip()


def ensure_jars(repo_root: Path) -> Path:
    """Fetch Kafka's jars into ``<repo_root>/.cache/kafka/libs`` once; return that folder.

    Skipped when the folder already holds the kafka jar of the version pinned in
    ``infra/kafka/pom.xml``.  Needs ``mvn`` on PATH for the first download.
    """
    libs = repo_root / ".cache" / "kafka" / "libs"
    jar = libs / f"kafka_2.13-{_kafka_version(repo_root)}.jar"
    if jar.exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(libs.parent / ".lock"):
        if jar.exists():  # another process fetched them while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise OperatorError("Maven (mvn) is needed once to fetch the Kafka jars")
        # Download next to the final folder and rename, so that an interrupted
        # download never looks complete.
        partial = libs.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        print(f"caravan: fetching Kafka jars into {libs} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(repo_root / "infra" / "kafka" / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,  # -q still prints stray ANSI codes; show output on failure only
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            log = libs.with_name("mvn.log")
            log.write_text(result.stdout + result.stderr)
            said = error_line(result.stdout + result.stderr, first=True)  # later: advice
            raise OperatorError(
                f"fetching the Kafka jars with Maven failed ({said}): run it again "
                "where Maven Central is reachable (or a mirror in ~/.m2/settings.xml); "
                f"see {log}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        elapsed = time.monotonic() - started
        print(f"caravan: Kafka jars ready ({elapsed:.0f}s)", file=sys.stderr, flush=True)
    return libs


def _cluster(nodes: object, first_port: object, sasl: bool) -> str:
    """A local cluster as an operator asks for it: ``3 node(s) on port 11092 (SASL)``."""
    return f"{nodes} node(s) on port {first_port}{' (SASL)' if sasl else ''}"


class KafkaExited(OperatorError):
    """A node of a local cluster exited while starting: its log says why."""


@dataclass(frozen=True)
class Scram:
    """SASL/SCRAM on the client listener, with ACL authorisation.

    ``users`` (name to password, ``admin`` among them) are created when the storage is
    formatted (so a changed password needs a new ``base_dir``); ``admin`` is the only super
    user, and everyone else may do only what an ACL allows.  The controller listener (loopback)
    authenticates the broker to its controller with SASL/PLAIN as ``admin``.
    """

    admin: str
    users: Mapping[str, str]

    def client_settings(self, user: str | None = None) -> Settings:
        """Settings for a client of this broker logged in as ``user`` (default: the admin)."""
        name = user or self.admin
        return Settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_username=name,
            kafka_password=SecretStr(self.users[name]),
        )

    def properties(self) -> dict[str, str]:
        admin, password = self.admin, self.users[self.admin]
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        login = f'{scram} required username="{admin}" password="{password}";'
        return {
            "listener.security.protocol.map": (
                "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
            ),
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": login,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": login,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{plain} required username="{admin}" password="{password}" '
                f'user_{admin}="{password}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{admin}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_args(self) -> list[str]:
        return [
            arg
            for name, password in self.users.items()
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]


@dataclass(frozen=True)
class _Node:
    index: int
    port: int
    controller_port: int
    home: Path

    @property
    def node_id(self) -> int:
        return self.index + 1

    @property
    def config(self) -> Path:
        return self.home / "server.properties"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def pidfile(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "kafka.log"


READY_SECONDS_VAR = "CARAVAN_UP_KAFKA_READY_SECONDS"
"""How long ``caravan up`` (and the tests' session) waits for its own broker to serve."""
READY_SECONDS = 90.0


def ready_seconds() -> float:
    """:data:`READY_SECONDS_VAR`'s seconds, else :data:`READY_SECONDS`; anything else than a
    number above 0 refused, naming it."""
    return up_seconds(READY_SECONDS_VAR, READY_SECONDS)


class LocalKafka:
    """A local KRaft cluster of ``nodes`` combined broker+controller JVMs.

    ``start()`` is idempotent across processes: nodes of this ``base_dir`` that
    are already running (per their pidfiles) are reused, missing ones are started.
    The JVMs run in their own session, so a Ctrl-C in the terminal does not reach
    them; whoever owns the cluster calls ``stop()``.  Node indexes are 0-based.
    """

    def __init__(
        self,
        base_dir: Path,
        nodes: int = 1,
        first_port: int = 9092,
        *,
        repo_root: Path = REPO_ROOT,
        scram: Scram | None = None,
        controller_offset: int = CONTROLLER_PORT_OFFSET,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        self.base_dir = base_dir.resolve()
        self.nodes = nodes
        self.first_port = first_port
        self.repo_root = repo_root
        self.scram = scram
        self.ready_seconds = ready_seconds()  # refused before anything starts
        self._nodes = [
            _Node(
                i,
                first_port + i,
                first_port + controller_offset + i,
                self.base_dir / f"node-{i}",
            )
            for i in range(nodes)
        ]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._log_starts: dict[int, int] = {}  # where each JVM we launched began its log

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``host:port`` list of all nodes' client listeners."""
        return ",".join(f"{HOST}:{n.port}" for n in self._nodes)

    def start(self) -> str:
        """Start every node that is not already running; return the bootstrap servers."""
        libs = ensure_jars(self.repo_root)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.base_dir / ".lock"):
            layout = self._layout()
            for node in self._nodes:
                self._write_config(node)
                if not (node.data / "meta.properties").exists():
                    self._format(node, libs, layout)
            for node in self._nodes:
                if self._pid(node) is None:
                    self._launch(node, libs)
        return self.bootstrap_servers

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every running node is listed as a live broker in cluster metadata,
        and a consumer group's coordinator answers: the first request for one creates the
        offsets topic, and until that topic has a leader, consumers that join log
        ``GroupCoordinatorNotAvailableError`` at the error level. Up to ``timeout`` seconds
        (:func:`ready_seconds` unless given), then :class:`OperatorError` saying what to do.

        Safe to call from inside a running event loop (the check runs on a
        private loop in a worker thread).
        """
        timeout = self.ready_seconds if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            expected: set[int] = set()
            for node in self._nodes:
                if self._pid(node) is not None:
                    expected.add(node.node_id)
                elif node.index in self._procs:  # we started it and it died
                    said = written_since(node.logfile, self._log_starts.get(node.index, 0))
                    raise KafkaExited(
                        f"Kafka node {node.index} exited"
                        f" ({error_line(said, writes_to=[node.data])}); see {node.logfile}"
                    )
            if not expected:
                raise RuntimeError("no Kafka node is running; call start() first")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logs = ", ".join(str(n.logfile) for n in self._nodes if n.node_id in expected)
                raise OperatorError(
                    f"Kafka at {self.bootstrap_servers} not ready after {timeout:g}s"
                    f" ({last_error!r}); its log: {logs}. A loaded machine starts it slower:"
                    " run the command again (the broker's data is kept), or give it longer"
                    f" with {READY_SECONDS_VAR}={2 * timeout:g}"
                )
            live = [n for n in self._nodes if n.node_id in expected]
            bootstrap = ",".join(f"{HOST}:{n.port}" for n in live)
            # Cheap TCP check first: it keeps aiokafka from logging connection errors.
            closed = [n.port for n in live if not port_open(n.port)]
            if closed:
                last_error = ConnectionRefusedError(f"ports {closed} not listening yet")
                time.sleep(0.25)
                continue
            try:
                brokers = _run_sync(_broker_ids(bootstrap, min(remaining, 5.0), self.scram))
            except Exception as exc:  # not up yet: connection refused, timeouts, ...
                last_error = exc
            else:
                if expected <= brokers:
                    return
                last_error = RuntimeError(f"brokers {sorted(brokers)} of {sorted(expected)}")
            time.sleep(0.25)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop all nodes: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        pids = {n.index: pid for n in self._nodes if (pid := self._pid(n)) is not None}
        for pid in pids.values():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for index, pid in pids.items():
            self._terminate(index, pid, deadline - time.monotonic())
        for node in self._nodes:
            node.pidfile.unlink(missing_ok=True)
            self._procs.pop(node.index, None)

    def pid(self, node: int) -> int | None:
        """The pid of node ``node``'s JVM if it runs, else None."""
        return self._pid(self._nodes[node])

    def logfile(self, node: int) -> Path:
        """Node ``node``'s log."""
        return self._nodes[node].logfile

    def kill(self, node: int) -> None:
        """SIGKILL one node (for fault tests)."""
        target = self._nodes[node]
        pid = self._pid(target)
        if pid is not None:
            _signal(pid, signal.SIGKILL)
            self._wait_exit(node, pid, 10.0)
        target.pidfile.unlink(missing_ok=True)
        self._procs.pop(node, None)

    def restart(self, node: int) -> None:
        """Start one node again (stopping it gracefully first if it is still running)."""
        target = self._nodes[node]
        pid = self._pid(target)
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            self._terminate(node, pid, 30.0)
            target.pidfile.unlink(missing_ok=True)
        self._launch(target, ensure_jars(self.repo_root))

    # -- internals -----------------------------------------------------------

    def _layout(self) -> dict[str, Any]:
        """Load or create the cluster's identity (cluster id, controller directory ids)."""
        path = self.base_dir / "cluster.json"
        wanted = {"nodes": self.nodes, "first_port": self.first_port}
        if path.exists():
            layout: dict[str, Any] = json.loads(path.read_text())
            sasl = bool(layout.get("scram"))
            if {k: layout.get(k) for k in wanted} != wanted or sasl != (self.scram is not None):
                # caravan up's folder is named by the first port only: a run with another
                # number of nodes on the ports CARAVAN_UP_LOCAL_PORTS gives lands in it.
                had = _cluster(layout.get("nodes"), layout.get("first_port"), sasl)
                asked = _cluster(self.nodes, self.first_port, self.scram is not None)
                raise OperatorError(
                    f"{self.base_dir} holds the Kafka of an earlier run, {had}, not {asked} as"
                    f" asked now: start it as it was (--kafka-nodes {layout.get('nodes')}), or"
                    " move that folder aside for a new, empty cluster (its topics and records"
                    " stay in it)",
                    2,
                )
            return layout
        layout = {
            **wanted,
            "scram": self.scram is not None,
            "cluster_id": _kafka_uuid(),
            "directory_ids": [_kafka_uuid() for _ in self._nodes],
        }
        path.write_text(json.dumps(layout, indent=2) + "\n")
        return layout

    def _write_config(self, node: _Node) -> None:
        rf = min(self.nodes, 3)
        min_isr = 2 if rf >= 3 else 1
        quorum = ",".join(f"{HOST}:{n.controller_port}" for n in self._nodes)
        client = "PLAINTEXT" if self.scram is None else "SASL_PLAINTEXT"
        listeners = f"{client}://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}"
        props: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.bootstrap.servers": quorum,
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": node.data,
            "num.partitions": 3,
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            # Threads for the cores of a development machine, not Kafka's defaults (3, 8, 10):
            # more threads than cores only switch between each other (bench/HISTORY.md).
            "num.network.threads": 2,
            "num.io.threads": 2,
            "background.threads": 2,
        }
        if self.scram is not None:
            props.update(self.scram.properties())
        node.home.mkdir(parents=True, exist_ok=True)
        node.config.touch()
        node.config.chmod(0o600)  # it may hold the admin's password
        node.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format(self, node: _Node, libs: Path, layout: dict[str, Any]) -> None:
        if self.nodes == 1:
            quorum_args = ["--standalone"]
        else:
            controllers = ",".join(
                f"{n.node_id}@{HOST}:{n.controller_port}:{layout['directory_ids'][n.index]}"
                for n in self._nodes
            )
            quorum_args = ["--initial-controllers", controllers]
        result = subprocess.run(
            [
                *self._java(libs),
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(node.config),
                "--cluster-id",
                layout["cluster_id"],
                *quorum_args,
                *(self.scram.format_args() if self.scram else []),
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            with node.logfile.open("a") as log:
                log.write(result.stdout + result.stderr)
            raise OperatorError(
                f"formatting Kafka node {node.index}'s storage failed "
                f"({error_line(result.stdout + result.stderr)}); see {node.logfile}"
            )

    def _java(self, libs: Path, heap: tuple[str, str] | None = None) -> list[str]:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if java is None:
            raise OperatorError("a Java 17+ runtime (java) is needed to run Kafka")
        log_config = self.repo_root / "infra" / "kafka" / "log4j2.properties"
        heap_opts = [f"-Xmx{heap[0]}", f"-Xms{heap[1]}"] if heap else []
        return [
            java,
            *heap_opts,
            # One node of a small heap on a few cores (bench/HISTORY.md, 2026-12-08): the serial
            # collector's young pauses are short there, and G1's concurrent threads cost CPU.
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            f"{libs}/*",
        ]

    def refuse_held_ports(self) -> None:
        """Refuse (:class:`OperatorError`) a node that is not running whose port (client or
        controller) another program holds: asked before anything starts, fetched or formats."""
        for node in self._nodes:
            if self._pid(node) is None:
                self._refuse_held(node)

    def _refuse_held(self, node: _Node) -> None:
        busy = [port for port in (node.port, node.controller_port) if port_open(port)]
        if busy:
            raise OperatorError(
                f"port {busy[0]} is in use by a program other than Kafka node {node.index} of "
                f"{self.base_dir}: stop it, or name a running Kafka in KAFKA_BOOTSTRAP_SERVERS"
            )

    def _launch(self, node: _Node, libs: Path) -> None:
        self._refuse_held(node)
        heap = ("512m", "256m") if self.nodes == 1 else ("384m", "128m")
        self._log_starts[node.index] = size(node.logfile)
        with node.logfile.open("ab") as log:
            proc = subprocess.Popen(
                [*self._java(libs, heap), "kafka.Kafka", str(node.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node.home,
                start_new_session=True,
            )
        self._procs[node.index] = proc
        node.pidfile.write_text(f"{proc.pid}\n")

    def _pid(self, node: _Node) -> int | None:
        """The pid of this node's JVM if it is running, else None (stale pidfiles removed).

        A JVM this object launched is known by its process handle, whatever its pidfile
        says: a failed start's cleanup removes pidfiles, and ``stop()`` must still end it.
        The pidfile finds one that another process launched (``start()`` reuses it)."""
        proc = self._procs.get(node.index)
        if proc is not None:
            if proc.poll() is None:
                return proc.pid
            node.pidfile.unlink(missing_ok=True)
            return None
        try:
            pid = int(node.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _is_process(pid, " kafka.Kafka ", str(node.config)):
            return pid
        node.pidfile.unlink(missing_ok=True)
        return None

    def _terminate(self, index: int, pid: int, grace: float) -> None:
        """Wait up to ``grace`` seconds for an already SIGTERM'd node, then SIGKILL it."""
        if not self._wait_exit(index, pid, grace):
            _signal(pid, signal.SIGKILL)
            self._wait_exit(index, pid, 10.0)

    def _wait_exit(self, index: int, pid: int, timeout: float) -> bool:
        proc = self._procs.get(index)
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout=max(timeout, 0.0))
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _is_process(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True


_PROBE_GROUP = "caravan-ready"  # a group no consumer joins: only its coordinator is asked


async def _broker_ids(bootstrap: str, time_limit: float, scram: Scram | None) -> set[int]:
    """The live brokers' ids; raises while no group coordinator serves (see wait_ready)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(int(time_limit * 1000), 1000),
        **(client_kwargs(scram.client_settings()) if scram else {}),
    )
    try:
        async with asyncio.timeout(time_limit):
            await admin.start()
            info = await admin.describe_cluster()
            await admin.find_coordinator(_PROBE_GROUP)  # raises until a coordinator serves
    finally:
        await admin.close()
    return {int(broker["node_id"]) for broker in info["brokers"]}


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion on a fresh event loop in a worker thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _kafka_uuid() -> str:
    """A random id in Kafka's Uuid text form (url-safe base64, no padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids these too: they look like CLI flags
            return text


def _is_process(pid: int, *cmdline_parts: str) -> bool:
    """Whether ``pid`` is a live (non-zombie) process whose command line has all the parts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return sys.platform != "linux"
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and all(part in cmdline for part in cmdline_parts)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (serialises concurrent launchers)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
