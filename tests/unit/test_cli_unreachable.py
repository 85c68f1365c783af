"""A ``caravan`` command that cannot reach Kafka, PostgreSQL or a service's HTTP API says so
in one line and exits 2, instead of printing a traceback (here: a port nothing listens on, or
one that never answers)."""

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from caravan.checkout import REPO_ROOT
from tests.harness import free_port, serving


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers a word: a hung or stopped server, a
    half-open firewall, a load balancer whose backend is gone. (The kernel completes the
    handshakes into the listening socket's backlog; nobody reads them.)"""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


@contextlib.contextmanager
def timed_silent_port() -> Iterator[tuple[int, list[tuple[float, float]]]]:
    """A :func:`silent_port` that takes each connection and reads it, still never answering,
    and when each was taken and when its client closed it (``time.monotonic()``), listed by
    the block's end: how long a client waited for an answer, whatever its start took."""
    held: list[tuple[float, float]] = []
    stop = threading.Event()

    def take(server: socket.socket) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = server.accept()
                with conn, contextlib.suppress(OSError):
                    taken = time.monotonic()
                    conn.settimeout(60)
                    while conn.recv(4096):
                        pass
                held.append((taken, time.monotonic()))

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(0.1)
        thread = threading.Thread(target=take, args=(server,), daemon=True)
        thread.start()
        try:
            yield int(server.getsockname()[1]), held
        finally:
            stop.set()
            thread.join(60)


def caravan(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caravan", *args],
        env={**os.environ, "CARAVAN_TOKEN": "cvn_" + "x" * 43, **env},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
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
    port = free_port()
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


def test_a_postgresql_that_never_answers_is_one_line_and_exit_2_after_the_connect_timeout() -> None:
    """It waited asyncpg's own connect timeout, a minute, and then printed a 200-line traceback
    ending in a bare ``TimeoutError``."""
    with timed_silent_port() as (port, held):
        done = caravan(
            "tokens",
            "list",
            DATABASE_URL=f"postgresql://u:p@127.0.0.1:{port}/x",
            CARAVAN_DB_CONNECT_TIMEOUT_SECONDS="1",
        )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert done.stderr.startswith(
        f"cannot reach PostgreSQL: PostgreSQL at 127.0.0.1:{port} did not answer within 1 s. "
    ), out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    # It gave up a second after connecting, not a minute: timed from its connection, not from
    # the command's start (a Python process starting, which a loaded machine slows).
    assert held and held[-1][1] - held[0][0] < 10, held


def test_a_postgresql_host_that_does_not_resolve_is_one_line_and_exit_2() -> None:
    """It printed a traceback ending in ``socket.gaierror``. (A resolver slower than the
    connect timeout says "did not answer" instead: either way, which host.)"""
    done = caravan(
        "tokens",
        "list",
        DATABASE_URL="postgresql://u:p@nowhere.invalid/x",
        CARAVAN_DB_CONNECT_TIMEOUT_SECONDS="2",
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert done.stderr.startswith("cannot reach PostgreSQL: PostgreSQL at nowhere.invalid:5432"), (
        out
    )
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize(("status", "exit_code"), [(502, 2), (504, 2), (500, 1)])
def test_an_answer_that_is_not_json_is_one_line_exit_2_from_a_gateway_saying_away(
    status: int, exit_code: int
) -> None:
    """A proxy's error page or a bare 500 (not a problem body) is shown as what it is; it was
    a JSONDecodeError traceback. A gateway's 502 (the service behind it away) or 504 (it did
    not answer in time) is exit 2, as no answer at all and the service's own 503 are (a part
    of the system away: docs/commands.md); it was exit 1, a refusal's. A 500, the service's
    own failure, is exit 1."""
    page = f"<html>{http.HTTPStatus(status).phrase}</html>".encode()

    class Plain(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Plain) as url:
        done = caravan("payments", "credit-show", "b-1", "--url", url)
    assert done.returncode == exit_code, done.stderr
    assert f"HTTP {status}: {page.decode()}" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_change_whose_answer_was_lost_names_the_key_to_retry_it_with() -> None:
    """Without --key, the commands make one up: after no answer (a timeout, a dropped
    connection), the repayment may have been recorded, and a retry with a new key would
    record it again."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    done = caravan("payments", "repay", "L-1", "--amount", "500", "--url", url)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert "payments API unreachable" in lines[0]
    assert lines[1].startswith("it may have been applied: retry with --key ")
    key = lines[1].split("--key ")[1].split()[0]
    again = caravan("payments", "repay", "L-1", "--amount", "500", "--key", key, "--url", url)
    assert f"retry with --key {key} " in again.stderr  # the key given is the key said
