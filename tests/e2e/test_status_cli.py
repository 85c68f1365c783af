"""``caravan status`` against the running system: what an operator in a terminal (or a
script, by its exit code) reads of it in one look."""

import asyncio
import json
import os
import signal
import subprocess
import sys

from sqlalchemy.engine import make_url

from caravan import system
from caravan.checkout import REPO_ROOT
from caravan.infra.ports import answers
from services import SERVICES
from shared.topics import consumer_group
from tests.e2e.test_ops import cli
from tests.harness import System, free_port, until

ELSEWHERE = ("dead letter(s) waiting", "order(s) pending over")
"""What earlier tests of the session may have left wrong: not the services' state."""


async def test_status_says_each_service_up_and_a_frozen_one_wrong_exiting_1(
    caravan: System,
) -> None:
    """No one command said the state of the system: an operator over ssh had the operations
    page (a browser), ``/healthz`` one service at a time, and ``caravan stuck``. A service
    frozen (``kill -STOP``) is said frozen, with what that means, and the exit code says
    something is wrong."""
    ports = {var: caravan.procs.env[var] for var in system.HTTP_PORT_VARS}
    done = await cli(caravan, "status", **ports)
    shown = done.stdout.splitlines()
    assert shown[0].startswith("status at 20"), done.stdout + done.stderr
    for service in SERVICES:
        assert f"  {service:<13}  up" in shown, done.stdout
    assert "Kafka: ok" in shown and "PostgreSQL: ok" in shown, done.stdout
    wrong = [line for line in shown if line.startswith("  ") and any(w in line for w in ELSEWHERE)]
    assert done.returncode == (1 if wrong else 0), done.stdout + done.stderr
    assert ("all well" in shown) == (not wrong), done.stdout

    done = await cli(caravan, "status", "--json", **ports)
    body = json.loads(done.stdout)
    assert {s: body["services"][s]["state"] for s in SERVICES} == dict.fromkeys(SERVICES, "up")
    assert set(body["consumer_lag"]) == {consumer_group(s) for s in SERVICES}, body
    assert set(body["outbox_waiting"]) == set(SERVICES) and body["kafka"] == "ok", body
    assert isinstance(body["pending"], int) and isinstance(body["dead_letters_waiting"], dict)
    assert body["ok"] == (done.returncode == 0), body

    pid = caravan.procs.procs["inventory"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        done = await cli(caravan, "status", **ports)
    finally:
        os.kill(pid, signal.SIGCONT)
        port = caravan.port("inventory")
        await until(lambda: asyncio.to_thread(answers, port), "inventory thawed", timeout=60)
    shown = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    frozen = (
        "frozen: took the connection and answered nothing within 5 s: its process alive but held"
        " (kill -STOP, swapped out, its event loop blocked), which caravan up does not start"
        " again; look at it with ps -o pid,stat,etime,args -p PID"
    )
    assert f"  inventory      {frozen}" in shown, done.stdout
    said = shown[next(i for i, line in enumerate(shown) if line.startswith("wrong (")) + 1 :]
    assert [line for line in said if not any(w in line for w in ELSEWHERE)] == [
        "  inventory frozen"
    ], done.stdout
    assert "  orders         up" in shown, done.stdout


async def test_with_no_service_answering_postgresql_is_asked_directly_and_said_up_or_why_not(
    infrastructure: system.Infrastructure,
) -> None:
    """Every service down, ``caravan status`` said ``PostgreSQL: unknown: no service answered
    /healthz`` with the database up and with it down alike: the operator looking for why was
    told nothing. It asks PostgreSQL itself then (one ``SELECT 1``): ok, or why not and where,
    never the password."""
    infra = infrastructure
    env = {
        **os.environ,
        **infra.kafka_env,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "DATABASE_URL": infra.database_url,
        "CARAVAN_TOKEN": "cvn_" + "s" * 43,  # never checked: no service answers
        **{var: str(free_port()) for var in system.HTTP_PORT_VARS},  # nothing listens there
        "COLUMNS": "200",
    }

    def status(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "caravan", "status", *args]
        run = subprocess.run
        return run(command, env={**env, **more}, capture_output=True, text=True, cwd=REPO_ROOT)

    done = await asyncio.to_thread(status)
    shown = done.stdout.splitlines()
    assert "PostgreSQL: ok (asked directly)" in shown, done.stdout + done.stderr
    assert done.returncode == 1 and "  orders down" in shown, done.stdout  # the services are
    assert not [line for line in shown if line.startswith("  PostgreSQL")], done.stdout
    done = await asyncio.to_thread(status, "--json")
    assert json.loads(done.stdout)["postgresql"] == "ok (asked directly)", done.stdout

    port = free_port()
    closed = make_url(infra.database_url).set(host="127.0.0.1", port=port, query={})
    url = closed.render_as_string(hide_password=False)
    done = await asyncio.to_thread(status, DATABASE_URL=url)
    shown = done.stdout.splitlines()
    said = f"cannot reach PostgreSQL at 127.0.0.1:{port} (Connection refused)"
    assert f"PostgreSQL: {said}" in shown, done.stdout + done.stderr
    assert f"  PostgreSQL: {said}" in shown and done.returncode == 1, done.stdout
    assert f":{closed.password}@" not in done.stdout, done.stdout
    done = await asyncio.to_thread(status, "--json", DATABASE_URL=url)
    body = json.loads(done.stdout)
    assert body["postgresql"] == said and f"PostgreSQL: {said}" in body["wrong"], body
