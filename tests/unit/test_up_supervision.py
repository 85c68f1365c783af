"""``caravan up``'s watch over its services (``ServiceProcesses.supervise``) and the
``caravan pause``/``resume`` commands that ask it to stop or start one, without processes
(but the operations page's, a real ``caravan dashboard`` on no Kafka or PostgreSQL): the e2e
test in ``tests/e2e/test_ops.py`` runs it on the real services."""

import functools
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import wait
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

import pytest
from typer.testing import CliRunner

from caravan import checkout, cli, system
from caravan.infra.ports import answers
from caravan.infra.postgres import DataFolderGone
from caravan.output import OperatorError
from services import SERVICES
from tests.harness import free_port
from tests.unit.conftest import Caravan


class Exited:
    """A process that has exited with ``code``."""

    pid = 1

    def __init__(self, code: int) -> None:
        self.returncode = code

    def poll(self) -> int:
        return self.returncode


def test_a_service_that_keeps_exiting_is_started_again_ever_later_and_said_once_in_red(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 1 s, then 2, 4, 8; past five exits within a minute every 30 s, said once in red;
    the others go on. It stopped ``caravan up``, and every service, at the fifth."""
    procs = system.ServiceProcesses({}, tmp_path, backoff=(1.0, 30.0))
    now, started = 100.0, []

    def start(names: tuple[str, ...] = SERVICES, instance: int = 1) -> None:
        assert names == ("orders",)  # only it, and not "resumed" while it waits
        started.append(now)
        procs.procs["orders"] = Exited(1)  # type: ignore[assignment]

    monkeypatch.setattr(procs, "start", start)
    for name in SERVICES:
        procs.procs[name] = Exited(1) if name == "orders" else _Running()  # type: ignore[assignment]
    said = []
    while now < 200.0:  # a round each half second, as caravan up's
        said += procs.supervise(set(), now=now)
        now += 0.5
    assert started == [101.0, 103.5, 108.0, 116.5, 147.0, 177.5]
    log = tmp_path / "orders.log"
    exited = f"service orders (pid 1) exited with 1: see {log}; starting it again in"
    assert [line.plain for line in said] == [
        *(f"{exited} {wait} s" for wait in (1, 2, 4, 8)),
        f"service orders keeps exiting (5 times within a minute): see {log}; retrying every 30 s",
        f"{exited} 30 s",
        f"{exited} 30 s",
    ]
    assert [line.style for line in said] == ["", "", "", "", "red", "", ""]
    assert procs.supervise(set(), now=208.0) == []  # started again; it runs a minute
    assert [line.plain for line in procs.supervise(set(), now=270.0)] == [f"{exited} 1 s"]


def test_a_service_paused_while_it_waits_to_start_again_is_started_by_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    procs = system.ServiceProcesses({}, tmp_path, processes=1, backoff=(1.0, 30.0))
    started = []
    monkeypatch.setattr(procs, "start", lambda names=SERVICES: started.append(names))
    procs.procs["+".join(SERVICES)] = Exited(-9)  # type: ignore[assignment]
    procs.supervise(set(), now=100.0)
    assert procs.supervise({"orders"}, now=101.0) == [] and started == []
    assert [line.plain for line in procs.supervise(set(), now=102.0)] == [
        f"resumed {', '.join(SERVICES)}"
    ]
    assert started == [SERVICES]


def test_postgresql_or_kafka_that_does_not_start_again_is_tried_again_later(
    tmp_path: Path,
) -> None:
    tries: list[int] = []

    def start() -> None:
        tries.append(len(tries))
        if len(tries) == 1:
            raise OperatorError("port 15432 is in use by a program other than PostgreSQL")

    log = tmp_path / "postgres.log"
    pg = system.Watched("PostgreSQL", log, lambda: None, start, system.Restarts(1.0, 30.0))
    pg.last_pid = 7
    assert [line.plain for line in pg.supervise(100.0)] == [
        f"PostgreSQL (pid 7) exited: see {log}; starting it again in 1 s"
    ]
    assert pg.supervise(101.0) == [] and started(pg)
    assert [line.plain for line in pg.supervise(101.5)] == [
        f"PostgreSQL did not start again (port 15432 is in use by a program other than "
        f"PostgreSQL): see {log}; starting it again in 2 s"
    ]
    pg.pid = lambda: 8
    assert pg.supervise(103.5) == [] and started(pg)
    assert [line.plain for line in pg.supervise(104.0)] == ["PostgreSQL (pid 8) is up again"]
    assert tries == [0, 1] and pg.last_pid == 8


def test_postgresql_held_down_says_why_it_keeps_failing_when_said_in_red(tmp_path: Path) -> None:
    """A drill held PostgreSQL's port: each try said the port held, then the fifth, in red,
    "PostgreSQL keeps exiting (5 times within a minute)", the cause gone from the line an
    operator reads last (tried only every 30 s from then on). It says the last failure."""
    held = "port 15432 is in use by a program other than PostgreSQL: stop it"

    def start() -> None:
        raise OperatorError(held)

    log = tmp_path / "postgres.log"
    pg = system.Watched("PostgreSQL", log, lambda: None, start, system.Restarts(1.0, 30.0))
    pg.last_pid = 7
    said = [line.plain for line in pg.supervise(100.0)]
    now = 100.0
    while len(said) < 5:
        now = pg.restarts.due or now
        assert pg.supervise(now) == [] and started(pg)
        said += [line.plain for line in pg.supervise(now + 0.5)]
    assert said[-1] == (
        f"PostgreSQL keeps exiting (5 times within a minute; the last: did not start again"
        f" ({held})): see {log}; retrying every 30 s"
    )


def test_kafka_started_again_is_said_up_again_and_named_by_its_own_pid_when_it_exits(
    tmp_path: Path,
) -> None:
    """Said up again once its start (which waits until it serves) ends; killed again before
    a round saw it running, it is named by the pid started, not the first one's (a failure
    drill: ``Kafka (pid 20136) exited`` three times, for 20306, 20413 and 20573)."""
    pid: int | None = None
    pids = iter([8, 9])

    def start() -> None:
        nonlocal pid
        pid = next(pids)

    log = tmp_path / "kafka.log"
    kafka = system.Watched("Kafka", log, lambda: pid, start, system.Restarts(1.0, 30.0))
    kafka.last_pid = 7
    kafka.supervise(100.0)
    assert kafka.supervise(101.0) == [] and started(kafka)
    assert [(line.plain, line.style) for line in kafka.supervise(101.5)] == [
        ("Kafka (pid 8) is up again", "green")
    ]
    assert kafka.supervise(102.0) == []
    pid = None
    kafka.supervise(102.5)
    assert kafka.supervise(104.5) == [] and started(kafka)
    pid = None  # killed before the next round
    assert [line.plain for line in kafka.supervise(105.0)] == [
        f"Kafka (pid 9) exited: see {log}; starting it again in 4 s"
    ]


def test_postgresql_whose_data_folder_is_gone_is_said_once_in_red_and_tried_quietly(
    tmp_path: Path,
) -> None:
    """tests/e2e/test_up_command.py takes the folder away from a real cluster, and puts it
    back."""
    gone = DataFolderGone(tmp_path / "data")

    def start() -> None:
        raise gone

    pg = system.Watched("PostgreSQL", tmp_path / "log", lambda: None, start, system.Restarts(1, 30))
    pg.last_pid = 7
    pg.supervise(100.0)
    assert pg.supervise(101.0) == [] and started(pg)
    assert [(line.plain, line.style) for line in pg.supervise(101.5)] == [(str(gone), "red")]
    assert str(tmp_path / "data") in str(gone)
    assert pg.supervise(103.5) == [] and started(pg) and pg.supervise(104.0) == []


def started(watched: system.Watched, timeout: float = 5.0) -> bool:
    """Whether the start under way of ``watched`` ended within ``timeout`` seconds."""
    return watched.starting is not None and bool(wait([watched.starting], timeout).done)


def page_env(tmp_path: Path, token: str) -> dict[str, str]:
    """The environment of an operations page calling the APIs with ``token`` ("": none), on
    a Kafka and a PostgreSQL that are not there (it serves all the same, saying so)."""
    file = tmp_path / "token"
    file.write_text(token)
    env = {k: v for k, v in os.environ.items() if k != "CARAVAN_TOKEN"}
    return {
        **env,
        "CARAVAN_TOKEN_FILE": str(file),
        "CARAVAN_HTTP_HOST": "127.0.0.1",
        "DATABASE_URL": f"postgresql+asyncpg://caravan:caravan@127.0.0.1:{free_port()}/caravan",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }


def test_the_operations_page_started_again_is_said_up_again_once_it_serves(
    tmp_path: Path,
) -> None:
    """A real ``caravan dashboard``: said up again once it answers its sign-in page, as a
    service is once it answers ``/healthz``. It was said up again once its process started,
    before it listened (a Python start of a second or more)."""
    port = free_port()
    page = system.OperationsPage(page_env(tmp_path, "cvn_" + "x" * 43), port, tmp_path / "log")
    watched = page.watched((1.0, 30.0))
    watched.last_pid = 7
    watched.supervise(100.0)
    try:
        assert watched.supervise(101.0) == [] and started(watched, timeout=60)
        said = [line.plain for line in watched.supervise(101.5)]
        serving = answers(port, "/login")
        assert (said, serving) == ([f"operations page (pid {page.pid()}) is up again"], True)
    finally:
        page.stop()


def test_a_start_whose_failure_names_the_log_is_said_with_it_once(tmp_path: Path) -> None:
    """A start's failure that names the log already (PostgreSQL's own: "...; see LOG") was
    said with "see LOG" twice (a drill's "did not start again (...; see LOG): see LOG")."""
    log = tmp_path / "postgres.log"

    def start() -> None:
        raise OperatorError(f"pg_ctl: could not start server (Examine the log output.); see {log}")

    pg = system.Watched("PostgreSQL", log, lambda: None, start, system.Restarts(1.0, 30.0))
    pg.last_pid = 7
    pg.supervise(100.0)
    assert pg.supervise(101.0) == [] and started(pg)
    assert [line.plain for line in pg.supervise(101.5)] == [
        "PostgreSQL did not start again (pg_ctl: could not start server (Examine the log"
        f" output.); see {log}); starting it again in 2 s"
    ]


def test_an_operations_page_that_exits_as_it_starts_again_is_said_with_its_error(
    tmp_path: Path,
) -> None:
    """Without a token the page refuses to start (exit 2): said as not started again, with
    the error its log says, and tried again later. It was said up again."""
    log = tmp_path / "dashboard.log"
    page = system.OperationsPage(page_env(tmp_path, ""), free_port(), log)
    watched = page.watched((1.0, 30.0))
    watched.last_pid = 7
    watched.supervise(100.0)
    assert watched.supervise(101.0) == [] and started(watched, timeout=60)
    [line] = [line.plain for line in watched.supervise(101.5)]
    refused = "no API token: set CARAVAN_TOKEN (or CARAVAN_TOKEN_FILE) to a token with the scope"
    assert line.startswith(f"operations page did not start again (exited with 2 ({refused}"), line
    assert line.endswith(f": see {log}; starting it again in 2 s"), line


def test_a_restart_of_postgresql_that_takes_its_time_holds_up_nothing(tmp_path: Path) -> None:
    """``pg_ctl start`` waits up to a minute while PostgreSQL recovers from a crash: each round
    of caravan up's watch goes on meanwhile (services started again, Ctrl-C, pauses), and the
    round after the start says it is up again, not that it exited. The round waited for the
    start."""
    recovered = threading.Event()
    pid: int | None = None
    recovery = functools.partial(recovered.wait, 5.0)
    pg = system.Watched(
        "PostgreSQL", tmp_path / "postgres.log", lambda: pid, recovery, system.Restarts(1, 30)
    )
    pg.last_pid = 7
    pg.supervise(100.0)
    began = time.monotonic()
    assert pg.supervise(101.0) == [] and pg.supervise(101.5) == []
    assert time.monotonic() - began < 1.0
    pid = 8
    recovered.set()
    assert started(pg) and pg.last_pid == 8
    assert [line.plain for line in pg.supervise(102.0)] == ["PostgreSQL (pid 8) is up again"]


def test_a_service_that_exits_while_caravan_up_starts_is_said_with_its_last_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line quotes the last error this start wrote to the service's log (not an earlier
    run's, above it), beside the log's name: it named only the log."""
    log = tmp_path / "inventory.log"
    log.write_text("Traceback (most recent call last):\nRuntimeError: an earlier run's\n")
    behind = "schema inventory is at 0005, this version needs 0006: run caravan prepare"
    lines = [{"level": "info", "message": "starting"}, {"level": "error", "message": behind}]

    def popen(command: list[str], stdout: BinaryIO, **kwargs: object) -> Exited:
        stdout.write("".join(json.dumps(line) + "\n" for line in lines).encode())
        stdout.flush()
        return Exited(2)

    monkeypatch.setattr(subprocess, "Popen", popen)
    procs = system.ServiceProcesses(system.http_port_env(8080), tmp_path)
    procs.start(("inventory",))
    with pytest.raises(OperatorError) as failed:
        system.wait_ready(procs)
    assert str(failed.value) == f"service inventory exited with 2 ({behind}); see {log}"


class _Running:
    returncode = None

    def poll(self) -> None:
        return None


class SlowToStop:
    """A service process that takes its time to stop (SIGTERM does not end it; SIGKILL
    does), and whose first wait a Ctrl-C cuts short."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.waits = 0

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        self.waits += 1
        if self.waits == 1:
            raise KeyboardInterrupt
        if self.returncode is None:
            raise subprocess.TimeoutExpired("python -m services.orders", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9


def test_ctrl_c_while_a_paused_service_stops_leaves_it_to_caravan_up_to_end(
    tmp_path: Path,
) -> None:
    procs = system.ServiceProcesses({}, tmp_path)
    orders = SlowToStop()
    procs.procs["orders"] = orders  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        procs.supervise({"orders"})  # caravan pause orders, then Ctrl-C while it stops
    procs.stop(timeout=0.1)  # caravan up's finally
    assert (orders.returncode, procs.procs) == (-9, {})


def test_pause_and_resume_wait_for_caravan_up_to_do_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkout, "PAUSED", tmp_path / "paused")
    monkeypatch.setattr(checkout, "UP_PIDS", tmp_path / "up.pids")
    monkeypatch.setattr(checkout, "running_up", lambda: True)
    keys: dict[str, dict[str, object]] = {"orders": {}, "payments+notifications+platform": {}}
    checkout.UP_PIDS.write_text(json.dumps(keys))

    def up_watch(done: threading.Event) -> None:
        """What caravan up's loop does with the markers, a round every 0.1 s until the command
        is done. It looked once, 0.3 s on: a command slower to write its marker (under load)
        then waited its 30 s for a change that never came."""
        while not done.wait(0.1):
            if "notifications" in checkout.paused():
                checkout.UP_PIDS.write_text('{"orders": {}}')
            else:
                checkout.UP_PIDS.write_text(json.dumps(keys))

    def run(*args: str) -> str:
        """``caravan ARGS`` while caravan up's loop acts on it; what it printed."""
        finished = threading.Event()
        watch = threading.Thread(target=up_watch, args=(finished,))
        watch.start()
        done = CliRunner().invoke(cli.app, list(args))
        finished.set()
        watch.join()
        assert done.exit_code == 0, done.output
        return done.output

    said = run("pause", "notifications")
    assert "paused notifications (and payments, platform, in its process)" in said
    assert checkout.paused() == {"notifications"}
    # Said once it serves, as pause says it: it said "resumed notifications
    # (payments+notifications+platform)" as soon as the process was started.
    asked: list[int] = []
    with Starting(asked, 503, 503, 200) as port:
        monkeypatch.setenv("CARAVAN_NOTIFICATIONS_HTTP_PORT", str(port))
        said = run("resume", "notifications")
    assert said == "resumed notifications (and payments, platform, in its process)\n"
    assert asked == [503, 503, 200]  # /healthz asked until it answered
    assert checkout.paused() == set()


class Starting(ThreadingHTTPServer):
    """A service starting: its ``/healthz`` answers each of ``answers`` in turn, then the last
    for good, each one said in ``asked``; on a free port (its ``with``'s value)."""

    def __init__(self, asked: list[int], *answers: int) -> None:
        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = answers[min(len(asked), len(answers) - 1)]
                asked.append(status)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Health)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> int:  # type: ignore[override]
        self.thread.start()
        return int(self.server_address[1])

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def test_resume_of_a_service_not_paused_and_pause_of_a_paused_one_say_nothing_changed(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both said "resumed orders (orders)" and "paused orders", exit 0, changing nothing."""
    monkeypatch.setattr(checkout, "running_up", lambda: True)
    checkout.UP_PIDS.parent.mkdir(parents=True)
    checkout.UP_PIDS.write_text('{"orders": {}}')  # it runs
    code, out, err = caravan("resume", "orders")
    assert (code, out + err) == (0, "orders is not paused, nothing changed\n")
    checkout.PAUSED.mkdir()
    (checkout.PAUSED / "inventory").touch()  # paused: caravan up stopped it
    code, out, err = caravan("pause", "inventory")
    said = "inventory is paused already; `caravan resume inventory` starts it again\n"
    assert (code, out + err) == (0, said)
    assert checkout.paused() == {"inventory"}


def test_pause_refuses_an_unknown_service_and_no_running_caravan_up(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = caravan("pause", "shipping")
    assert code == 2 and "none of orders" in out + err
    monkeypatch.setattr(checkout, "running_up", lambda: False)
    code, out, err = caravan("pause", "orders")
    assert code == 1 and "no `caravan up` runs" in out + err
    assert checkout.paused() == set()


def test_running_up_is_whether_the_lock_of_caravan_up_is_held(tmp_path: Path) -> None:
    base = tmp_path / "up"
    assert not checkout.running_up(base)
    with system.run_alone(base):
        assert running_elsewhere(base)
    assert not checkout.running_up(base)


def running_elsewhere(base: Path) -> bool:
    """``running_up`` asked from another process (a lock is the holder's own to take again)."""
    code = (
        "from pathlib import Path; from caravan import checkout; "
        f"print(checkout.running_up(Path({str(base)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_a_start_in_the_background_ended_by_a_systemexit_is_its_outcome() -> None:
    """A start ended by what is not an Exception (a SystemExit from a library) left its
    future pending for ever, and what it started was watched no more (R6's review)."""

    def exits() -> None:
        raise SystemExit(3)

    outcome = system.in_background(exits)
    wait([outcome], timeout=5)
    assert outcome.done() and isinstance(outcome.exception(), SystemExit)
