"""Importing the ``caravan`` command costs only what every command needs (Typer, Rich, the
settings): operators run it many times a day, and each run spent about two seconds
importing FastAPI (through shared.http), SQLAlchemy, aiokafka, httpx, Alembic and the
services' handlers before it did anything. A command imports what it uses when it runs."""

import os
import subprocess
import sys

from caravan.checkout import REPO_ROOT

HEAVY = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "sqlalchemy.ext.asyncio",
    "asyncpg",
    "aiokafka",
    "faststream",
    "httpx",
    "alembic",
    "shared.http",
    "caravan.system",
    "caravan.ops.dlq",
    "services.inventory.handlers",
    "services.payments.handlers",
    "services.notifications.handlers",
)


def heavy_imported(script: str) -> subprocess.CompletedProcess[str]:
    """Python running ``script``, which prints what it imported of :data:`HEAVY` last."""
    printed = f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    return subprocess.run(
        [sys.executable, "-c", script.format(heavy=printed)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )


def test_the_command_line_imports_no_client_nor_service_before_a_command_runs() -> None:
    done = heavy_imported("import caravan.cli, sys; {heavy}")
    assert done.stdout.strip() == "[]", done.stdout


def test_listing_dead_letters_imports_kafka_s_client_alone() -> None:
    """``caravan dlq list`` (and ``show``) read Kafka: not the audit trail (SQLAlchemy,
    asyncpg) before there are letters to look up in it, the services' consumer (FastStream),
    tracing (OpenTelemetry) or HTTP, which redrive alone uses, or nothing does. Run to its
    end on a Kafka that is not there (port 1), its one-line failure included."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "caravan", "dlq", "list"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    timed = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    said = [line for line in done.stderr.splitlines() if "|" not in line]
    assert done.returncode == 2 and "cannot reach Kafka at 127.0.0.1:1" in said[0], said
    assert "aiokafka" in timed  # what it reads Kafka with: the list below is no empty read
    heavy = ("sqlalchemy", "asyncpg", "faststream", "opentelemetry", "fastapi", "httpx")
    assert sorted({m.split(".")[0] for m in timed} & set(heavy)) == [], said


def test_resume_imports_no_client() -> None:
    """``caravan resume`` (and ``pause``, through the same helpers) reads and writes files in
    the checkout's ``.cache`` (caravan.checkout): it loaded caravan.system, and with it
    SQLAlchemy, Alembic and httpx, for a few of them. Here no ``caravan up`` runs, and
    ``resume`` says so."""
    done = heavy_imported(
        "import sys; from caravan import checkout, cli; "
        "checkout.running_up = lambda: False; sys.argv = ['caravan', 'resume', 'orders']\n"
        "try: cli.main()\n"
        "except SystemExit as e: print(e.code, end=' '); {heavy}"
    )
    assert "no `caravan up` runs" in done.stderr, done.stderr
    assert done.stdout.strip() == "1 []", done.stdout
