"""The test session's system: real Kafka and real PostgreSQL, started once, and the five
services as separate processes, exactly as ``caravan up`` runs them (on other ports)."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from sqlalchemy import make_url
from xdist.remote import Producer
from xdist.scheduler.protocol import Scheduling
from xdist.workermanage import WorkerController

from caravan import system
from caravan.checkout import CACHE
from caravan.seeding import load_again
from caravan.tokens_cli import issue_token
from shared import days
from shared.auth.scopes import SCOPES
from shared.db.engine import REFUSALS
from shared.seed import SeedFile
from tests.harness import EventLog, System, market_zone_far_from_midnight
from tests.workers import LoadFileOnEveryWorker

# Every property test's hypothesis settings: no deadline on an example (200 ms by default),
# which a loaded machine (CI at load 10-25 on two cores) passes in examples that prove nothing
# of the code (DeadlineExceeded, or Flaky when the example ran fast again). Loaded here, before
# any test module is imported: a module's @settings takes the rest from the loaded profile, the
# one hypothesis loaded itself (``ci`` where CI is set: derandomized, no database) kept.
settings.register_profile("caravan", settings.default, deadline=None)
settings.load_profile("caravan")

# Ports of the test session (overridable, so that sessions can run side by side). Each
# pytest-xdist worker is a session of its own: worker gwN moves all three by N * 1500 (gw0
# and a run without workers keep them), clear of a Kafka port's controller one thousand above.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
WORKER_PORT_STEP = 1500
KAFKA_PORT = int(os.environ.get("CARAVAN_TEST_KAFKA_PORT", "28092")) + WORKER * WORKER_PORT_STEP
POSTGRES_PORT = (
    int(os.environ.get("CARAVAN_TEST_POSTGRES_PORT", "15433")) + WORKER * WORKER_PORT_STEP
)
HTTP_PORT = int(os.environ.get("CARAVAN_TEST_HTTP_PORT", "18080")) + WORKER * WORKER_PORT_STEP
# Ports of servers a test module starts of its own (a broker, a PostgreSQL, services, a page,
# simulators), as offsets above the session's port of their kind: an offset is one user's, so
# that no test meets another's server, still stopping or left frozen, where it looks for its
# own, nor fails to bind. A broker's controller listens 1000 above its port. A module takes
# its first port with own_port(kind, __name__); tests/unit/test_test_session.py checks that no
# two users share a port and that no test adds to the session's ports but here.
OWN_PORTS: dict[str, dict[str, range]] = {
    "kafka": {
        "the session": range(1),
        "tests.e2e.test_up_command": range(1, 2),
        "tests.e2e.test_relay_stop": range(2, 3),
        "tests.e2e.test_commit_without_coordinator": range(3, 4),
        "tests.e2e.test_demo_stopped": range(4, 5),
        "tests.e2e.test_relay_kafka_silent": range(5, 6),
        "tests.e2e.test_kafka_sasl": range(6, 7),
    },
    "postgres": {"the session": range(1), "tests.e2e.test_up_command": range(1, 2)},
    "http": {
        "the session": range(len(system.HTTP_PORT_VARS)),  # the five services
        "tests.e2e.test_health_stalls": range(5, 6),  # an operations page
        "tests.e2e.test_processes": range(10, 11),  # an operations page
        "tests.e2e.test_auth": range(11, 12),  # an operations page
        "tests.e2e.test_db_errors": range(12, 13),  # an operations page
        "tests.e2e.test_platform": range(13, 17),  # the platform simulators
        "tests.e2e.test_ops": range(17, 18),  # an operations page
        "tests.e2e.test_up_command": range(20, 26),  # caravan up's five services and its page
        "tests.e2e.test_kafka_sasl": range(30, 35),  # its five services
    },
}


RUNS_APART = 40
"""How far apart two test runs side by side (two checkouts) give their ports of each kind, at
least (docs/running.md): above the most any kind's ``OWN_PORTS`` reach (HTTP's 34), with room
for a test to add a port; tests/unit/test_test_session.py checks two runs so far apart, each
with its second worker and its brokers' controllers, share no port."""


def own_port(kind: str, user: str) -> int:
    """The first port ``OWN_PORTS`` gives ``user`` (a module's ``__name__``) of ``kind``."""
    session = {"kafka": KAFKA_PORT, "postgres": POSTGRES_PORT, "http": HTTP_PORT}[kind]
    return session + OWN_PORTS[kind][user].start


# The market's calendar of the session, far from its midnight for the whole run; a worker
# takes the one of the run that started it (pytest_configure).
MARKET_ZONE = market_zone_far_from_midnight(datetime.now(UTC))


@pytest.fixture(autouse=True)
def no_refusal_met() -> Iterator[None]:
    """Each test starts and ends with no refusal of PostgreSQL's met in this process
    (``REFUSALS``, which ``/healthz`` says for a while): a fault one test met would make
    another's ``/healthz`` degraded."""
    REFUSALS.latest = None
    yield
    REFUSALS.latest = None


def pytest_configure(config: pytest.Config) -> None:
    """The session's market zone (CARAVAN_MARKET_TIMEZONE), for this process and for every
    one it starts (the services take this environment): "today" is the same day for both,
    and for every worker of the run."""
    global MARKET_ZONE
    # Importing readline (done by now) exported COLUMNS=80 and LINES=24 to every process
    # started after, pytest-xdist's workers too, though not to os.environ: their tables would
    # be cut to 80 columns where this process's are not (tests/unit/test_output.py).
    for name in ("COLUMNS", "LINES"):
        if name not in os.environ:
            os.unsetenv(name)
    MARKET_ZONE = getattr(config, "workerinput", {}).get("market_zone", MARKET_ZONE)
    os.environ["CARAVAN_MARKET_TIMEZONE"] = MARKET_ZONE
    days.market_zone.cache_clear()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: WorkerController) -> None:
    """Each pytest-xdist worker's market zone: this run's."""
    node.workerinput["market_zone"] = MARKET_ZONE


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> Scheduling | None:
    """Whole files to each worker (tests/workers.py); the money checks on every one."""
    if config.getoption("dist") != "loadfile":
        return None
    return LoadFileOnEveryWorker(config, log, ["tests/e2e/test_zz_payments_ledger.py"])


def test_seed() -> SeedFile:
    """Reference data of the test session: each scenario has SKUs and buyers of its own."""
    today = days.today()
    year = timedelta(days=365)
    return SeedFile.model_validate(
        {
            "sellers": [
                {
                    "id": "t-seller-1",
                    "name": "Test coop",
                    "county": "Shawan",
                    "phone": "+8613000009001",
                }
            ],
            "products": [
                {
                    "sku": sku,
                    "seller_id": "t-seller-1",
                    "unit_price_fen": price,
                    "name": {"en": sku},
                }
                for sku, price in [
                    ("T-PEPPER", 3500),
                    ("T-RAISIN", 2800),
                    ("T-SCARCE", 1000),
                    ("T-FIG", 1500),
                    ("T-HONEY", 9000),
                ]
            ],
            "lots": [
                {
                    "lot_id": "T-PEP-1",
                    "sku": "T-PEPPER",
                    "quantity": 100000,
                    "available_from": str(today - year),
                    "best_before": str(today + year),
                },
                {
                    "lot_id": "T-RSN-1",
                    "sku": "T-RAISIN",
                    "quantity": 100000,
                    "available_from": str(today - year),
                    "best_before": str(today + year),
                },
                {
                    "lot_id": "T-SCR-1",
                    "sku": "T-SCARCE",
                    "quantity": 5,
                    "available_from": str(today - year),
                    "best_before": str(today + year),
                },
                {
                    "lot_id": "T-FIG-1",
                    "sku": "T-FIG",
                    "quantity": 100,
                    "available_from": str(today - 2 * year),
                    "best_before": str(today - year),
                },
                {
                    "lot_id": "T-HNY-1",
                    "sku": "T-HONEY",
                    "quantity": 1000,
                    "available_from": str(today - year),
                    "best_before": str(today + year),
                },
            ],
            "buyers": [
                {
                    "id": "t-rich",
                    "phone": "+8613900000001",
                    "locale": "en",
                    "credit_limit_fen": 10**9,
                },
                {
                    "id": "t-poor",
                    "phone": "+8613900000002",
                    "locale": "ug-CN",
                    "credit_limit_fen": 5000,
                },
                {
                    "id": "t-zh",
                    "phone": "+8613900000003",
                    "locale": "zh-CN",
                    "credit_limit_fen": 10**9,
                },
            ],
        }
    )


_PATHS: list[str] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker's infrastructure, for the summary of the run that started it."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["infrastructure"] = _PATHS


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: WorkerController) -> None:
    _PATHS.extend(getattr(node, "workeroutput", {}).get("infrastructure", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(f"market zone of this session: {MARKET_ZONE}")
    for line in _PATHS:
        terminalreporter.write_line(f"infrastructure used by this session: {line}")


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[system.Infrastructure]:
    infra = system.start_infrastructure(
        base_dir=CACHE / f"test-{KAFKA_PORT}",
        kafka_port=KAFKA_PORT,
        postgres_port=POSTGRES_PORT,
    )
    database = make_url(infra.database_url).render_as_string(hide_password=True)
    _PATHS.append(
        f"Kafka: {infra.kafka_path} at {infra.kafka_bootstrap},"
        f" PostgreSQL: {infra.postgres_path} at {database}, services' HTTP from {HTTP_PORT}"
    )
    try:
        yield infra
    finally:
        infra.stop()


@pytest.fixture(scope="session")
async def caravan(infrastructure: system.Infrastructure) -> AsyncIterator[System]:
    """The whole system, with the test seed loaded and every topic recorded from the start."""
    infra = infrastructure
    await system.prepare(infra.kafka_bootstrap, infra.database_url)
    await load_again(infra.database_url, test_seed())
    token = await issue_token(
        infra.database_url, f"test-session-{uuid.uuid4().hex[:6]}", list(SCOPES)
    )
    procs = system.ServiceProcesses(
        # CARAVAN_TOKEN: for what runs with the services' environment (CLI, operations page).
        system.service_env(
            infra,
            HTTP_PORT,
            CARAVAN_ENVIRONMENT="test",
            CARAVAN_TOKEN=token,
            # The broker's least: a service killed or frozen hands its partitions on 4 s
            # sooner than Kafka's 10 s, in each test that kills or freezes one.
            CARAVAN_CONSUMER_SESSION_TIMEOUT_MS="6000",
        ),
        CACHE / f"test-{KAFKA_PORT}" / f"logs-{uuid.uuid4().hex[:6]}",
    )
    log = EventLog(infra.kafka_bootstrap)
    await log.start()
    procs.start()
    try:
        await asyncio.to_thread(system.wait_ready, procs)
        sys_ = System(infra, procs, log, f"http://127.0.0.1:{HTTP_PORT}", token)
        await sys_.start()
        try:
            yield sys_
            procs.check_alive()
        finally:
            await sys_.stop()
    finally:
        procs.stop()
        await log.stop()


@pytest.fixture(scope="module")
async def no_payments(caravan: System) -> AsyncIterator[System]:
    """The system with the payments service stopped: no hold is ever paid for (an order's
    stock stays held), for the tests of a module."""
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        yield caravan
    finally:
        caravan.procs.start(("payments",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)
