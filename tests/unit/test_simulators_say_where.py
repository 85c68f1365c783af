"""The simulators of outside systems (``python -m services.<service>.simulator``) said nothing
when they started: whoever ran one by hand (docs/platform-adapter.md) could not tell that it
was up, nor where."""

import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from caravan.checkout import REPO_ROOT
from tests.harness import free_port

CALLBACK = "http://127.0.0.1:8084/platform/shop/push"


@pytest.mark.parametrize(
    ("module", "args", "said"),
    [
        (
            "services.platform.simulator",
            ("--app", "shop", "--secret", "s3cret", "--callback", CALLBACK),
            "platform simulator: listening on http://127.0.0.1:{port}"
            f" (app shop, pushing to {CALLBACK})",
        ),
        (
            "services.payments.simulator",
            (),
            "payment gateway simulator: listening on http://127.0.0.1:{port}",
        ),
        (
            "services.notifications.simulator",
            (),
            "SMS gateway simulator: listening on http://127.0.0.1:{port}",
        ),
        (  # it said http://0.0.0.0:{port}, no address to call (shared.addresses)
            "services.notifications.simulator",
            ("--host", "0.0.0.0"),
            f"SMS gateway simulator: listening on http://{socket.gethostname()}:{{port}}"
            " (all interfaces)",
        ),
    ],
)
def test_a_simulator_says_where_it_listens_once_it_does(
    module: str, args: tuple[str, ...], said: str
) -> None:
    with started(module, *args) as (port, line):
        assert line == said.format(port=port)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


@contextmanager
def started(
    module: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[int, str]]:
    """``python -m <module> --port <port> <args>`` (in ``env``, if given), for the block: its
    port and the first line it wrote, once it listens."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # The first line it writes, once it listens (within a minute: 2 busy cores).
        assert select.select([proc.stdout], [], [], 60)[0], "nothing said within 60 s"
        line = proc.stdout.readline().rstrip("\n")
        assert line, proc.stderr.read() if proc.stderr else None
        yield port, line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
