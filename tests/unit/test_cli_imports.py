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


def test_the_command_line_imports_no_client_nor_service_before_a_command_runs() -> None:
    script = f"import caravan.cli, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_listing_dead_letters_imports_kafka_s_client_alone() -> None:
    """``caravan dlq list`` (and ``show``) read Kafka: not the audit trail (SQLAlchemy,
    asyncpg), the services' consumer (FastStream), tracing (OpenTelemetry) or HTTP, which
    redrive alone uses, or nothing does. Run to its end on a Kafka that is not there (port 1),
    its one-line failure included."""
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
