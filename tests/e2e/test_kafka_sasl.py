"""Kafka with SASL/SCRAM and ACLs: a separate local broker (started once in this module),
the five services each logged in as its own principal, in a database of their own."""

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from caravan import db_roles, kafka_acls, system
from caravan.checkout import CACHE
from caravan.infra.kafka import LocalKafka, Scram
from caravan.seeding import load
from caravan.tokens_cli import issue_token
from services import SERVICES
from shared.auth.scopes import SCOPES
from shared.kafka_security import client_kwargs
from shared.messaging import kafka_admin
from shared.messaging.relay import make_producer
from shared.settings import Settings
from shared.topics import Topic, consumer_group
from tests.conftest import KAFKA_PORT, own_port
from tests.conftest import test_seed as seed_data
from tests.e2e.test_saga import RICH, order
from tests.harness import EventLog, System, process_env, scratch_database

SASL_PORT = own_port("kafka", __name__)  # its controller one thousand above, as every broker's
SASL_HTTP_PORT = own_port("http", __name__)  # the five services of this module


@pytest.fixture(scope="module")
async def sasl(infrastructure: system.Infrastructure) -> AsyncIterator[tuple[System, Scram]]:
    """A SASL broker with the project's principals and ACLs, and the five services on it."""
    base = CACHE / f"test-{KAFKA_PORT}" / f"kafka-sasl-{SASL_PORT}"
    shutil.rmtree(base, ignore_errors=True)
    scram = system.local_scram()
    kafka = LocalKafka(base, first_port=SASL_PORT, scram=scram)
    async with scratch_database(infrastructure.database_url, "caravan_sasl") as url:
        procs: system.ServiceProcesses | None = None
        log: EventLog | None = None
        try:
            bootstrap = await asyncio.to_thread(kafka.start)
            await asyncio.to_thread(kafka.wait_ready)
            infra = system.Infrastructure(
                bootstrap, url, "local SASL", "local", kafka_env=system.scram_env(scram)
            )
            await system.prepare(bootstrap, url, settings=scram.client_settings())
            await load(url, seed_data())
            procs = system.ServiceProcesses(
                system.service_env(infra, SASL_HTTP_PORT, CARAVAN_ENVIRONMENT="test"),
                base / f"logs-{uuid.uuid4().hex[:6]}",
            )
            log = EventLog(bootstrap, settings=scram.client_settings())
            await log.start()
            procs.start()
            await asyncio.to_thread(system.wait_ready, procs)
            token = await issue_token(url, f"sasl-test-{uuid.uuid4().hex[:6]}", list(SCOPES))
            caravan = System(
                infra,
                procs,
                log,
                f"http://127.0.0.1:{SASL_HTTP_PORT}",
                token,
                scram.client_settings(),
            )
            await caravan.start()
            try:
                yield caravan, scram
                procs.check_alive()
            finally:
                await caravan.stop()
        finally:
            if procs is not None:
                procs.stop()
            if log is not None:
                await log.stop()
            kafka.stop()


def as_user(scram: Scram, user: str, password: str | None = None) -> Settings:
    settings = scram.client_settings(user)
    if password is not None:
        settings = settings.model_copy(update={"kafka_password": SecretStr(password)})
    return settings


async def list_topics(bootstrap: str, **kwargs: object) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **kwargs)
    try:
        async with asyncio.timeout(20):
            await admin.start()
            return list(await admin.list_topics())
    finally:
        await admin.close()


async def test_on_a_new_broker_the_services_find_their_group_coordinator_at_once(
    sasl: tuple[System, Scram],
) -> None:
    """The broker counts as ready only once a group coordinator answers (the first ask
    creates the offsets topic); services started before that logged
    ``GroupCoordinatorNotAvailableError`` at the error level, on every new cluster."""
    caravan, _ = sasl
    logs = sorted(caravan.procs.log_dir.glob("*.log"))  # a file per process
    assert len(logs) == len(caravan.procs.procs), logs
    for path in logs:
        lines = path.read_text(errors="replace").splitlines()
        assert lines, path  # each logged its start
        assert not [line for line in lines if "GroupCoordinatorNotAvailable" in line], path


async def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(
    sasl: tuple[System, Scram],
) -> None:
    caravan, scram = sasl
    bootstrap = caravan.infra.kafka_bootstrap
    with pytest.raises((KafkaError, TimeoutError)):
        await list_topics(bootstrap)  # PLAINTEXT: no credentials at all
    wrong = as_user(scram, kafka_acls.principal("orders"), "not-the-password")
    with pytest.raises((KafkaError, TimeoutError)):
        await list_topics(bootstrap, **client_kwargs(wrong))
    # The same client with the right password gets in (and sees only what its ACLs allow).
    right = as_user(scram, kafka_acls.principal("orders"))
    seen = set(await list_topics(bootstrap, **client_kwargs(right)))
    assert Topic.ORDER_REQUESTS.value in seen
    assert Topic.NOTIFICATION_EVENTS.value not in seen


async def test_a_service_principal_writes_reads_and_describes_only_where_its_acls_allow(
    sasl: tuple[System, Scram],
) -> None:
    caravan, scram = sasl
    bootstrap = caravan.infra.kafka_bootstrap
    orders = as_user(scram, kafka_acls.principal("orders"))
    producer = make_producer(bootstrap, "caravan-test-acl", settings=orders)
    await producer.start()
    try:
        sent = await producer.send_and_wait(Topic.ORDER_REQUESTS.dlq, b"allowed", key=b"acl")
        assert sent.offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(Topic.PAYMENT_EVENTS.value, b"denied", key=b"acl")
    finally:
        await producer.stop()
    # Reading with another service's consumer group is refused too.
    consumer = AIOKafkaConsumer(
        Topic.ORDER_REQUESTS.value,
        bootstrap_servers=bootstrap,
        group_id=consumer_group("payments"),
        **client_kwargs(orders),
    )
    with pytest.raises(GroupAuthorizationFailedError):
        await consumer.start()
        async with asyncio.timeout(20):
            await consumer.getone()
    await consumer.stop()
    # How long Kafka keeps the topics it reads and their dead letters (its inbox retention
    # needs it), no others'.
    reads = [t.value for t in kafka_acls.access()["orders"].reads]
    assert await kafka_admin.longest_kept_hours(bootstrap, reads, orders) == 14 * 24
    dlq = [t.dlq for t in kafka_acls.access()["orders"].reads]
    assert await kafka_admin.longest_kept_hours(bootstrap, dlq, orders) == 37 * 24
    with pytest.raises(TopicAuthorizationFailedError):
        await kafka_admin.longest_kept_hours(bootstrap, [Topic.NOTIFICATION_EVENTS.value], orders)


async def test_the_services_run_an_order_to_confirmation_each_as_its_own_principal(
    sasl: tuple[System, Scram],
) -> None:
    caravan, scram = sasl
    req = order(RICH, {"T-PEPPER": 1})
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    outcome = await caravan.outcome(order_id)
    assert outcome.type == "order.confirmed"
    sms = await caravan.wait_for(
        lambda: caravan.log.events(Topic.NOTIFICATION_EVENTS, type="sms.sent", order_id=order_id)
    )
    assert sms[0].data["to"] in {RICH.phone, "+8613000009001"}
    # Each service process runs with its own principal and database role, and nobody else's.
    for name in SERVICES:
        env = process_env(caravan.procs.procs[name].pid)
        assert env["CARAVAN_KAFKA_USERNAME"] == kafka_acls.principal(name)
        assert env["CARAVAN_KAFKA_PASSWORD"] == scram.users[kafka_acls.principal(name)]
        assert make_url(env["DATABASE_URL"]).username == db_roles.service_role(name)
        assert not any(k.startswith("CARAVAN_DATABASE_URL_") for k in env)


async def test_services_in_two_processes_log_in_each_as_its_own_principal(
    sasl: tuple[System, Scram],
) -> None:
    caravan, scram = sasl
    async with caravan.in_processes(2):
        req = order(RICH, {"T-PEPPER": 1})
        await caravan.request(req)
        order_id = await caravan.placed(req.order_ref)
        assert (await caravan.outcome(order_id)).type == "order.confirmed"
        # A host has no login of its own (nor the admin's): each hosted service's password,
        # which it logs in with as its own principal (the ACLs refuse any other).
        for key, proc in caravan.procs.procs.items():
            env = process_env(proc.pid)
            assert not set(system.ADMIN_CREDENTIALS) & set(env)
            hosted = {
                f"CARAVAN_KAFKA_PASSWORD_{name.upper()}": name
                for name in caravan.procs.services([key])
            }
            assert {k for k in env if k.startswith("CARAVAN_KAFKA_PASSWORD_")} == set(hosted)
            for variable, name in hosted.items():
                assert env[variable] == scram.users[kafka_acls.principal(name)]
        # What the orders API builds with settings of its own works without the process's.
        async with caravan.api("orders") as client:
            assert (await client.get("/asyncapi.json")).status_code == 200
