"""``caravan status`` against the running system: what an operator in a terminal (or a
script, by its exit code) reads of it in one look."""

import asyncio
import json
import os
import signal

from caravan import system
from caravan.infra.ports import answers
from services import SERVICES
from shared.topics import consumer_group
from tests.e2e.test_ops import cli
from tests.harness import System, until

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
