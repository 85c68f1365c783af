"""Bringing the whole system up: infrastructure, topics, schemas and the four services.

Used by ``caravan up`` and by the test session alike, so both run the same way.
Infrastructure comes from (in order): ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` when
set; testcontainers when a Docker engine answers; otherwise a Kafka broker and a
PostgreSQL cluster that the project runs itself from ``.cache/``.
"""

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from caravan.infra.kafka import LocalKafka
from caravan.infra.postgres import LocalPostgres
from shared.db.migrate import upgrade
from shared.messaging.admin import ensure_topics

REPO_ROOT = Path(__file__).resolve().parents[1]
AUTH_MIGRATIONS = REPO_ROOT / "shared" / "auth" / "migrations"
CACHE = REPO_ROOT / ".cache"
SERVICES = ("orders", "inventory", "payments", "notifications")
HTTP_PORT_VARS = (
    "CARAVAN_HTTP_PORT",
    "CARAVAN_INVENTORY_HTTP_PORT",
    "CARAVAN_PAYMENTS_HTTP_PORT",
    "CARAVAN_NOTIFICATIONS_HTTP_PORT",
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

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            stop()
        self.stoppers.clear()


def docker_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def start_infrastructure(
    base_dir: Path = CACHE,
    kafka_port: int = 9092,
    postgres_port: int = 54329,
    kafka_nodes: int = 1,
) -> Infrastructure:
    """Start (or reuse) what ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` do not name."""
    infra = Infrastructure("", "", "external", "external")
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    env_db = os.environ.get("DATABASE_URL")
    docker = (env_kafka is None or env_db is None) and docker_available()
    try:
        if env_kafka:
            infra.kafka_bootstrap = env_kafka
        elif docker:
            infra.kafka_bootstrap = _kafka_container(infra)
            infra.kafka_path = "testcontainers"
        else:
            kafka = LocalKafka(
                base_dir / f"kafka-{kafka_port}", nodes=kafka_nodes, first_port=kafka_port
            )
            infra.stoppers.append(kafka.stop)
            infra.kafka_bootstrap = _start_kafka(kafka)
            infra.local_kafka = kafka
            infra.kafka_path = f"local ({kafka_nodes} node{'s' if kafka_nodes > 1 else ''})"
        if env_db:
            infra.database_url = env_db
        elif docker:
            infra.database_url = _postgres_container(infra)
            infra.postgres_path = "testcontainers"
        else:
            pg = LocalPostgres(base_dir / f"postgres-{postgres_port}", port=postgres_port)
            infra.stoppers.append(pg.stop)
            infra.database_url = pg.start()
            infra.local_postgres = pg
            infra.postgres_path = "local"
    except BaseException:
        infra.stop()
        raise
    return infra


def _start_kafka(kafka: LocalKafka, attempts: int = 3) -> str:
    """Start the local broker and wait until it serves; start it again if it exits while
    starting up (a starved JVM has been seen to fail its own startup on a loaded machine)."""
    for attempt in range(1, attempts + 1):
        bootstrap = kafka.start()
        try:
            kafka.wait_ready()
            return bootstrap
        except RuntimeError:
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


async def prepare(bootstrap: str, database_url: str, partitions: int = 3, rf: int = 1) -> None:
    """Create the topics and migrate every service's schema (idempotent)."""
    await ensure_topics(bootstrap, partitions, rf)
    # auth before ops: ops' second migration moves its records into auth.audit.
    for folder in [REPO_ROOT / "services" / name / "migrations" for name in SERVICES] + [
        AUTH_MIGRATIONS,
        REPO_ROOT / "caravan" / "ops" / "migrations",
    ]:
        await asyncio.to_thread(upgrade, folder, _asyncpg(database_url))


def _asyncpg(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


@dataclass
class ServiceProcesses:
    """The four services, each its own process, started with the given environment."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, names: tuple[str, ...] = SERVICES, instance: int = 1) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            key = name if instance == 1 else f"{name}-{instance}"
            env = {**self.env, "CARAVAN_INSTANCE_ID": str(instance)}
            if instance != 1:
                env.update(dict.fromkeys(HTTP_PORT_VARS, "0"))
            log = (self.log_dir / f"{key}.log").open("ab")
            self.procs[key] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"service {name} exited with {proc.returncode}; see {self.log_dir / name}.log"
                )

    def stop(self, names: list[str] | None = None, timeout: float = 15.0) -> None:
        chosen = names or list(self.procs)
        for name in chosen:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in chosen:
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def service_env(infra: Infrastructure, http_port: int, **extra: str) -> dict[str, str]:
    """The environment of the services: the orders API on ``http_port``, the admin APIs of
    inventory, payments and notifications on the three ports after it."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "DATABASE_URL": infra.database_url,
        "PYTHONUNBUFFERED": "1",
    }
    env.update({var: str(http_port + i) for i, var in enumerate(HTTP_PORT_VARS)})
    # One secret for every notifications instance: the gateway may call back any of them.
    env.setdefault("CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET", secrets.token_urlsafe(24))
    env.update(extra)
    return env


def wait_ready(procs: ServiceProcesses, timeout: float = 120.0) -> None:
    """Wait until every started service answers ``/healthz`` (failing early if one died)."""
    ports = {
        name: int(procs.env[var])
        for name, var in zip(SERVICES, HTTP_PORT_VARS, strict=True)
        if name in procs.procs
    }
    deadline = time.monotonic() + timeout
    while ports and time.monotonic() < deadline:
        procs.check_alive()
        for name, port in list(ports.items()):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    del ports[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    if ports:
        raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(ports)}")
