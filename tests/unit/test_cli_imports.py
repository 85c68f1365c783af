"""Importing the ``caravan`` command costs only what every command needs (Typer, Rich, the
settings): operators run it many times a day, and each run spent about two seconds
importing FastAPI (through shared.http), SQLAlchemy, aiokafka, httpx, Alembic and the
services' handlers before it did anything. A command imports what it uses when it runs."""

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
