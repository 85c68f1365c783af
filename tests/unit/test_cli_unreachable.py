"""A ``caravan`` command that cannot reach Kafka, PostgreSQL or a service's HTTP API says so
in one line and exits 2, instead of printing a traceback (here: a port nothing listens on)."""

import os
import socket
import subprocess
import sys

import pytest

from caravan import system


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # free once closed: nothing listens there


def caravan(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caravan", *args],
        env={**os.environ, "CARAVAN_TOKEN": "cvn_" + "x" * 43, **env},
        capture_output=True,
        text=True,
        cwd=system.REPO_ROOT,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (("dlq", "list"), "KAFKA_BOOTSTRAP_SERVERS", "cannot reach Kafka at 127.0.0.1:{port}"),
        (("tokens", "list"), "DATABASE_URL", "cannot reach PostgreSQL"),
        (("stuck",), "CARAVAN_HTTP_PORT", "orders API unreachable"),
    ],
)
def test_an_unreachable_part_is_one_line_and_exit_2(
    args: tuple[str, ...], env: str, said: str
) -> None:
    port = closed_port()
    value = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "DATABASE_URL": f"postgresql+asyncpg://caravan:x@127.0.0.1:{port}/caravan",
        "CARAVAN_HTTP_PORT": str(port),
    }[env]
    done = caravan(*args, **{env: value})
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert said.format(port=port) in out, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
