"""``caravan demo`` stopped (Ctrl-C, or a supervisor's SIGTERM) while it follows its orders:
it ended saying nothing (SIGTERM at once, Ctrl-C with exit 130), so whoever stopped it did not
know what it had sent. It says so in one line, and still stops at once."""

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from caravan import system
from caravan.checkout import REPO_ROOT
from shared.topics import Topic
from tests.harness import System

ORDERS = 5
STOPPED_WITHIN = 10.0  # seconds: at once, on a machine shared by other runs


def demo_requests(caravan: System, before: set[str]) -> set[str]:
    """The refs of the demo's order requests in Kafka, but ``before``."""
    refs = {str(e.data.get("order_ref")) for e in caravan.log.events(Topic.ORDER_REQUESTS)}
    return {r for r in refs if r.startswith("DEMO-")} - before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_demo_stopped_says_what_it_sent_and_saw_end(
    caravan: System, sig: signal.Signals
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": caravan.infra.kafka_bootstrap,
        "DATABASE_URL": caravan.infra.database_url,
        "CARAVAN_TOKEN": caravan.token,
    }
    before = demo_requests(caravan, set())
    # The orders service stopped: no order of the demo ends, and it waits for them.
    await asyncio.to_thread(caravan.procs.stop, ["orders"])
    try:
        demo = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "caravan", "demo", "--orders", str(ORDERS)),
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        await caravan.until(
            lambda: demo_requests(caravan, before),
            "the demo's orders in Kafka",
            timeout=60,
            ready=lambda sent: len(sent) == ORDERS or demo.returncode is not None,
        )
        demo.send_signal(sig)
        out, err = await asyncio.wait_for(demo.communicate(), STOPPED_WITHIN)
    finally:
        caravan.procs.start(("orders",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)
    said = out.decode().splitlines()
    assert f"stopped: {ORDERS} of {ORDERS} orders sent; ended so far: none" in said, (
        said,
        err.decode(),
    )
    assert demo.returncode == 130, err.decode()
