"""``caravan up --demo`` run as a user runs it (``make up``): the command in a process of its
own, its ready line and the demo's summary (as the database has it), ``caravan demo`` against
it, and a Ctrl-C that stops every process it started.

It runs from a copy of the checkout: what ``caravan up`` keeps in the checkout's ``.cache/``
(its lock, pids, development token, service logs) stays the copy's, so a developer's own
``caravan up`` beside the tests is left alone. Its Kafka is a broker of its own, not the
session's: the services' consumer groups have fixed names, and beside the session's services
they would split the topics' partitions with them. Its PostgreSQL is a database of its own on
the session's server."""

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from caravan import checkout, system
from caravan.checkout import REPO_ROOT
from caravan.infra.kafka import LocalKafka
from caravan.infra.ports import answers
from caravan.infra.postgres import LocalPostgres, local_postgres
from services import SERVICES
from tests.conftest import own_port
from tests.harness import TERMINAL, scratch_database, until

UP_KAFKA_PORT = own_port("kafka", __name__)  # its controller one thousand above, as the session's
UP_HTTP_PORT = own_port("http", __name__)  # the five services; the operations page after them
DASHBOARD_PORT = UP_HTTP_PORT + 5
ORDERS = 4
UP_POSTGRES_PORT = own_port("postgres", __name__)  # its own (checkout.LOCAL_PORTS_VAR)
NAMED = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")  # what names servers to caravan up
STOP_SECONDS = 15.0  # docs/running.md: in a few seconds (killed 15 s after it was asked)


@pytest.fixture
async def servers(
    infrastructure: system.Infrastructure, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """A Kafka broker of the test's own and a new database on the session's PostgreSQL, as
    the environment names them to ``caravan up``."""
    async with scratch_database(infrastructure.database_url, "caravan_up") as url:
        kafka = await asyncio.to_thread(
            system.start_infrastructure,
            base_dir=tmp_path,
            kafka_port=UP_KAFKA_PORT,
            named=(None, url),
        )
        try:
            yield {"KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap, "DATABASE_URL": url}
        finally:
            await asyncio.to_thread(kafka.stop)


def checkout_copy(tmp_path: Path) -> Path:
    """The checkout's packages copied under ``tmp_path``, with the reference data beside it
    (``../shared/``) as beside the checkout; run from it, ``python -m caravan`` and the
    services it starts are the copy's, and keep their ``.cache/`` there."""
    root = tmp_path / "checkout"
    for package in ("caravan", "services", "shared"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO_ROOT / package, root / package, ignore=ignore)
    (tmp_path / "shared").symlink_to(REPO_ROOT.parent / "shared")
    return root


def summary(lines: list[str]) -> Counter[tuple[str, str]]:
    """The orders of the demo's summary table, by status and reason."""
    rows = lines[titled(lines) :]
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        words = re.findall(r"[a-z_]+|\d+", row)
        if words and words[0] in ("confirmed", "cancelled", "rejected", "pending"):
            counts[(words[0], words[1] if len(words) == 3 else "")] = int(words[-1])
    return counts


def titled(lines: list[str]) -> int:
    """Where the demo's summary table begins."""
    return next(i for i, line in enumerate(lines) if "Demo orders by outcome" in line)


async def orders_held(database_url: str, but: set[str]) -> dict[str, tuple[str, str, int]]:
    """The orders the database holds whose refs are not in ``but``: by ref, their status,
    reason and how many terminal events their timeline records."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "select o.order_ref, o.status, coalesce(o.reason, ''), count(t.type)"
                    " from orders.orders o left join orders.timeline t"
                    " on t.order_id = o.order_id and t.type = any(:terminal)"
                    " group by 1, 2, 3"
                ),
                {"terminal": list(TERMINAL)},
            )
            return {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] not in but}
    finally:
        await engine.dispose()


def agree(shown: Counter[tuple[str, str]], held: dict[str, tuple[str, str, int]]) -> None:
    """The summary ``shown`` counts what the database ``held``: each order confirmed or
    cancelled, with one terminal event."""
    assert Counter((status, reason) for status, reason, _ in held.values()) == shown
    assert {status for status, _, _ in held.values()} <= {"confirmed", "cancelled"}, held
    assert {terminal for _, _, terminal in held.values()} == {1}, held


def started_at(pid: int) -> str | None:
    """When process ``pid`` started (its ``/proc`` stat's field 22), None once it is gone or
    a zombie: with it, a pid taken again by another process is not that process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def descendants(pid: int) -> dict[int, str | None]:
    """The processes descending from ``pid`` now, with when each started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started_at(child)
            todo.append(child)
    return found


@contextlib.contextmanager
def caravan_up(
    args: list[str], cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m caravan up ARGS`` in a process group of its own, as a terminal's foreground
    job, saying what it says in ``cwd/said.txt`` (a file: a pipe would stay open as long as
    any process it started lives). A run the test left running is stopped with Ctrl-C (killed
    if that fails), and what a run killed or failed left is stopped as the next ``caravan up``
    would stop it."""
    with (cwd / "said.txt").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "caravan", "up", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        system.stop_leftovers(cwd / ".cache" / "up.pids")


async def demo_beside(root: Path, env: dict[str, str], database_url: str, but: set[str]) -> None:
    """``caravan demo --orders 2`` beside the ``caravan up`` run from ``root``, finding it as
    docs/running.md says (``.cache/up.env.json``): both orders to their outcome, as its
    summary says (``but``: the refs of the orders held before)."""
    demo_env = {k: v for k, v in env.items() if k not in (*NAMED, "CARAVAN_HTTP_PORT")}
    demo = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "caravan", "demo", "--orders", "2"],
        cwd=root,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    more = await orders_held(database_url, but)
    assert len(more) == 2
    agree(summary(demo.stdout.splitlines()), more)


def said(cwd: Path) -> list[str]:
    """What :func:`caravan_up` in ``cwd`` has said so far, line by line."""
    return (cwd / "said.txt").read_text().splitlines()


STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 ")
"""The time each line of ``caravan up``'s watch begins with (:func:`caravan.output.stamped`)."""


def watch_said(cwd: Path) -> list[str]:
    """What the watch of :func:`caravan_up` in ``cwd`` has said so far (a process exited,
    started again, up again), each line after its time: a line said with none is not among
    them. An operator reading the scrollback could not say when each came."""
    return [line[m.end() :] for line in said(cwd) if (m := STAMP.match(line))]


async def test_up_with_the_demo_then_ctrl_c_stops_every_process_it_started(
    servers: dict[str, str], tmp_path: Path
) -> None:
    root = checkout_copy(tmp_path)
    env = {
        **os.environ,
        **servers,
        "CARAVAN_HTTP_PORT": str(UP_HTTP_PORT),
        system.RESTART_BACKOFF_VAR: "0.2,1",  # a service that exits: see keeps_exiting
        "PYTHONUNBUFFERED": "1",  # lines as a terminal shows them
        "COLUMNS": "1000",
        # an app the adapter serves (no push comes: its platform is never called)
        "CARAVAN_PLATFORM_APPS": json.dumps(
            {"up-market": {"secret": "up-market-secret-0001", "api_url": "http://127.0.0.1:9"}}
        ),
    }
    args = ["--demo", "--orders", str(ORDERS), "--dashboard-port", str(DASHBOARD_PORT)]
    with caravan_up(args, root, env) as up:
        await until(
            lambda: said(root),
            lambda seen: "caravan up to drive the demo:\n" + "\n".join(seen),
            timeout=120,
            every=0.2,
            ready=lambda seen: "Press Ctrl-C to stop." in seen or up.poll() is not None,
        )
        shown = said(root)
        assert shown[-1] == "Press Ctrl-C to stop.", shown
        # It started no broker and no database of its own, and was ready before the demo.
        assert f"Kafka: {servers['KAFKA_BOOTSTRAP_SERVERS']} (external)" in shown
        # A database never migrated: each schema's migration said, from none to its head.
        migrated = [line for line in shown if line.startswith("migrated schema ")]
        schemas = [line.split(":")[0].removeprefix("migrated schema ") for line in migrated]
        assert schemas == [*SERVICES, "auth", "ops"], shown
        assert all(re.search(r": none -> \w+ in \d+\.\ds$", line) for line in migrated), migrated
        ready = next(line for line in shown if line.startswith("ready in "))
        assert f"HTTP API on http://127.0.0.1:{UP_HTTP_PORT}" in ready, ready
        # the apps its platform adapter serves, as the adapter's start line says them
        pushes = f"http://127.0.0.1:{UP_HTTP_PORT + 4}/platform/{{app}}/push"
        assert f", platform apps up-market (pushes to POST {pushes}), " in ready, ready
        assert shown.index(ready) < titled(shown)
        held = await orders_held(servers["DATABASE_URL"], but=set())
        assert len(held) == ORDERS
        agree(summary(shown), held)

        await demo_beside(root, env, servers["DATABASE_URL"], but=set(held))
        await keeps_exiting(up, root)
        await page_started_again(root)

        assert up.poll() is None, said(root)  # still up, after the demo and beside it
        recorded = checkout.recorded_processes(root / ".cache" / "up.pids")
        assert sorted(recorded) == sorted([*SERVICES, "dashboard"])
        started = descendants(up.pid)
        assert {int(entry["pid"]) for entry in recorded.values()} <= set(started)

        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C sends the terminal's foreground job
        asked = time.monotonic()
        code = await asyncio.to_thread(up.wait, 60)
        took = time.monotonic() - asked
    assert code == 0, said(root)
    assert said(root)[-2:] == ["stopping", "stopped"], said(root)
    assert took < STOP_SECONDS, f"stopped in {took:.1f}s"
    left = {pid for pid, when in started.items() if when is not None and started_at(pid) == when}
    for pid in left:  # not to outlive the test
        os.kill(pid, signal.SIGKILL)
    names = {int(entry["pid"]): key for key, entry in recorded.items()}
    assert not left, f"still running: {[names.get(pid, pid) for pid in sorted(left)]}"
    assert not (root / ".cache" / "up.pids").exists()
    assert not (root / ".cache" / "up.env.json").exists()


def up_env(**named: str) -> dict[str, str]:
    """The environment of a ``caravan up`` on the servers ``named`` (none: its own) that
    starts again what exits after 0.2 s, doubling up to 1 s (a hidden setting; 1 s up to 30 s
    otherwise)."""
    return {
        **{k: v for k, v in os.environ.items() if k not in NAMED},
        **named,
        "CARAVAN_HTTP_PORT": str(UP_HTTP_PORT),
        system.RESTART_BACKOFF_VAR: "0.2,1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "1000",
    }


async def ready(up: subprocess.Popen[bytes], root: Path) -> list[str]:
    """What ``caravan up`` said until it was ready (it ran on)."""
    shown = await until(
        lambda: said(root),
        lambda seen: "caravan up to be ready:\n" + "\n".join(seen),
        timeout=120,
        every=0.2,
        ready=lambda seen: "Press Ctrl-C to stop." in seen or up.poll() is not None,
    )
    assert shown[-1] == "Press Ctrl-C to stop.", shown
    return shown


async def keeps_exiting(up: subprocess.Popen[bytes], root: Path) -> None:
    """``kill -9`` of payments five times under the ``caravan up`` run from ``root`` (with a
    backoff of 0.2 s up to 1 s): each time started again, after 0.2, 0.4, 0.8 and 1 s; the
    fifth said once, in red, and still started again, the rest going on, then said up again.
    It used to stop ``caravan up`` and every other service with it (``service payments exited
    5 times within a minute``)."""
    pids = root / ".cache" / "up.pids"
    log = root / ".cache" / "logs" / "payments.log"
    killed: list[int] = []
    for _ in range(system.MAX_EXITS):
        pid = await until(
            lambda: int(checkout.recorded_processes(pids).get("payments", {}).get("pid", 0)),
            lambda seen: f"payments started again (pid {seen}, killed {killed}): {said(root)}",
            ready=lambda pid: pid not in (0, *killed) and started_at(pid) is not None,
        )
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    again = await until(  # started again all the same, and it serves
        lambda: int(checkout.recorded_processes(pids).get("payments", {}).get("pid", 0)),
        lambda seen: f"payments started again after {killed}: {said(root)}",
        ready=lambda pid: pid not in (0, *killed),
    )
    await until(
        lambda: asyncio.to_thread(answers, UP_HTTP_PORT + SERVICES.index("payments"), timeout=2),
        f"payments (pid {again}) to answer /healthz",
        timeout=60,
    )
    back = f"service payments (pid {again}) is up again"
    await until(
        lambda: watch_said(root),
        lambda seen: f"{back!r} among:\n" + "\n".join(seen),
        ready=lambda seen: back in seen,
    )
    assert up.poll() is None, said(root)
    assert answers(UP_HTTP_PORT, timeout=2), "orders went on"
    lines = [line for line in watch_said(root) if "service payments" in line]
    waits = ["0.2", "0.4", "0.8", "1"]
    assert lines == [
        *(
            f"service payments (pid {pid}) exited with -9: see {log}; starting it again in {s} s"
            for pid, s in zip(killed, waits, strict=False)
        ),
        f"service payments keeps exiting (5 times within a minute): see {log}; retrying every 1 s",
        back,  # once it answers /healthz
    ]


async def page_started_again(root: Path) -> None:
    """``kill -9`` of the operations page of the ``caravan up`` run from ``root``: it says so,
    naming the page's log, starts it again (its new pid recorded) and says it is up again
    once the page answers. Nothing watched it: it stayed down as long as caravan up ran;
    then it was said up again once its process started, before it served."""
    pids = root / ".cache" / "up.pids"
    was = int(checkout.recorded_processes(pids)["dashboard"]["pid"])
    os.kill(was, signal.SIGKILL)
    log = root / ".cache" / "logs" / "dashboard.log"
    line = f"operations page (pid {was}) exited: see {log}; starting it again in 0.2 s"
    await until(
        lambda: watch_said(root),
        lambda seen: f"{line!r} among:\n" + "\n".join(seen),
        ready=lambda seen: line in seen,
    )
    now = await until(
        lambda: int(checkout.recorded_processes(pids).get("dashboard", {}).get("pid", 0)),
        f"the operations page started again after {was}",
        ready=lambda pid: pid not in (0, was),
    )
    back = f"operations page (pid {now}) is up again"
    await until(
        lambda: watch_said(root),
        lambda seen: f"{back!r} among:\n" + "\n".join(seen),
        timeout=60,
        ready=lambda seen: back in seen,
    )
    assert answers(DASHBOARD_PORT, "/login", timeout=2), f"{back!r}, and no page"


async def test_caravan_up_starts_its_own_postgresql_and_kafka_again_when_they_exit(
    tmp_path: Path,
) -> None:
    """Its PostgreSQL stopped by hand, then its Kafka broker killed: ``caravan up`` names each
    at once, with its log, and starts it again; demo orders then go through. It watched only
    its services: it said nothing, and nothing started them again."""
    root = checkout_copy(tmp_path)
    (root / "infra").symlink_to(REPO_ROOT / "infra")  # to run Kafka: its pom and logging,
    (root / ".cache").mkdir()
    (root / ".cache" / "kafka").symlink_to(REPO_ROOT / ".cache" / "kafka")  # the jars fetched
    env = {**up_env(), checkout.LOCAL_PORTS_VAR: f"{UP_KAFKA_PORT},{UP_POSTGRES_PORT}"}
    pg = local_postgres(root / ".cache", UP_POSTGRES_PORT)
    kafka = LocalKafka(root / ".cache" / f"kafka-{UP_KAFKA_PORT}", first_port=UP_KAFKA_PORT)
    args = ["--demo", "--orders", "0", "--dashboard-port", str(DASHBOARD_PORT)]
    try:
        with caravan_up(args, root, env) as up:
            shown = await ready(up, root)
            assert f"Kafka: 127.0.0.1:{UP_KAFKA_PORT} (local (1 node))" in shown
            await started_again(
                root, "PostgreSQL", pg.pid, pg.logfile, lambda: pg.stop("immediate")
            )
            kafka_pid, kill = (functools.partial(f, 0) for f in (kafka.pid, kafka.kill))
            await started_again(root, "Kafka", kafka_pid, kafka.logfile(0), kill)
            await asyncio.to_thread(kafka.wait_ready)
            await demo_beside(root, env, pg.url, but=set())
            await data_folder_gone(root, pg)
            assert up.poll() is None, said(root)
    finally:
        if not pg.root.is_relative_to(tmp_path):  # its /var/tmp fallback (a long path)
            shutil.rmtree(pg.root, ignore_errors=True)


async def started_again(
    root: Path, name: str, pid: Callable[[], int | None], log: Path, stop: Callable[[], object]
) -> None:
    """``stop()`` the process ``name`` of the ``caravan up`` run from ``root``: it says so at
    once, naming its log, starts it again (``pid()`` then another) and says it is up again
    once it serves."""
    was = pid()
    assert was is not None, name
    stop()
    line = f"{name} (pid {was}) exited: see {log}; starting it again in 0.2 s"
    await until(
        lambda: watch_said(root),
        lambda seen: f"{line!r} among:\n" + "\n".join(seen),
        ready=lambda seen: line in seen,
    )
    now = await until(
        pid, f"{name} started again", timeout=60, ready=lambda now: now not in (None, was)
    )
    back = f"{name} (pid {now}) is up again"  # once it serves: nothing said the outage ended
    await until(
        lambda: watch_said(root),
        lambda seen: f"{back!r} among:\n" + "\n".join(seen),
        timeout=60,
        ready=lambda seen: back in seen,
    )


async def data_folder_gone(root: Path, pg: LocalPostgres) -> None:
    """PostgreSQL's data folder taken away under the ``caravan up`` run from ``root`` (and its
    server killed): it says so once, in red, naming the folder, and makes no new cluster
    there; put back, the cluster is started again. It made a new, empty one at once (every
    order gone, the services failing on schemas that were not there)."""
    was, moved = pg.pid(), pg.root / "data.moved"
    assert was is not None
    pg.data_dir.rename(moved)
    os.kill(was, signal.SIGKILL)
    line = f"PostgreSQL's data folder {pg.data_dir} is gone: not made again, empty, while"
    await until(
        lambda: watch_said(root),
        lambda seen: f"{line!r} among:\n" + "\n".join(seen),
        ready=lambda seen: any(shown.startswith(line) for shown in seen),
    )
    await asyncio.sleep(2)  # tried again meanwhile (after 0.2, 0.4 and 0.8 s)
    assert not pg.data_dir.exists() and not pg.data_dir.with_name("data.initdb").exists()
    moved.rename(pg.data_dir)
    await until(
        pg.pid, "PostgreSQL started again", timeout=60, ready=lambda now: now not in (None, was)
    )
    assert sum(shown.startswith(line) for shown in watch_said(root)) == 1, said(root)
